"""The models a daemon serves: the configured one and those loaded through the control API.

Each is a warmed-up :class:`~inspector.runtime.worker.ModelWorker` with the postprocessor of
its checkpoint's calibration; cameras choose one by name in their recipe. They share the
device (one GPU holds several small models); ``inspector_model_memory_bytes{model}`` shows what
each holds. Loading happens beside the running models, which keep serving meanwhile.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from inspector.backends import load_model
from inspector.errors import ConfigError, InspectorError, WaitAbandonedError
from inspector.messages import ModelRef
from inspector.model.device import resolve_device
from inspector.model.fastpath import RuntimeOptions, in_passing_thread
from inspector.runtime.config import InspectorConfig
from inspector.runtime.ids import for_log
from inspector.runtime.metrics import Metrics
from inspector.runtime.parity import check_parity
from inspector.runtime.postprocess import Postprocessor
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.regions import check_tiling
from inspector.runtime.worker import ModelWorker

log = logging.getLogger(__name__)


class UnknownModelError(InspectorError):
    """No model of this name is loaded."""


class ModelInUseError(InspectorError):
    """The model cannot go: a camera's recipe uses it, or it is the default."""


@dataclass(frozen=True)
class ServedModel:
    """One loaded, warmed-up model.

    Attributes:
        name: Its name in recipes and the API (the checkpoint's name for the default model).
        checkpoint: The file it was loaded from.
        sha256: The checkpoint's digest (as in every result).
        worker: Runs it.
        postprocessor: Its calibration and the configured region settings.
        memory_bytes: Bytes of its parameters and buffers (on its device).
    """

    name: str
    checkpoint: Path
    sha256: str
    worker: ModelWorker
    postprocessor: Postprocessor
    memory_bytes: int


def load_served_model(
    name: str | None,
    path: Path,
    config: InspectorConfig,
    metrics: Metrics,
    *,
    stop: threading.Event | None = None,
) -> ServedModel:
    """Load, validate and warm up a checkpoint as the daemon serves it, on a passing thread.

    Every model the daemon serves comes through here (the configured one at start and on
    SIGHUP, ``models``, the state file's, ``POST /v1/models``), so the torch work runs on a
    thread that ends with it whichever thread asks: a long-lived caller (the main thread, an
    HTTP worker thread) that ran it would keep an OpenMP team beside the inference thread's
    (:func:`~inspector.model.fastpath.in_passing_thread`).

    Args:
        name: Its name; ``None``: the checkpoint's own.
        path: The safetensors checkpoint, or an export folder (``model.backend`` openvino or
            onnxruntime).
        config: ``model`` (backend, device, fast path, warm-up), ``batcher`` and
            ``postprocess``.
        metrics: Where the worker reports.
        stop: Stop waiting once this is set (the daemon told to exit during a load).

    Raises:
        ModelParityError: It does not score its stored probe set as recorded
            (:func:`~inspector.runtime.parity.check_parity`).
        InspectorError: The file cannot be loaded, has no calibration, or the device fails.
        WaitAbandonedError: ``stop`` was set first (the load is abandoned).
    """
    return in_passing_thread(
        lambda: _load_here(name, path, config, metrics), "inspector-model-setup", stop
    )


def _load_here(
    name: str | None, path: Path, config: InspectorConfig, metrics: Metrics
) -> ServedModel:
    """:func:`load_served_model`'s work, on the calling thread (only ever a passing one)."""
    cfg = config.model
    loaded = load_model(
        path,
        cfg.backend,
        resolve_device(cfg.device),
        RuntimeOptions(
            precision=cfg.precision,
            channels_last=cfg.channels_last,
            compile=cfg.compile,
            cuda_graphs=cfg.cuda_graphs,
        ),
        batch_size=config.batcher.max_batch_size,
        auto_cache_dir=cfg.auto_cache_dir,
    )
    if loaded.auto is not None:
        log.info(
            "precision auto: %s on %s (%s%s)",
            loaded.auto.precision,
            loaded.auto.backend,
            loaded.auto.reason,
            "; cached" if loaded.auto.cached else "",
        )
    meta = loaded.meta
    model_ref = ModelRef(
        name=name or meta.name, backbone=meta.model.backbone, checkpoint_sha256=loaded.sha256
    )
    postprocessor = Postprocessor(meta.calibration, model_ref, config.postprocess)
    worker = ModelWorker(
        loaded.engine,
        loaded.engine.device,
        metrics,
        warmup_batches=cfg.warmup_batches,
        max_batch_size=config.batcher.max_batch_size,
        map_filter=postprocessor.needs_map,
        preprocessing=meta.preprocessing,
    )
    # Before the warm-up: a model whose maps are not the recorded ones is refused first.
    check_parity(model_ref.name, path, worker, meta, loaded.probe_images, metrics)
    worker.warm_up()
    log.info(
        "model %s runs on %s (%s)",
        for_log(model_ref.name),
        loaded.engine.backend,
        loaded.engine.precision,
    )
    memory = loaded.memory_bytes
    return ServedModel(model_ref.name, path, loaded.sha256, worker, postprocessor, memory)


