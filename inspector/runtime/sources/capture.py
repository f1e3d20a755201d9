"""The OpenCV capture interface the camera source uses, and what camera readers hand over."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np

from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Frame, FrameMeta

#: OpenCV capture API per configured backend.
BACKENDS: dict[str, int] = {
    "auto": cv2.CAP_ANY,
    "ffmpeg": cv2.CAP_FFMPEG,
    "gstreamer": cv2.CAP_GSTREAMER,
    "v4l2": cv2.CAP_V4L2,
}


class CaptureLike(Protocol):
    """The part of ``cv2.VideoCapture`` the source uses (fakes implement just this)."""

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        """Whether the device or stream is open."""

    def read(self) -> tuple[bool, Any]:
        """Grab and decode the next frame."""

    def grab(self) -> bool:
        """Take the next frame from the stream without converting it."""

    def retrieve(self) -> tuple[bool, Any]:
        """Convert the grabbed frame to a BGR array."""

    def get(self, prop_id: int) -> float:
        """A capture property (``cv2.CAP_PROP_*``)."""

    def release(self) -> None:
        """Close the device or stream."""


#: Opens a capture from the parsed ``uri`` (device index or string) and a ``cv2.CAP_*`` API.
CaptureFactory = Callable[[int | str, int], CaptureLike]


def parse_uri(uri: str) -> int | str:
    """A digit string is a device index (``"0"`` -> ``/dev/video0``); anything else a string."""
    stripped = uri.strip()
    return int(stripped) if stripped.isdigit() else uri


def open_cv2(source: int | str, api: int) -> CaptureLike:
    """Open a real ``cv2.VideoCapture``."""
    capture: CaptureLike = cv2.VideoCapture(source, api)
    return capture


def as_bgr(image: Any) -> np.ndarray | None:
    """The image as BGR uint8 ``(h, w, 3)``, or ``None`` when it is not a usable frame."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        return None
    if image.ndim == 2:
        return np.asarray(cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    return None


@dataclass(frozen=True)
class Captured:
    """One frame a camera's reader thread took, waiting for the source's :meth:`poll`.

    Attributes:
        seq: Frames read by this source so far (ids stay unique across reconnects).
        image: BGR uint8 ``(h, w, 3)``.
        captured_at: RFC 3339 capture time.
        received_monotonic: ``time.monotonic()`` when it was read.
        decode_ms: Time spent decoding or converting it.
    """

    seq: int
    image: np.ndarray
    captured_at: str
    received_monotonic: float
    decode_ms: float

    def to_frame(self, camera_id: str) -> Frame:
        """The pipeline's frame, with id ``<camera_id>:<seq>``."""
        height, width = self.image.shape[:2]
        meta = FrameMeta(
            frame_id=f"{camera_id}:{self.seq}",
            camera_id=camera_id,
            image_size=(height, width),
            captured_at=self.captured_at,
            received_monotonic=self.received_monotonic,
            decode_ms=self.decode_ms,
        )
        return Frame(meta=meta, image=self.image)


@dataclass(frozen=True)
class CameraSeries:
    """The metric series every camera source reports to, bound to its camera label."""

    up: Any
    reconnects: Any
    stale: Any
    last_frame: Any
    received: Any
    decode: Any

    @classmethod
    def bind(cls, metrics: Metrics, camera_id: str, source: str) -> CameraSeries:
        """The series of ``camera_id`` (a bounded label) for source type ``source``."""
        cam = metrics.camera(camera_id)
        return cls(
            up=metrics.camera_up.labels(camera=cam),
            reconnects=metrics.camera_reconnects.labels(camera=cam),
            stale=metrics.frames_dropped.labels(camera=cam, reason="stale"),
            last_frame=metrics.camera_last_frame.labels(camera=cam),
            received=metrics.frames_received.labels(source=source),
            decode=metrics.stage_seconds.labels(stage="decode"),
        )
