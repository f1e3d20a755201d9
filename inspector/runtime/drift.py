"""Per-camera score drift against the served model's calibration (``inspector_score_drift``).

Each camera keeps the raw image scores of its last :data:`WINDOW` frames scored by the same
model; every :data:`EVERY` frames the population stability index of that window against the
model's calibration quintiles (:mod:`inspector.model.drift`) is recomputed. All frames count, not
only the good verdicts: a lighting change that pushes good parts over the threshold would
otherwise hide itself, and on a line the defects are a small share. A model change starts the
window again (its scores are on another scale). A model whose checkpoint has no quintiles (made
before they were stored) has no drift figure: ``None``.

It sets the ``inspector_score_drift{camera}`` gauge it is given (and removes a camera's
sample when its model has no quintiles). Called from the postprocess thread; reads take the lock.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import Gauge

from inspector.model.drift import population_stability

#: Frames per camera the index is computed over: enough for five bins (50 a bin on average),
#: short enough that a change shows within a few minutes at a few frames per second.
WINDOW = 250
#: Recompute after this many new frames (the index costs a sort-free pass over the window).
EVERY = 25
#: Fewer frames than this since the model changed: no figure yet (too noisy to alarm on).
MIN_FRAMES = 100


@dataclass
class _Camera:
    model: str
    edges: tuple[float, ...]
    scores: deque[float] = field(default_factory=lambda: deque(maxlen=WINDOW))
    since: int = 0
    value: float | None = None


class ScoreDrift:
    """The drift figure of each camera (see the module)."""

    def __init__(self, gauge: Gauge) -> None:
        self._gauge = gauge
        self._lock = threading.Lock()
        self._cameras: dict[str, _Camera] = {}

    def observe(
        self, camera: str, model: str, edges: Sequence[float] | None, raw_score: float
    ) -> float | None:
        """Add one frame's raw score; the camera's current index (``None``: none yet).

        Args:
            camera: The frame's camera (a bounded label value: the caller's).
            model: The id of the model that scored it (a change restarts the window).
            edges: That model's calibration quintiles, or ``None`` when it has none.
            raw_score: The frame's raw image score.
        """
        with self._lock:
            state = self._cameras.get(camera)
            if edges is None or state is None or state.model != model:
                if state is not None and state.value is not None:
                    self._gauge.remove(camera)
                if edges is None:
                    self._cameras.pop(camera, None)
                    return None
                state = self._cameras[camera] = _Camera(model, tuple(edges))
            state.scores.append(raw_score)
            state.since += 1
            if state.since >= MIN_FRAMES and state.since % EVERY == 0:
                state.value = population_stability(state.edges, state.scores)
                self._gauge.labels(camera=camera).set(state.value)
            return state.value

    def value(self, camera: str) -> float | None:
        """The camera's last computed index, or ``None``."""
        with self._lock:
            state = self._cameras.get(camera)
            return None if state is None else state.value
