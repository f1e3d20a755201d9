"""Per-camera recipes: the product a camera inspects (model, thresholds) and its deadline.

A line switches products while it runs: each camera's recipe names the model its frames go to
and may override that model's thresholds and smallest defect area; the control API changes it
(``PUT /v1/cameras/{id}``) and the switch takes effect from the next batch on, and removes it
(``DELETE /v1/cameras/{id}``: the camera's frames then follow ``"*"``).

A line rejects a part at a fixed point after the camera: a verdict that arrives later cannot
act on it. Each camera may have a ``deadline_ms`` counted from the frame's ``captured_at``; a
result ready after it says ``"late": true`` and counts in ``inspector_results_late_total``, so
a line that falls behind is seen at once instead of latency growing silently.

Frames of several megapixels lose small defects when resized to the model's input: a recipe
may set a region of interest (``roi``, cropped before anything else) and ``tiling``, which cuts
the region into model-sized tiles at native resolution and stitches their maps back
(:mod:`inspector.model.tiling`; the daemon's side is :mod:`inspector.runtime.regions`).

A leaf of the runtime like :mod:`inspector.runtime.config` (which holds the recipes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from pydantic import Field, model_validator

from inspector.model.config import Frozen
from inspector.model.region_config import RoiConfig, TilingConfig
from inspector.runtime.ids import Id

__all__ = ["ANY_CAMERA", "NO_RECIPE", "CameraRecipe", "Recipes", "RoiConfig", "TilingConfig"]

#: The ``cameras`` key whose recipe applies to every camera without one of its own.
ANY_CAMERA = "*"


class CameraRecipe(Frozen):
    """What one camera's frames are held to.

    Attributes:
        model: Name of the loaded model the camera's frames go to (``None``: the daemon's
            ``model.checkpoint``); an id (:data:`inspector.runtime.ids.Id`).
        image_threshold: The model's image threshold for this camera, on the normalised 0..1
            scale (``None``: the model's, 0.5).
        pixel_threshold: Likewise for defect pixels.
        min_defect_area_px: Smallest region kept as a defect (``None``: ``postprocess``'s).
        deadline_ms: Longest time from capture (``captured_at``) to a verdict; later results
            carry ``"late": true``. ``None``: no deadline.
        roi: Inspect only this region of the frame (``None``: the whole frame).
        tiling: Cut the region into model-sized tiles at native resolution (``None``: resize
            the region to the model's input, as without a recipe).
        shadow_model: A loaded model that also scores the camera's frames, off the critical
            path, for comparison only (:mod:`inspector.runtime.shadow`); ``None``: no shadow.
        shadow_image_threshold: The shadow model's image threshold for this camera (``None``:
            its checkpoint's, 0.5); swapped with ``image_threshold`` on a promotion.
    """

    model: Id | None = None
    image_threshold: float | None = Field(default=None, ge=0, le=1)
    pixel_threshold: float | None = Field(default=None, ge=0, le=1)
    min_defect_area_px: int | None = Field(default=None, ge=1)
    deadline_ms: int | None = Field(default=None, gt=0)
    roi: RoiConfig | None = None
    tiling: TilingConfig | None = None
    shadow_model: Id | None = None
    shadow_image_threshold: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _roi_holds_a_tile(self) -> CameraRecipe:
        roi, tiling = self.roi, self.tiling
        if roi is not None and tiling is not None and min(roi.width, roi.height) < tiling.tile:
            raise ValueError(
                f"roi {roi.width}x{roi.height} px is smaller than one tile ({tiling.tile} px): "
                "enlarge the roi or drop tiling (the roi is then resized to the model's input)"
            )
        return self


#: The recipe of a camera that has none (no ``"*"`` either): the default model, no deadline.
NO_RECIPE = CameraRecipe()


class Recipes:
    """The cameras' recipes, changed while frames flow (thread-safe).

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
        self._lock = threading.Lock()
        self._wall_clock = wall_clock

    def recipe(self, camera_id: str) -> CameraRecipe:
        """The recipe frames of ``camera_id`` follow now."""
        with self._lock:
            return self._recipes.get(camera_id) or self._recipes.get(ANY_CAMERA) or NO_RECIPE

    def all(self) -> dict[str, CameraRecipe]:
        """Every recipe set, by camera id (``"*"`` included)."""
        with self._lock:
            return dict(self._recipes)

    def set(self, camera_id: str, recipe: CameraRecipe) -> None:
        """Give ``camera_id`` (or ``"*"``) a new recipe, from the next batch on."""
        with self._lock:
            self._recipes[camera_id] = recipe

    def remove(self, camera_id: str) -> CameraRecipe | None:
        """Drop the recipe of ``camera_id`` (or ``"*"``), from the next batch on.

        Its frames then follow ``"*"`` (or no recipe). Returns the removed recipe, ``None`` when
        the camera had none.
        """
        with self._lock:
            return self._recipes.pop(camera_id, None)

    def uses(self, model: str) -> list[str]:
        """Cameras whose recipe names ``model`` (as their model or their shadow)."""
        with self._lock:
            return sorted(c for c, r in self._recipes.items() if model in (r.model, r.shadow_model))

    def deadline_ms(self, camera_id: str) -> int | None:
        """The deadline of ``camera_id`` in milliseconds, ``None`` when it has none."""
        return self.recipe(camera_id).deadline_ms

    def deadline_at(self, camera_id: str, captured_at: str | None) -> float | None:
        """When a verdict on a frame of ``camera_id`` captured at ``captured_at`` is due.

        Args:
            camera_id: The frame's camera.
            captured_at: RFC 3339 capture time (as the sources store it), or ``None``.

        Returns:
            Seconds since the epoch; ``None`` when the camera has no deadline or the frame no
            (readable) capture time.
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
        return captured.timestamp() + deadline / 1000

    def late(self, camera_id: str, captured_at: str | None) -> bool | None:
        """Whether a verdict on a frame of ``camera_id`` captured at ``captured_at`` is late now.

        Args:
            camera_id: The frame's camera.
            captured_at: RFC 3339 capture time (as the sources store it), or ``None``.

        Returns:
            ``True``/``False``; ``None`` when the camera has no deadline or the frame no
            (readable) capture time: lateness is then unknown, not "on time".
        """
        due = self.deadline_at(camera_id, captured_at)
        return None if due is None else self._wall_clock() > due
