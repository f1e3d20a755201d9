"""Per-camera recipes: what each camera's frames are held to (today: a verdict deadline).

A line rejects a part at a fixed point after the camera: a verdict that arrives later cannot
act on it. Each camera may have a ``deadline_ms`` counted from the frame's ``captured_at``; a
result ready after it says ``"late": true`` and counts in ``inspector_results_late_total``, so
a line that falls behind is seen at once instead of latency growing silently.

A leaf of the runtime like :mod:`inspector.runtime.config` (which holds the recipes).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from pydantic import Field

from inspector.model.config import Frozen

#: The ``cameras`` key whose recipe applies to every camera without one of its own.
ANY_CAMERA = "*"


class CameraRecipe(Frozen):
    """What one camera's frames are held to.

    Attributes:
        deadline_ms: Longest time from capture (``captured_at``) to a verdict; later results
            carry ``"late": true``. ``None``: no deadline.
    """

    deadline_ms: int | None = Field(default=None, gt=0)


class Deadlines:
    """Decides whether a result is late, from its camera's recipe and its capture time.

    Args:
        recipes: ``{camera_id: recipe}``; the key ``"*"`` applies to cameras without a recipe.
        wall_clock: Seconds since the epoch (``captured_at`` is wall time, not monotonic).
    """

    def __init__(
        self,
        recipes: Mapping[str, CameraRecipe],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._recipes = dict(recipes)
        self._wall_clock = wall_clock

    def deadline_ms(self, camera_id: str) -> int | None:
        """The deadline of ``camera_id`` in milliseconds, ``None`` when it has none."""
        recipe = self._recipes.get(camera_id) or self._recipes.get(ANY_CAMERA)
        return None if recipe is None else recipe.deadline_ms

    def late(self, camera_id: str, captured_at: str | None) -> bool | None:
        """Whether a verdict on a frame of ``camera_id`` captured at ``captured_at`` is late now.

        Args:
            camera_id: The frame's camera.
            captured_at: RFC 3339 capture time (as the sources store it), or ``None``.

        Returns:
            ``True``/``False``; ``None`` when the camera has no deadline or the frame no
            (readable) capture time: lateness is then unknown, not "on time".
        """
        deadline = self.deadline_ms(camera_id)
        if deadline is None or captured_at is None:
            return None
        try:
            captured = datetime.fromisoformat(captured_at)
        except ValueError:  # sources validate captured_at; a bad one must not fail the frame
            return None
        if captured.tzinfo is None:  # no zone given: UTC (the README's result format says so)
            captured = captured.replace(tzinfo=UTC)
        age_ms = (self._wall_clock() - captured.timestamp()) * 1000
        return age_ms > deadline
