"""The last verdict of each camera and its recent rate: what the operator console's tiles show.

A sink that keeps a few numbers per camera in memory: the last result (verdict, score,
threshold, model, late) and per-second counts of frames and late verdicts over the last
:data:`WINDOW_S` seconds. It confirms every frame at once and holds no frame, so it costs the
pipeline a dictionary update per result. Cameras are keyed by their bounded metric label
(:meth:`~inspector.runtime.metrics.Metrics.camera`), so producers' camera ids cannot grow it
past the metrics' own bound (cameras beyond it share the ``other`` entry).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from inspector.runtime.records import Inspection
from inspector.runtime.sinks.base import DoneFn, Sink

#: Seconds over which frames per second and the late share are counted.
WINDOW_S = 10
#: Entries kept at most, whatever the label function returns (a second bound).
MAX_CAMERAS = 256


@dataclass(frozen=True)
class CameraActivity:
    """One camera's last result and its recent rate.

    Attributes:
        camera: The camera's bounded label (its id, or ``other``).
        frame_id: The last result's frame.
        is_anomalous: Its verdict.
        score: Its normalised score.
        threshold: The image threshold it was judged against (normalised).
        model: The model that judged it.
        processed_at: When its verdict was made (RFC 3339).
        late: Whether it was late (``None``: no deadline or no capture time).
        age_s: Seconds since it was delivered here.
        frames_per_s: Results per second over the last :data:`WINDOW_S` seconds.
        late_share: Share of those results that were late, among those with a deadline
            (``None``: none had one).
    """

    camera: str
    frame_id: str
    is_anomalous: bool
    score: float
    threshold: float
    model: str
    processed_at: str
    late: bool | None
    age_s: float
    frames_per_s: float
    late_share: float | None


@dataclass(frozen=True)
class _Last:
    """What is kept of a camera's last result: a few scalars, never its frame or mask."""

    frame_id: str
    is_anomalous: bool
    score: float
    threshold: float
    model: str
    processed_at: str
    late: bool | None


class _Camera:
    """Mutable per-camera state (only under :class:`LatestResults`'s lock)."""

    def __init__(self, last: _Last, now: float) -> None:
        self.last = last
        self.at = now
        self.first = now
        # Per whole second: [frames, frames with a lateness verdict, late frames].
        self.seconds: dict[int, list[int]] = {}


class LatestResults(Sink):
    """Keeps each camera's last result and recent counts (see the module). Thread-safe.

    Args:
        label: Maps a camera id to its bounded label (``Metrics.camera``).
        clock: Monotonic clock.
    """

    name = "latest"

    def __init__(
        self, label: Callable[[str], str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._label = label
        self._clock = clock
        self._lock = threading.Lock()
        self._cameras: dict[str, _Camera] = {}

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Confirm at once, then note the result."""
        done(None)
        message = inspection.message
        last = _Last(
            frame_id=message.frame_id,
            is_anomalous=message.is_anomalous,
            score=message.score,
            threshold=message.threshold.image,
            model=message.model.name,
            processed_at=message.processed_at,
            late=message.late,
        )
        key = self._label(message.camera_id)
        now = self._clock()
        second = int(now)
        with self._lock:
            camera = self._cameras.get(key)
            if camera is None:
                if len(self._cameras) >= MAX_CAMERAS:
                    return
                camera = self._cameras[key] = _Camera(last, now)
            camera.last, camera.at = last, now
            counts = camera.seconds.setdefault(second, [0, 0, 0])
            counts[0] += 1
            if message.late is not None:
                counts[1] += 1
                counts[2] += int(message.late)
            for old in [s for s in camera.seconds if s <= second - WINDOW_S]:
                del camera.seconds[old]

    def cameras(self) -> list[CameraActivity]:
        """Every camera seen, by label."""
        now = self._clock()
        with self._lock:
            return [self._activity(k, c, now) for k, c in sorted(self._cameras.items())]

    @staticmethod
    def _activity(key: str, camera: _Camera, now: float) -> CameraActivity:
        since = int(now) - WINDOW_S
        recent = [c for s, c in camera.seconds.items() if s > since]
        frames = sum(c[0] for c in recent)
        judged = sum(c[1] for c in recent)
        # A camera seen for less than the window is divided by the time it was seen.
        span = min(float(WINDOW_S), max(1.0, now - camera.first))
        last = camera.last
        return CameraActivity(
            camera=key,
            frame_id=last.frame_id,
            is_anomalous=last.is_anomalous,
            score=last.score,
            threshold=last.threshold,
            model=last.model,
            processed_at=last.processed_at,
            late=last.late,
            age_s=max(0.0, now - camera.at),
            frames_per_s=frames / span,
            late_share=sum(c[2] for c in recent) / judged if judged else None,
        )


__all__ = ["MAX_CAMERAS", "WINDOW_S", "CameraActivity", "LatestResults"]
