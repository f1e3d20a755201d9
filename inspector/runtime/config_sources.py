"""Settings of the sources: the ``sources`` list of the daemon's configuration.

A leaf like :mod:`inspector.runtime.config`, which re-exports these names (import them from
there); the GenICam source's settings are in :mod:`inspector.runtime.config_genicam`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from inspector.model.config import Frozen
from inspector.runtime.config_genicam import GenicamSourceConfig
from inspector.runtime.ids import Id

#: Default of ``sources[*].max_pixels``: 50 MP, above any industrial camera's frame
#: (same value as :data:`inspector.imaging.DEFAULT_MAX_PIXELS`).
DEFAULT_MAX_PIXELS = 50_000_000


class KafkaSourceConfig(Frozen):
    """Frames from the Kafka frames topic (connection and topic in ``kafka``).

    Attributes:
        type: Discriminator.
        topics: Topics to read; default: ``kafka.frames_topic``.
        decode_threads: Threads decoding images (OpenCV releases the GIL).
        max_poll_records: Records fetched per poll.
        decode_device: ``cuda`` decodes JPEG frames on the GPU (nvJPEG through torchvision),
            each poll's JPEG frames as one batch, so pixels go straight to the model without a
            host round trip; other formats, and JPEGs nvJPEG refuses, are decoded by OpenCV.
        fetch_max_wait_ms: Longest a fetch may wait at the broker for new frames (Kafka's
            default). Apache Kafka answers as soon as a frame arrives, so this costs no latency
            there; lower values only add empty fetches, and CPU, on an idle topic. Brokers
            that hold every fetch to its end (Tansu, the embedded test broker) add up to this
            much latency per frame: use a low value on them.
        max_pixels: Largest frame decoded, in pixels, read from the image header before
            decoding; larger frames are dead letters ``too_large`` (a small compressed file
            can declare dimensions that take hundreds of megabytes once decoded).
        max_poll_decoded_bytes: Decoded bytes one poll may hold; the records beyond it are
            fetched again by the next poll (at least one record per poll).
    """

    type: Literal["kafka"] = "kafka"
    topics: tuple[str, ...] | None = None
    decode_threads: int = Field(default=2, ge=1)
    max_poll_records: int = Field(default=64, ge=1)
    decode_device: Literal["cpu", "cuda"] = "cpu"
    fetch_max_wait_ms: int = Field(default=500, ge=0, le=10_000)
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)
    max_poll_decoded_bytes: int = Field(default=512 * 1024 * 1024, ge=1)


class CameraSourceConfig(Frozen):
    """One OpenCV camera.

    Attributes:
        type: Discriminator.
        camera_id: Id in results and metrics, and the source's id in the control API (the id
            rule of :mod:`inspector.runtime.ids`).
        uri: Device index (``"0"``), RTSP/HTTP URL, GStreamer pipeline or video file.
        backend: OpenCV capture backend.
        fps: Target frames per second taken from the stream (``None``: as fast as it comes).
        live: A live stream: keep only the newest frame and count stale drops. ``False`` for
            files that must be read completely.
        reconnect_initial_s: First reconnect delay after the stream breaks.
        reconnect_max_s: Longest reconnect delay (exponential backoff).
        loop: Restart a video file at its end (simulated cameras).
    """

    type: Literal["camera"] = "camera"
    camera_id: Id
    uri: str
    backend: Literal["auto", "ffmpeg", "gstreamer", "v4l2"] = "auto"
    fps: float | None = Field(default=None, gt=0)
    live: bool = True
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    loop: bool = False


class DirectorySourceConfig(Frozen):
    """Replay of recorded frames from files.

    Attributes:
        type: Discriminator.
        camera_id: Id in results and metrics, and the source's id in the control API.
        path: Folder or glob pattern (``frames/*.png``).
        fps: Replay rate (``None``: as fast as the pipeline takes them).
        loop: Start again after the last file.
        max_pixels: Largest image decoded, in pixels, read from the header before decoding;
            larger files are dead letters ``too_large``.
    """

    type: Literal["directory"] = "directory"
    camera_id: Id = "replay"
    path: str
    fps: float | None = Field(default=None, gt=0)
    loop: bool = False
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, ge=1)


SourceConfig = Annotated[
    KafkaSourceConfig | CameraSourceConfig | DirectorySourceConfig | GenicamSourceConfig,
    Field(discriminator="type"),
]
