"""The demo's cameras: the regular line and the high-resolution camera, each at its own rate.

Each group of cameras is a :class:`~inspector.tools.demo.simulator.LineSimulator` publishing on
a thread of its own, so the high-resolution camera's slow rate does not hold back the regular
cameras. :class:`DemoCameras` answers for all of them: what a frame really showed (frame ids
carry the camera id, so they never collide between groups) and how many frames were sent.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from inspector.tools.demo.setup import HIRES_CAMERA, HIRES_PERIOD_S, HIRES_SHARE, DemoOptions
from inspector.tools.demo.simulator import LineImage, LineSimulator, Producer


def split_frames(frames: int | None, share: int) -> tuple[int | None, int | None]:
    """``frames`` as ``(regular, high-resolution)``: one in ``share`` high-resolution, at least 1.

    ``None`` (no limit) stays ``None`` on both sides; the two always add up to ``frames``.
    """
    if frames is None:
        return None, None
    hires = min(frames, max(1, frames // share))
    return frames - hires, hires


@dataclass
class CameraGroup:
    """Cameras that share one simulator and one publishing thread.

    Attributes:
        name: Thread name.
        simulator: Their frames.
        fps: Frames per second over the group (0: as fast as the producer takes them).
        frames: How many to send (``None``: until stopped).
        sent: How many were sent and acknowledged, once its thread has finished.
        thread: Its publishing thread, once started.
    """

    name: str
    simulator: LineSimulator
    fps: float
    frames: int | None
    sent: int | None = None
    thread: threading.Thread | None = field(default=None, repr=False)


class DemoCameras:
    """Every simulated camera of the demo, as one line.

    Args:
        groups: The groups; their camera ids must differ (frame ids start with them).
    """

    def __init__(self, groups: list[CameraGroup]) -> None:
        ids = [c for g in groups for c in g.simulator.cameras]
        if len(ids) != len(set(ids)):
            raise ValueError(f"camera ids must differ between groups, got {ids}")
        self.groups = groups

    @property
    def cameras(self) -> list[str]:
        """Every camera id, group by group."""
        return [c for g in self.groups for c in g.simulator.cameras]

    @property
    def count(self) -> int:
        """Frames made so far over all groups (sent or being sent)."""
        return sum(g.simulator.count for g in self.groups)

    def truth(self, frame_id: str) -> str | None:
        """What frame ``frame_id`` really showed, whichever group sent it (``None``: unknown)."""
        for group in self.groups:
            if (found := group.simulator.truth(frame_id)) is not None:
                return found
        return None

    def start(self, producer: Producer, topic: str, stop: threading.Event) -> None:
        """Start publishing every group on its own thread (until its frames or ``stop``)."""
        for group in self.groups:

            def publish(group: CameraGroup = group) -> None:
                group.sent = group.simulator.publish(
                    producer, topic, fps=group.fps, frames=group.frames, stop=stop
                )

            group.thread = threading.Thread(target=publish, name=group.name, daemon=True)
            group.thread.start()

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for each group's thread."""
        for group in self.groups:
            if group.thread is not None:
                group.thread.join(timeout=timeout)

    def sent(self) -> int:
        """Frames sent: each finished group's acknowledged count, else what it made so far."""
        return sum(g.simulator.count if g.sent is None else g.sent for g in self.groups)


def demo_cameras(
    opts: DemoOptions, images: list[LineImage], hires_images: list[LineImage]
) -> DemoCameras:
    """The regular cameras and, given a high-resolution line, its camera (``--frames`` split).

    Args:
        opts: Demo options (cameras, rate, defect rate, corrupt frames, frames, seed).
        images: The regular line's test images.
        hires_images: The high-resolution line's (``[]``: no such camera).
    """
    regular = [f"line1-cam{i + 1}" for i in range(opts.cameras)]
    simulator = LineSimulator(
        images, regular, defect_rate=opts.defect_rate, bad_every=opts.bad_every, seed=opts.seed
    )
    if not hires_images:
        return DemoCameras([CameraGroup("cameras", simulator, opts.fps, opts.frames)])
    n_regular, n_hires = split_frames(opts.frames, HIRES_SHARE)
    # Its own part sequence (seed + 1), and no corrupt frames: the regular cameras show those.
    hires = LineSimulator(
        hires_images, [HIRES_CAMERA], defect_rate=opts.defect_rate, seed=opts.seed + 1
    )
    # At its own slow rate, unless the whole line runs as fast as it can (--fps 0).
    hires_fps = 0.0 if opts.fps == 0 else 1.0 / HIRES_PERIOD_S
    return DemoCameras(
        [
            CameraGroup("cameras", simulator, opts.fps, n_regular),
            CameraGroup("camera-hires", hires, hires_fps, n_hires),
        ]
    )
