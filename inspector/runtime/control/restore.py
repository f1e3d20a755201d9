"""What the line starts with: the state file's sources, models and recipes, or the YAML file's.

With ``daemon.state_path`` set and the file present, the line comes back as the control API
left it (:mod:`.state`); otherwise as the YAML file describes it. Either way
the daemon builds the same things from a :class:`StartingLine`; a problem with an entry that
came from the state file is reported as one of the state file (its path and the entry), not
as one of the YAML key ``sources``. The metrics' camera labels come from the YAML file
(:func:`camera_labels`: they exist before the state file is read).

The rule for a state file at start (the README's "state file" paragraph says the same):

* the file itself, or a source entry, that cannot be used as it is stops the start with exit
  code 2 naming the file and the entry (``sources.1``): restoring a different line than the
  one saved would be silent, and the next control API change would save it over the file;
* a saved model that no longer loads is logged and left out (its cameras' frames become dead
  letters ``unknown_model``; the model can be added again over the API), as is a restored
  recipe whose tiles no longer fit its model, and a paused id of no saved source.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from inspector.errors import ConfigError, StateFileError, WaitAbandonedError
from inspector.runtime.config import (
    InspectorConfig,
    KafkaConfig,
    KafkaSourceConfig,
    SourceConfig,
)
from inspector.runtime.control.state import SavedModel, restore_state
from inspector.runtime.metrics import CameraLabels, Metrics
from inspector.runtime.models import ModelSet, load_served_model, warn_tiling_of
from inspector.runtime.recipes import ANY_CAMERA, CameraRecipe, Recipes
from inspector.runtime.sources import build_source, source_ids
from inspector.runtime.sources.base import Source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StartingLine:
    """The sources, pauses, extra models and recipes the line starts with.

    Attributes:
        sources: The sources' settings, in order.
        paused: Ids of the sources that start paused.
        models: Models to load besides the configured ones (the state file's).
        recipes: The cameras' recipes.
        state_path: The state file they come from; ``None``: from the YAML file.
        promoted: Cameras whose recipe is a shadow promotion a rollback may undo.
    """

    sources: tuple[SourceConfig, ...]
    paused: tuple[str, ...]
    models: tuple[SavedModel, ...]
    recipes: dict[str, CameraRecipe]
    state_path: Path | None
    promoted: tuple[str, ...] = ()

    @property
    def ids(self) -> list[str]:
        """The id each source runs under."""
        return source_ids(self.sources)

    def build_sources(self, kafka: KafkaConfig, metrics: Metrics) -> list[Source]:
        """The sources, not yet set up.

        Raises:
            StateFileError: One from the state file cannot be made (names the entry).
        """
        sources = []
        for index, config in enumerate(self.sources):
            with self.entry(index):
                sources.append(build_source(config, kafka, metrics))
        return sources

    @contextlib.contextmanager
    def entry(self, index: int) -> Iterator[None]:
        """Setting up source ``index``: a configuration error names its state-file entry.

        Raises:
            StateFileError: The source came from the state file and cannot start (names the
                file and ``sources.<index>``).
        """
        try:
            yield
        except ConfigError as exc:
            if self.state_path is None:
                raise
            # A source's own message starts with the YAML key ("sources: directory source ..."),
            # which would send the operator to the wrong file.
            reason = str(exc).removeprefix("sources: ")
            raise StateFileError(
                f"daemon.state_path: {self.state_path}: sources.{index} (id "
                f"{self.ids[index]!r}) cannot start: {reason}; restore what it needs, remove "
                "the entry from the file, or delete the file to start from the YAML file's "
                "sources"
            ) from exc


def camera_labels(config: InspectorConfig) -> CameraLabels:
    """Bounded camera labels: the configured cameras, then the first N others seen."""
    configured = {s.camera_id for s in config.sources if not isinstance(s, KafkaSourceConfig)} | (
        set(config.cameras) - {ANY_CAMERA}
    )
    return CameraLabels(configured | set(config.metrics.cameras), config.metrics.max_camera_labels)


def starting_line(config: InspectorConfig, models: ModelSet) -> StartingLine:
    """The state file's line if it was saved before, else the YAML file's.

    Args:
        config: The configuration (``daemon.state_path``, ``sources``, ``cameras``).
        models: The configured models, loaded: the YAML file's recipes are checked against them.

    Raises:
        StateFileError: The state file exists but cannot be restored.
        ConfigError: A YAML recipe's tiles are not its model's input size.
    """
    path = config.daemon.state_path
    state = restore_state(path)
    if state is None:  # the file's recipes: a tile that is not the model's size is a typo
        for camera_id, recipe in config.cameras.items():
            models.check_recipe(camera_id, recipe)
        return StartingLine(config.sources, (), (), dict(config.cameras), None)
    return StartingLine(
        state.sources, state.paused, state.models, dict(state.cameras), path, state.promoted
    )


def restore_models(
    line: StartingLine,
    models: ModelSet,
    config: InspectorConfig,
    metrics: Metrics,
    *,
    stop: threading.Event | None = None,
) -> Recipes:
    """Load the models the control API had loaded; return the line's recipes.

    A model that fails is logged and left out: the frames of cameras whose recipe names it
    become dead letters ``unknown_model``, the other cameras run. Restored recipes whose tiles
    no longer fit their model are logged too (set over the API, they fitted then). Each loads
    on a passing thread (:func:`~inspector.runtime.models.load_served_model`), not the caller's.

    Raises:
        WaitAbandonedError: ``stop`` was set during a load (the daemon is told to exit).
    """
    for saved in line.models:
        try:
            models.add(load_served_model(saved.name, saved.checkpoint, config, metrics, stop=stop))
        except WaitAbandonedError:
            raise  # shutting down: not a model that failed to load
        except Exception as exc:
            log.error(
                "daemon.state_path: %s: restoring model %s from %s failed, left out: %s",
                line.state_path,
                saved.name,
                saved.checkpoint,
                exc,
            )
    recipes = Recipes(line.recipes)
    if line.state_path is not None:
        warn_tiling_of(models, recipes)
    return recipes
