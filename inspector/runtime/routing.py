"""Routing a batch to models: each frame goes to the model its camera's recipe names.

A batch never mixes models; frames whose recipe has ``roi`` or ``tiling`` get a view each, and
a frame that cannot go to a model (its model gone, its region outside the frame) is returned
with the dead letter's ``error_type``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch

from inspector.dead_letters import ErrorType
from inspector.errors import RegionError
from inspector.runtime.ids import for_log
from inspector.runtime.models import ModelSet, ServedModel, UnknownModelError
from inspector.runtime.postprocess import Postprocessor
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.records import Frame
from inspector.runtime.regions import FrameView, image_size_of, plan_view

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Routed:
    """Frames of one batch that go to one model, each with the postprocessor of its recipe.

    Attributes:
        model: The model.
        frames: The frames.
        postprocessors: Each frame's postprocessor.
        views: Each frame's region of interest and tiles, for frames of cameras whose recipe
            has ``roi`` or ``tiling``; ``None`` for a group of whole frames (the plain path).
        maps: Whether any map may be needed (``False`` for a shadow model: scores only, so
            no map leaves the device).
    """

    model: ServedModel
    frames: list[Frame]
    postprocessors: list[Postprocessor]
    views: list[FrameView] | None = None
    maps: bool = True

    def map_filter(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """Which frames need their map, each by its own recipe's image threshold."""
        if not self.maps:
            return lambda scores: torch.zeros(len(scores), dtype=torch.bool)
        posts = self.postprocessors
        if all(p is posts[0] for p in posts):
            return posts[0].needs_map
        return lambda scores: torch.cat(
            [p.needs_map(scores[i : i + 1]) for i, p in enumerate(posts)]
        )


@dataclass(frozen=True)
class Unroutable:
    """A frame that cannot go to a model, and why (its dead letter's ``error_type``).

    Attributes:
        frame: The frame.
        kind: ``unknown_model``, ``roi_outside_frame``, ``tiling_mismatch`` or (a bug)
            ``inference_error``.
        error: What went wrong (the dead letter's reason).
    """

    frame: Frame
    kind: ErrorType
    error: Exception


class ModelRouter:
    """Splits a batch by the model each frame's camera recipe names (a batch never mixes).

    Args:
        models: The served models.
        recipes: The cameras' recipes, read per batch: a switch applies from the next batch.
    """

    #: Recipe postprocessors kept (a few per camera at most in practice).
    _CACHE = 256

    def __init__(self, models: ModelSet, recipes: Recipes) -> None:
        self.models = models
        self.recipes = recipes
        self._posts: dict[tuple[str, str, CameraRecipe], Postprocessor] = {}

    def route(self, batch: list[Frame]) -> tuple[list[Routed], list[Unroutable]]:
        """The batch by model, in first-seen order, and the frames that cannot go to one.

        Frames whose recipe has ``roi`` or ``tiling`` form groups of their own (with a view
        each): the plain path's groups stay exactly as they were. A frame whose model is gone
        or whose ROI does not fit it is returned as :class:`Unroutable`.
        """
        groups: dict[tuple[str, bool], Routed] = {}
        failed: list[Unroutable] = []
        for frame in batch:
            recipe = self.recipes.recipe(frame.meta.camera_id)
            try:
                model = self.models.get(recipe.model)
            except UnknownModelError as exc:
                failed.append(Unroutable(frame, ErrorType.UNKNOWN_MODEL, exc))
                continue
            try:
                view = plan_view(recipe, image_size_of(frame.image), model.worker.image_size)
            except RegionError as exc:
                failed.append(Unroutable(frame, exc.kind, exc))
                continue
            except Exception as exc:  # a bug must fail this frame, never the inference thread
                log.exception("planning the region of %s failed", for_log(frame.meta.frame_id))
                failed.append(Unroutable(frame, ErrorType.INFERENCE_ERROR, exc))
                continue
            key = (model.name, view is not None)
            group = groups.get(key)
            if group is None:
                group = groups[key] = Routed(model, [], [], None if view is None else [])
            group.frames.append(frame)
            group.postprocessors.append(self._postprocessor(model, recipe))
            if group.views is not None and view is not None:
                group.views.append(view)
        return list(groups.values()), failed

    def _postprocessor(self, model: ServedModel, recipe: CameraRecipe) -> Postprocessor:
        overrides = recipe.image_threshold, recipe.pixel_threshold, recipe.min_defect_area_px
        if all(v is None for v in overrides):
            return model.postprocessor
        key = (model.name, model.sha256, recipe)
        found = self._posts.get(key)
        if found is None:
            if len(self._posts) >= self._CACHE:
                self._posts.clear()
            found = self._posts[key] = model.postprocessor.with_recipe(
                recipe.image_threshold, recipe.pixel_threshold, recipe.min_defect_area_px
            )
        return found
