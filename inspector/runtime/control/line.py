"""What the control API can change in a running daemon: sources, models and recipes.

:class:`LineControl` is the one place that turns an API request into a change of the running
pipeline: it builds and sets up a new source on the request's thread (so a camera that cannot
open is a 422 with the reason, and the daemon keeps running), starts it beside the others,
pauses, resumes and removes them; it loads and warms models beside the served ones and sets
the cameras' recipes (a switch applies from the next batch). Every change is logged (who and
what, never a credential), counted in ``inspector_control_changes_total`` and saved to the
state file.

Each refusal is an exception of its own kind (:mod:`inspector.runtime.control.errors`), so
that :mod:`inspector.runtime.control.api_errors` maps kinds to HTTP statuses in one table.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from inspector.errors import ConfigError, InspectorError, WaitAbandonedError
from inspector.runtime.config import KafkaConfig, SourceConfig
from inspector.runtime.control.errors import (
    ModelSetupError,
    NoShadowError,
    RecipeError,
    ShuttingDownError,
    SourceSetupError,
    UnknownCameraError,
)
from inspector.runtime.control.promotion import Promotion, RetentionLookup, ShadowControl

# Re-exported: the API and its callers name them as the control's.
from inspector.runtime.control.requests import ModelState as ModelState
from inspector.runtime.control.requests import NewModel as NewModel
from inspector.runtime.control.requests import SourceState as SourceState
from inspector.runtime.control.state import RuntimeState, SavedModel, save_state
from inspector.runtime.intake import DuplicateSourceError, Intake, SourceSlot, UnknownSourceError
from inspector.runtime.intake_states import SourcePhase
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelInUseError, ModelSet, ServedModel, UnknownModelError
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.shadow import ShadowBook
from inspector.runtime.sources import build_source, source_id
from inspector.runtime.sources.base import Source

log = logging.getLogger(__name__)

#: Actions of ``inspector_control_changes_total`` (a fixed set: bounded labels).
Action = Literal[
    "add_source",
    "remove_source",
    "pause_source",
    "resume_source",
    "add_model",
    "remove_model",
    "set_recipe",
    "remove_recipe",
    "promote",
    "rollback",
]
#: Loads, checks and warms a checkpoint under a name.
ModelLoader = Callable[[str, Path], ServedModel]
#: Why a change is refused during shutdown.
_STOPPING = "the daemon is shutting down (SIGTERM) and takes no changes"


class LineControl:
    """Changes the running line for the control API (thread-safe).

    Args:
        intake: The running pipeline's sources.
        models: The served models.
        recipes: The cameras' recipes.
        kafka: Broker settings for Kafka sources added later.
        metrics: ``inspector_control_changes_total``.
        configs: The settings of the sources running at start, by id.
        load_model: Loads a checkpoint as the daemon serves it (``POST /v1/models``): the
            daemon's is :func:`~inspector.runtime.models.load_served_model`, whose torch work
            runs on a passing thread, never on the request's.
        builder: Makes a source from its settings (default :func:`build_source`).
        state_path: Where every change is saved (``daemon.state_path``; ``None``: nowhere).
        shadows: The pipeline's served-versus-shadow comparison (the promotions' evidence).
        retention: The retention index, for the promotions' labelled evidence.
        promoted: Cameras whose recipe is a promotion a rollback may undo (the state file's).
    """

    def __init__(
        self,
        intake: Intake,
        models: ModelSet,
        recipes: Recipes,
        kafka: KafkaConfig,
        metrics: Metrics,
        configs: dict[str, SourceConfig],
        *,
        load_model: ModelLoader | None = None,
        builder: Callable[[SourceConfig, KafkaConfig, Metrics], Source] = build_source,
        state_path: Path | None = None,
        shadows: ShadowBook | None = None,
        retention: RetentionLookup = lambda: None,
        promoted: tuple[str, ...] = (),
    ) -> None:
        self.intake = intake
        self.models = models
        self.recipes = recipes
        self._load_model = load_model
        self._model_lock = threading.Lock()  # one load at a time: memory, and names unique
        self.kafka = kafka
        self.metrics = metrics
        self._configs = dict(configs)
        self._builder = builder
        self._state_path = state_path
        self._save_lock = threading.Lock()
        book = shadows if shadows is not None else ShadowBook(metrics)
        self._shadow = ShadowControl(models, recipes, book, retention, promoted)

    def sources(self) -> list[SourceState]:
        """Every source and its state."""
        return [self._state(slot) for slot in self.intake.slots()]

    def source(self, sid: str) -> SourceState:
        """One source (:class:`~inspector.runtime.intake.UnknownSourceError` if none)."""
        return self._state(self.intake.slot(sid))

    def add_source(self, config: SourceConfig, who: str) -> SourceState:
        """Build, set up and start a source beside the running ones.

        Raises:
            DuplicateSourceError: Its id is taken (nothing was opened).
            SourceSetupError: It cannot start (the message says why).
            ShuttingDownError: The daemon is shutting down (nothing is left open).
        """
        self._refuse_when_stopping("add_source")
        sid = source_id(config, [s.id for s in self.intake.slots()])
        try:
            self.intake.slot(sid)
        except UnknownSourceError:
            pass
        else:
            self._count("add_source", "rejected")
            raise DuplicateSourceError(f"a source {sid!r} already runs")
        source = self._builder(config, self.kafka, self.metrics)
        try:
            source.setup()
        except Exception as exc:  # any failure to open is the caller's 422, never a crash
            self._count("add_source", "failed")
            log.warning("control: %s added source %s: it cannot start: %s", who, sid, exc)
            source.close()
            raise SourceSetupError(f"source {sid} cannot start: {exc}") from exc
        try:
            slot = self.intake.add(sid, source)
        except DuplicateSourceError:  # the same id added by a request at the same time
            source.close()
            self._count("add_source", "rejected")
            raise
        except InspectorError as exc:  # Intake.add's only other refusal: shutdown began
            source.close()
            self._count("add_source", "rejected")
            raise ShuttingDownError(f"{_STOPPING}: source {sid} was not added") from exc
        self._configs[sid] = config
        self._count("add_source", "ok")
        log.info("control: %s added source %s (%s)", who, sid, config.type)
        self.save()
        return self._state(slot)

    def remove_source(self, sid: str, who: str) -> SourceState:
        """Stop one source; it commits what was delivered. The others keep running."""
        self._refuse_when_stopping("remove_source")
        slot = self._changed("remove_source", sid, who, self.intake.remove)
        self._configs.pop(sid, None)
        self.save()
        return self._state(slot)

    def pause_source(self, sid: str, who: str) -> SourceState:
        """Stop taking frames from one source (it stays connected and commits)."""
        self._refuse_when_stopping("pause_source")
        return self._state(self._changed("pause_source", sid, who, self.intake.pause_source))

    def resume_source(self, sid: str, who: str) -> SourceState:
        """Take frames from a paused source again."""
        self._refuse_when_stopping("resume_source")
        return self._state(self._changed("resume_source", sid, who, self.intake.resume_source))

    def trigger_source(self, sid: str, who: str) -> SourceState:
        """Take one frame from a camera in software-trigger mode (not a change: not saved).

        Raises:
            UnknownSourceError: No such source.
            NotTriggerableError: It takes no software triggers.
        """
        slot = self.intake.slot(sid)
        slot.source.trigger()
        log.debug("control: %s triggered source %s", who, sid)
        return self._state(slot)

    def _changed(
        self, action: Action, sid: str, who: str, change: Callable[[str], SourceSlot]
    ) -> SourceSlot:
        try:
            slot = change(sid)
        except UnknownSourceError:
            self._count(action, "rejected")
            raise
        self._count(action, "ok")
        log.info("control: %s %s %s", who, action.replace("_source", "d source"), sid)
        if action != "remove_source":
            self.save()
        return slot

    # --- models and recipes -------------------------------------------------------------

    def model_states(self) -> list[ModelState]:
        """Every served model, the default first."""
        default = self.models.default.name
        return [self._model_state(m, default) for m in self.models.all()]

    def add_model(self, new: NewModel, who: str) -> ModelState:
        """Load, check and warm a checkpoint beside the served models.

        Raises:
            ModelInUseError: A model of that name is served already.
            ModelSetupError: It cannot be loaded (the message says why).
            ShuttingDownError: The daemon is shutting down.
        """
        self._refuse_when_stopping("add_model")
        with self._model_lock:
            if any(m.name == new.name for m in self.models.all()):
                self._count("add_model", "rejected")
                raise ModelInUseError(f"a model {new.name!r} is served already")
            if self._load_model is None:
                raise ModelSetupError("this daemon cannot load models")
            try:
                served = self._load_model(new.name, new.checkpoint)
            except WaitAbandonedError as exc:  # SIGTERM during the load: not the file's fault
                self._count("add_model", "rejected")
                raise ShuttingDownError(f"{_STOPPING}: model {new.name} was not added") from exc
            except Exception as exc:  # any failure to load is the caller's 422, never a crash
                self._count("add_model", "failed")
                log.warning("control: %s added model %s: cannot load: %s", who, new.name, exc)
                raise ModelSetupError(f"model {new.name} cannot be loaded: {exc}") from exc
            self.models.add(served)
        self._count("add_model", "ok")
        log.info("control: %s added model %s (%s)", who, new.name, new.checkpoint)
        self.save()
        return self._model_state(served, self.models.default.name)

    def remove_model(self, name: str, who: str) -> ModelState:
        """Stop serving a model no camera uses (not the default)."""
        self._refuse_when_stopping("remove_model")
        try:
            removed = self.models.remove(name, self.recipes.uses(name))
        except (UnknownModelError, ModelInUseError):
            self._count("remove_model", "rejected")
            raise
        self._count("remove_model", "ok")
        log.info("control: %s removed model %s", who, name)
        self.save()
        return self._model_state(removed, self.models.default.name)

    def set_recipe(self, camera_id: str, recipe: CameraRecipe, who: str) -> CameraRecipe:
        """Give a camera (or ``*``) a new recipe; its frames follow it from the next batch.

        Raises:
            RecipeError: The recipe names a model that is not served, or its ``tiling.tile``
                is not that model's input size (the message names the field).
            ShuttingDownError: The daemon is shutting down.
        """
        self._refuse_when_stopping("set_recipe")
        try:
            if recipe.model is not None:
                self.models.get(recipe.model)
            self.models.check_recipe(camera_id, recipe)
            self._shadow.check(camera_id, recipe)
        except UnknownModelError as exc:
            self._count("set_recipe", "rejected")
            raise RecipeError(f"model: {exc}: load it first (POST /v1/models)") from exc
        except ConfigError as exc:
            self._count("set_recipe", "rejected")
            raise RecipeError(str(exc)) from exc
        self.recipes.set(camera_id, recipe)
        self._shadow.forget(camera_id)
        self._count("set_recipe", "ok")
        log.info("control: %s set the recipe of camera %s: %s", who, camera_id, recipe)
        self.save()
        return recipe

    def remove_recipe(self, camera_id: str, who: str) -> CameraRecipe:
        """Drop a camera's (or ``*``'s) recipe; its frames follow ``*`` from the next batch.

        Saved like :meth:`set_recipe`, so a restart does not bring the recipe back.

        Raises:
            UnknownCameraError: The camera has no recipe.
            ShuttingDownError: The daemon is shutting down.
        """
        self._refuse_when_stopping("remove_recipe")
        removed = self.recipes.remove(camera_id)
        if removed is None:
            self._count("remove_recipe", "rejected")
            raise UnknownCameraError(
                f"camera {camera_id!r} has no recipe (GET /v1/cameras lists those that have)"
            )
        self._shadow.forget(camera_id)
        self._count("remove_recipe", "ok")
        log.info("control: %s removed the recipe of camera %s: %s", who, camera_id, removed)
        self.save()
        return removed

    def promote(self, camera_id: str, who: str, *, rollback: bool = False) -> Promotion:
        """Make the camera's shadow its served model (``rollback``: undo a promotion).

        Raises:
            UnknownCameraError, NoShadowError, RecipeError: see :meth:`ShadowControl.swap`.
            ShuttingDownError: The daemon is shutting down.
        """
        action: Action = "rollback" if rollback else "promote"
        self._refuse_when_stopping(action)
        try:
            done = self._shadow.swap(camera_id, who, rollback=rollback)
        except (UnknownCameraError, NoShadowError, RecipeError):
            self._count(action, "rejected")
            raise
        self._count(action, "ok")
        self.save()
        return done

    def _model_state(self, model: ServedModel, default: str) -> ModelState:
        return ModelState(
            name=model.name,
            checkpoint=str(model.checkpoint),
            checkpoint_sha256=model.sha256,
            backbone=model.postprocessor.model.backbone,
            default=model.name == default,
            memory_bytes=model.memory_bytes,
            used_by=self.recipes.uses(model.name),
        )

    # --- the state file -------------------------------------------------------------------

    def runtime_state(self) -> RuntimeState:
        """What a restart must bring back: sources (and which are paused), models, recipes."""
        slots = [s for s in self.intake.slots() if s.id in self._configs]
        default = self.models.default.name
        return RuntimeState(
            sources=tuple(self._configs[s.id] for s in slots),
            paused=tuple(s.id for s in slots if s.state is SourcePhase.PAUSED),
            models=tuple(
                SavedModel(name=m.name, checkpoint=m.checkpoint)
                for m in self.models.all()
                if m.name != default
            ),
            cameras=self.recipes.all(),
            promoted=tuple(sorted(self._shadow.promoted)),
        )

    def save(self) -> None:
        """Write the runtime state to ``daemon.state_path``.

        A failure is logged: the change itself stands, but a restart would not bring it back.
        """
        if self._state_path is None:
            return
        with self._save_lock:
            try:
                save_state(self._state_path, self.runtime_state())
            except OSError as exc:
                log.error(
                    "control: cannot save the line's state to %s (daemon.state_path): %s; "
                    "a restart would start from the previous state",
                    self._state_path,
                    exc,
                )

    def _refuse_when_stopping(self, action: Action) -> None:
        """Refuse a change once shutdown began: the line is draining, and a restart follows.

        With ``daemon.keep_open`` (on by default with the control API), input closes only on
        shutdown; a request that passes this check while shutdown begins is refused by
        ``Intake.add`` instead.
        """
        if self.intake.closed.is_set():
            self._count(action, "rejected")
            raise ShuttingDownError(f"{_STOPPING}: send the change to the restarted daemon")

    def _count(self, action: Action, result: str) -> None:
        self.metrics.control_changes.labels(action=action, result=result).inc()

    def _state(self, slot: SourceSlot) -> SourceState:
        config = self._configs.get(slot.id)
        return SourceState(
            id=slot.id,
            type=config.type if config is not None else slot.source.name,
            state=slot.state.value,
            ready=slot.source.ready(),
            config=config.model_dump(mode="json") if config is not None else {},
        )
