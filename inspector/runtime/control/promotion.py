"""Promoting a camera's shadow model to served, with the evidence, and rolling it back.

``POST /v1/cameras/{id}/promote`` swaps the recipe's ``model`` and ``shadow_model`` (and their
image thresholds): the shadow serves from the next batch, the model it replaces becomes the
shadow, so a rollback (``POST /v1/cameras/{id}/rollback``) is the same swap again and the
comparison goes on in the other direction meanwhile. A swap is a recipe change, so it takes
effect between batches like ``PUT /v1/cameras/{id}``: a batch already routed finishes with the
model it was routed to, and every result names the model that served it.

The answer and the log carry the evidence since the pair started
(:class:`~inspector.runtime.shadow.Evidence`: frames compared, agreement) and, with retention
on, what the operators' labels say of each model on the frames both scored
(:class:`LabelledEvidence`, from the retained result messages: read only).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from inspector.messages import ResultMessage
from inspector.runtime.control.errors import NoShadowError, RecipeError, UnknownCameraError
from inspector.runtime.models import ModelSet, UnknownModelError
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.retention.reader import RetentionIndex
from inspector.runtime.shadow import Evidence, ShadowBook

log = logging.getLogger(__name__)

#: The open retention index, ``None`` when retention is off (or not open yet).
RetentionLookup = Callable[[], RetentionIndex | None]
#: Retained result messages read for the labelled evidence at most (the newest are kept).
_MAX_LABELLED = 5000


class LabelledEvidence(BaseModel):
    """What the operators' labels say of both models, on retained frames both scored.

    Attributes:
        frames: Labelled frames both models scored (since the pair started).
        good: Of them, labelled ``false_alarm`` (good parts).
        defective: Of them, labelled ``defect`` or ``missed_defect``.
        served_false_alarms: Good frames the served model flagged.
        shadow_false_alarms: Good frames the shadow flagged.
        served_catches: Defective frames the served model flagged.
        shadow_catches: Defective frames the shadow flagged.
    """

    model_config = ConfigDict(frozen=True)

    frames: int = Field(ge=0)
    good: int = Field(ge=0)
    defective: int = Field(ge=0)
    served_false_alarms: int = Field(ge=0)
    shadow_false_alarms: int = Field(ge=0)
    served_catches: int = Field(ge=0)
    shadow_catches: int = Field(ge=0)


class Promotion(BaseModel):
    """The answer of a promotion or a rollback.

    Attributes:
        camera_id: The camera.
        served: The model its frames go to from the next batch.
        shadow: Its shadow from now on (the model it replaced).
        recipe: The camera's recipe now.
        evidence: The comparison of the pair before the swap, since it started.
        labelled: The labels' verdict on that pair; ``None``: retention is off.
    """

    model_config = ConfigDict(frozen=True)

    camera_id: str
    served: str
    shadow: str
    recipe: CameraRecipe
    evidence: Evidence
    labelled: LabelledEvidence | None


class ShadowControl:
    """Promotes and rolls back cameras' shadow models (thread-safe through the recipes).

    Args:
        models: The served models.
        recipes: The cameras' recipes.
        book: Each camera's served-versus-shadow comparison.
        retention: The retention index, for the labelled evidence.
        promoted: Cameras whose recipe is a promotion a rollback may undo (the state file's).
    """

    def __init__(
        self,
        models: ModelSet,
        recipes: Recipes,
        book: ShadowBook,
        retention: RetentionLookup,
        promoted: tuple[str, ...] = (),
    ) -> None:
        self.models = models
        self.recipes = recipes
        self.book = book
        self._retention = retention
        self.promoted: set[str] = set(promoted)

    def check(self, camera_id: str, recipe: CameraRecipe) -> None:
        """Refuse a recipe whose shadow is not served or cannot take its tiles.

        Raises:
            UnknownModelError: The shadow model is not served.
            ConfigError: Its input size is not the recipe's ``tiling.tile``.
        """
        if recipe.shadow_model is not None:
            self.models.get(recipe.shadow_model)
            shadow = recipe.model_copy(update={"model": recipe.shadow_model})
            self.models.check_recipe(camera_id, shadow)

    def forget(self, camera_id: str) -> None:
        """A recipe set or removed otherwise: there is no promotion to roll back any more."""
        self.promoted.discard(camera_id)

    def swap(self, camera_id: str, who: str, *, rollback: bool) -> Promotion:
        """Swap the camera's served and shadow models (see the module doc); log the evidence.

        Raises:
            UnknownCameraError: The camera has no recipe of its own.
            NoShadowError: Its recipe has no shadow, or (rollback) it has no promotion.
            RecipeError: One of the two models is no longer served.
        """
        recipe = self.recipes.all().get(camera_id)
        if recipe is None:
            raise UnknownCameraError(
                f"camera {camera_id!r} has no recipe (GET /v1/cameras lists those that have)"
            )
        if recipe.shadow_model is None:
            raise NoShadowError(
                f"camera {camera_id!r} has no shadow_model in its recipe: set one first "
                "(PUT /v1/cameras/{id})"
            )
        if rollback and camera_id not in self.promoted:
            raise NoShadowError(f"camera {camera_id!r} has no promotion to roll back")
        try:
            served = self.models.get(recipe.model).name
            shadow = self.models.get(recipe.shadow_model).name
        except UnknownModelError as exc:
            raise RecipeError(f"{exc}: load it first (POST /v1/models)") from exc
        evidence = self.book.evidence(camera_id, served, shadow)
        labelled = self._labelled(camera_id, evidence)
        swapped = recipe.model_copy(
            update={
                "model": shadow,
                "shadow_model": served,
                "image_threshold": recipe.shadow_image_threshold,
                "shadow_image_threshold": recipe.image_threshold,
            }
        )
        self.recipes.set(camera_id, swapped)
        self.book.restart(camera_id, shadow, served)
        if rollback:
            self.promoted.discard(camera_id)
        else:
            self.promoted.add(camera_id)
        log.info(
            "control: %s %s camera %s: %s serves, %s shadows; evidence: %s; labelled: %s",
            who,
            "rolled back" if rollback else "promoted the shadow of",
            camera_id,
            shadow,
            served,
            evidence.model_dump_json(),
            "retention off" if labelled is None else labelled.model_dump_json(),
        )
        return Promotion(
            camera_id=camera_id,
            served=shadow,
            shadow=served,
            recipe=swapped,
            evidence=evidence,
            labelled=labelled,
        )

    def _labelled(self, camera_id: str, evidence: Evidence) -> LabelledEvidence | None:
        """The labels' verdict on the pair, from the retained results since it started."""
        index = self._retention()
        if index is None:
            return None
        counts = dict.fromkeys(LabelledEvidence.model_fields, 0)
        frames = [f for f in index.frames(camera_id, evidence.since) if f.label is not None]
        for frame in frames[-_MAX_LABELLED:]:
            path = index.file_path(frame.result_file)
            if path is None:
                continue
            try:
                message = ResultMessage.from_json(path.read_bytes())
            except (OSError, ValueError):  # evicted meanwhile, or a file that is not ours
                continue
            shadow = message.shadow
            if shadow is None or (message.model.name, shadow.model) != (
                evidence.served,
                evidence.shadow,
            ):
                continue
            good = frame.label == "false_alarm"
            counts["frames"] += 1
            counts["good" if good else "defective"] += 1
            kind = "false_alarms" if good else "catches"
            counts[f"served_{kind}"] += message.is_anomalous
            counts[f"shadow_{kind}"] += shadow.is_anomalous
        return LabelledEvidence(**counts)
