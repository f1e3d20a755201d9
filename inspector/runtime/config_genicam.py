"""Settings of a GenICam camera source (GigE Vision, USB3 Vision through Aravis).

A leaf like :mod:`inspector.runtime.config`, which puts :class:`GenicamSourceConfig` into the
``sources`` list.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from inspector.model.config import Frozen
from inspector.runtime.ids import Id

#: Pixel formats the source converts (GenICam names, PFNC).
PixelFormat = Literal["Mono8", "Mono16", "BayerRG8", "BayerBG8", "BayerGB8", "BayerGR8", "RGB8"]


class GenicamTrigger(Frozen):
    """When the camera takes a frame.

    Attributes:
        mode: ``free_run`` at ``frame_rate``; ``software``: one frame per trigger (the control
            API's ``POST /v1/sources/{id}/trigger`` or a PLC calling it); ``line``: one frame
            per edge on a hardware input line.
        line: The input line of ``line`` mode (GenICam ``TriggerSource``, e.g. ``Line0``).
        edge: The edge of ``line`` mode (GenICam ``TriggerActivation``).
    """

    mode: Literal["free_run", "software", "line"] = "free_run"
    line: str = "Line0"
    edge: Literal["rising", "falling"] = "rising"


class GenicamSourceConfig(Frozen):
    """One GenICam camera.

    Attributes:
        type: Discriminator.
        camera_id: Id in results and metrics.
        device: The camera: its Aravis id (``inspector cameras`` lists them), serial number or
            IP address; ``None``: the first camera found.
        pixel_format: Set at start (``None``: as the camera is); frames are converted to RGB
            once, before batching.
        region: ``[x, y, width, height]`` on the sensor (``None``: as the camera is).
        exposure_us: Exposure time in microseconds.
        gain: Analog gain, in the camera's unit (usually dB).
        frame_rate: Frames per second in free run.
        trigger: When the camera takes a frame.
        buffers: Frame buffers queued for the stream (more survive longer hiccups).
        frame_timeout_ms: In free run, no complete frame for this long means the camera is
            gone: it is reopened (trigger modes check the connection instead).
        reconnect_initial_s: First reconnect delay.
        reconnect_max_s: Longest reconnect delay (exponential backoff).
        packet_socket: Aravis' fast packet-socket receive on real network interfaces; always
            off for a camera on loopback, where it sees no packets.
    """

    type: Literal["genicam"] = "genicam"
    camera_id: Id  # the one id rule: addressed as /v1/sources/{camera_id}
    device: str | None = None
    pixel_format: PixelFormat | None = None
    region: tuple[int, int, int, int] | None = None
    exposure_us: float | None = Field(default=None, gt=0)
    gain: float | None = Field(default=None, ge=0)
    frame_rate: float | None = Field(default=None, gt=0)
    trigger: GenicamTrigger = GenicamTrigger()
    buffers: int = Field(default=8, ge=2, le=256)
    frame_timeout_ms: int = Field(default=3000, ge=100)
    reconnect_initial_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    packet_socket: bool = True