def load_configured_model(
    config: InspectorConfig, metrics: Metrics, *, stop: threading.Event | None = None
) -> ServedModel:
    """Load the configured checkpoint (``model.checkpoint``) and publish what it is.

    Counts the attempt in ``inspector_model_reloads_total{result}`` (the alert on a failed
    SIGHUP reload reads it) and sets ``inspector_model_info`` and ``inspector_threshold``.

    Raises:
        ConfigError: No checkpoint configured.
        InspectorError: It cannot be loaded (see :func:`load_served_model`).
        WaitAbandonedError: ``stop`` was set first (not counted: nothing failed).
    """
    if config.model.checkpoint is None:
        raise ConfigError(
            "model.checkpoint: no checkpoint configured (set INSPECTOR_MODEL__CHECKPOINT)"
        )
    try:
        served = load_served_model(None, config.model.checkpoint, config, metrics, stop=stop)
    except WaitAbandonedError:
        raise
    except Exception:
        metrics.model_reloads.labels(result="failure").inc()
        raise
    metrics.model_reloads.labels(result="success").inc()
    ref = served.postprocessor.model
    metrics.model_info.info(
        {
            "name": ref.name,
            "backbone": ref.backbone,
            "device": str(served.worker.device),
            "checkpoint_sha256": served.sha256,
            "backend": served.worker.fast.backend,
            "precision": served.worker.fast.precision,
        }
    )
    threshold = served.postprocessor.threshold
    metrics.threshold.labels(kind="image").set(threshold.image)
    metrics.threshold.labels(kind="pixel").set(threshold.pixel)
    return served


def label_of(served: ServedModel) -> str:
    """The model as the daemon's log names it: name, backbone and the start of its SHA-256."""
    ref = served.postprocessor.model
    return f"{ref.name} ({ref.backbone}, sha256 {served.sha256[:12]})"


class ModelSet:
    """The served models by name, with one default (thread-safe).

    Args:
        default: The configured model; frames of cameras without a model in their recipe go
            to it.
        metrics: ``inspector_model_memory_bytes{model}`` follows what is loaded.
    """

    def __init__(self, default: ServedModel, metrics: Metrics) -> None:
        self._lock = threading.Lock()
        self._models = {default.name: default}
        self._default = default.name
        self._metrics = metrics
        metrics.model_memory.labels(model=default.name).set(default.memory_bytes)

    @property
    def default(self) -> ServedModel:
        """The model of cameras without one in their recipe."""
        with self._lock:
            return self._models[self._default]

    def get(self, name: str | None) -> ServedModel:
        """The model ``name`` (``None``: the default).

        Raises:
            UnknownModelError: None of that name is loaded.
        """
        with self._lock:
            found = self._models.get(self._default if name is None else name)
        if found is None:
            raise UnknownModelError(f"no model {name!r} is loaded (GET /v1/models lists them)")
        return found

    def check_recipe(self, camera_id: str, recipe: CameraRecipe) -> None:
        """Refuse a recipe whose tiles do not fit the model it names (if that is served).

        Raises:
            ConfigError: ``tiling.tile`` is not the model's input size (the message names
                ``cameras.<camera_id>.tiling.tile``).
        """
        if recipe.tiling is None:
            return
        try:
            model = self.get(recipe.model)
        except UnknownModelError:
            return  # its frames become dead letters unknown_model; nothing to compare with
        check_tiling(camera_id, recipe, model.name, model.worker.image_size)

    def all(self) -> list[ServedModel]:
        """Every served model, the default first."""
        with self._lock:
            return sorted(self._models.values(), key=lambda m: m.name != self._default)

    def add(self, model: ServedModel) -> None:
        """Serve one more model (or a new version under the same name)."""
        with self._lock:
            self._models[model.name] = model
        self._metrics.model_memory.labels(model=model.name).set(model.memory_bytes)

    def replace_default(self, model: ServedModel) -> None:
        """A reloaded configured checkpoint (SIGHUP): serves under its (possibly new) name."""
        with self._lock:
            old = self._default
            if model.name != old:
                self._models.pop(old, None)
            self._models[model.name] = model
            self._default = model.name
        if model.name != old:
            self._metrics.model_memory.remove(old)
        self._metrics.model_memory.labels(model=model.name).set(model.memory_bytes)

    def remove(self, name: str, used_by: list[str]) -> ServedModel:
        """Stop serving ``name``.

        Raises:
            UnknownModelError: None of that name is loaded.
            ModelInUseError: It is the default or ``used_by`` (cameras) is not empty.
        """
        with self._lock:
            found = self._models.get(name)
            if found is None:
                raise UnknownModelError(f"no model {name!r} is loaded")
            if name == self._default:
                raise ModelInUseError(f"model {name!r} is the default (model.checkpoint)")
            if used_by:
                raise ModelInUseError(
                    f"model {name!r} is used by camera(s) {', '.join(used_by)}: change their "
                    "recipes first (PUT /v1/cameras/{id})"
                )
            del self._models[name]
        self._metrics.model_memory.remove(name)
        return found


def warn_tiling_of(models: ModelSet, recipes: Recipes) -> None:
    """Log restored recipes whose tiles no longer fit their model (its frames dead-letter).

    Set through the control API, they fitted then; the model file may have changed since. The
    daemon still starts: the other cameras run, and the operator can fix the recipe over the
    API, which a refusal to start would prevent.
    """
    for camera_id, recipe in recipes.all().items():
        try:
            models.check_recipe(camera_id, recipe)
        except ConfigError as exc:
            log.error(
                "restored recipe: %s; its frames become dead letters tiling_mismatch until "
                "PUT /v1/cameras/%s fixes it",
                exc,
                camera_id,
            )
