"""Shadow models: a camera's candidate model scores its frames beside the served one.

A recipe's ``shadow_model`` scores the camera's frames too, for comparison only: its verdict
goes into the frame's one result as ``shadow`` (``{model, score, is_anomalous}``) and into
``inspector_shadow_decisions_total{camera, served, shadow}``, and never decides anything.

The design keeps "a frame ends as exactly one result" and keeps the shadow off the critical
path:

- a batch is scored by its served model as always; when it is done, its frames whose recipe
  names a shadow become shadow jobs on the same inference thread
  (:meth:`~inspector.runtime.schedule.Scheduler.add_shadow`), and the served output is *held*
  here (:class:`ShadowLane`) instead of going to post-processing;
- a shadow job runs only when no served job waits; the step that finds served work waiting
  drops the shadow jobs instead (``inspector_shadow_skipped_total{camera}`` counts their
  frames);
- the held output goes on, with its frames' shadow verdicts, as soon as each of its shadow
  jobs has finished, failed or been dropped: whichever comes first. So a result waits for
  its shadow only while nothing served waits; when the shadow was dropped the result goes out
  without the ``shadow`` block;
- a frame whose verdict would be late if it waited for its shadow (its camera's deadline
  comes before now plus its served inference time, the shadow's likely cost) is not held at
  all: its shadow is skipped and counted at once.

The comparison since the current (served, shadow) pair of a camera started is kept by
:class:`ShadowBook`: the evidence a promotion (``POST /v1/cameras/{id}/promote``) reports.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from inspector.errors import RegionError
from inspector.messages import ShadowVerdict
from inspector.runtime.ids import for_log
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelSet, ServedModel, UnknownModelError
from inspector.runtime.postprocess import Postprocessor
from inspector.runtime.recipes import Recipes
from inspector.runtime.records import Frame, ScoredBatch
from inspector.runtime.regions import FrameView, image_size_of, plan_view
from inspector.runtime.routing import Routed
from inspector.runtime.schedule import Finished, Scheduler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Inferred:
    """A served model's output on a group of frames, on its way to post-processing.

    Attributes:
        frames: The frames.
        output: Their scores ``(N,)`` and maps.
        seconds: The frames' own inference time; the rest, from entering the pipeline to
            ``finished`` (monotonic), they waited.
        finished: Monotonic time inference ended.
        postprocessors: Each frame's postprocessor: its model's calibration with its camera's
            recipe (batches already inferred keep what matches their maps after a switch).
        views: Each frame's region of interest and tiles; ``None``: whole frames.
        shadows: Each frame's shadow verdict, ``None`` where it has none (filled in here
            while the item is held, before post-processing reads it).
    """

    frames: list[Frame]
    output: ScoredBatch
    seconds: float
    finished: float
    postprocessors: list[Postprocessor]
    views: list[FrameView] | None = None
    shadows: list[ShadowVerdict | None] = field(default_factory=list)

    def shadow(self, i: int) -> ShadowVerdict | None:
        """Frame ``i``'s shadow verdict, if any."""
        return self.shadows[i] if i < len(self.shadows) else None


class Evidence(BaseModel):
    """How a camera's shadow compared with its served model since the pair started.

    Attributes:
        served: The served model.
        shadow: The shadow model.
        since: When the pair started being compared (UTC).
        frames_compared: Frames both scored.
        agreement: Share of them with the same verdict (``None``: none compared).
        served_anomalous: Of them, judged anomalous by the served model.
        shadow_anomalous: Of them, judged anomalous by the shadow.
    """

    model_config = ConfigDict(frozen=True)

    served: str
    shadow: str
    since: datetime
    frames_compared: int = Field(ge=0)
    agreement: float | None
    served_anomalous: int = Field(ge=0)
    shadow_anomalous: int = Field(ge=0)


@dataclass
class _Tally:
    served: str
    shadow: str
    since: datetime
    compared: int = 0
    agreed: int = 0
    served_anomalous: int = 0
    shadow_anomalous: int = 0


def _verdict(anomalous: bool) -> str:
    return "anomalous" if anomalous else "good"


class ShadowBook:
    """Each camera's served-versus-shadow comparison, since its current pair started.

    Thread-safe: the post-processing thread records, control requests read.

    Args:
        metrics: ``inspector_shadow_decisions_total``.
        wall_clock: When a pair starts (UTC).
    """

    def __init__(
        self, metrics: Metrics, wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._metrics = metrics
        self._clock = wall_clock
        self._lock = threading.Lock()
        # By (camera, served, shadow): frames of a pair already in flight when a promotion
        # swapped it still count for their own pair, never for the new one.
        self._tallies: dict[tuple[str, str, str], _Tally] = {}

    def record(self, camera_id: str, served: str, anomalous: bool, shadow: ShadowVerdict) -> None:
        """One frame both models scored, counted for its (served, shadow) pair."""
        camera = self._metrics.camera(camera_id)
        self._metrics.shadow_decisions.labels(
            camera=camera, served=_verdict(anomalous), shadow=_verdict(shadow.is_anomalous)
        ).inc()
        with self._lock:
            tally = self._tally(camera_id, served, shadow.model)
            tally.compared += 1
            tally.agreed += anomalous == shadow.is_anomalous
            tally.served_anomalous += anomalous
            tally.shadow_anomalous += shadow.is_anomalous

    def restart(self, camera_id: str, served: str, shadow: str) -> None:
        """Start the pair's comparison afresh (a promotion or a rollback made it the pair)."""
        with self._lock:
            self._tallies[camera_id, served, shadow] = self._new(served, shadow)

    def evidence(self, camera_id: str, served: str, shadow: str) -> Evidence:
        """The comparison of ``served`` and ``shadow`` on the camera (empty if none yet)."""
        with self._lock:
            tally = self._tally(camera_id, served, shadow)
            return Evidence(
                served=served,
                shadow=shadow,
                since=tally.since,
                frames_compared=tally.compared,
                agreement=tally.agreed / tally.compared if tally.compared else None,
                served_anomalous=tally.served_anomalous,
                shadow_anomalous=tally.shadow_anomalous,
            )

    def _tally(self, camera_id: str, served: str, shadow: str) -> _Tally:
        """The pair's tally (under the lock), started now if it has none."""
        key = (camera_id, served, shadow)
        if key not in self._tallies:
            self._tallies[key] = self._new(served, shadow)
        return self._tallies[key]

    def _new(self, served: str, shadow: str) -> _Tally:
        return _Tally(served, shadow, self._clock())


@dataclass
class _Held:
    """A served output waiting for its shadow jobs."""

    item: Inferred
    waiting: int


@dataclass(frozen=True)
class _Task:
    """A shadow job's place in its held output: the rows it scores, and their thresholds."""

    held: _Held
    rows: list[int]
    thresholds: list[float]


class ShadowLane:
    """Adds the shadow jobs of served outputs and holds the outputs until they are done.

    Used by the inference thread alone (see the module doc).

    Args:
        models: The served models (a shadow is one of them).
        recipes: The cameras' recipes, read when the served output is done.
        metrics: ``inspector_shadow_skipped_total``.
        emit: Hands an output (with its shadow verdicts) on to post-processing.
        wall_clock: Seconds since the epoch (deadlines are wall time, like ``captured_at``).
    """

    def __init__(
        self,
        models: ModelSet,
        recipes: Recipes,
        metrics: Metrics,
        emit: Callable[[Inferred], None],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._wall_clock = wall_clock
        self._models = models
        self._recipes = recipes
        self._metrics = metrics
        self._emit = emit
        # Keyed by the shadow group's identity: Routed holds lists, so it has no value hash,
        # and the scheduler hands back the very group it was given.
        self._tasks: dict[int, _Task] = {}

    def served(self, schedule: Scheduler, item: Inferred) -> None:
        """A served output: queue its frames' shadow jobs and hold it, or pass it on."""
        groups: dict[tuple[str, bool], tuple[Routed, list[int], list[float]]] = {}
        served_model = item.postprocessors[0].model.name if item.postprocessors else None
        # The shadow would cost about what the served model took: a frame that has no slack
        # for that is not held (its result goes now), its shadow skipped.
        ready_at = self._wall_clock() + item.seconds
        for i, frame in enumerate(item.frames):
            planned = self._plan(frame, served_model)
            if planned is None:
                continue
            due = self._recipes.deadline_at(frame.meta.camera_id, frame.meta.captured_at)
            if due is not None and ready_at > due:
                self._count_skipped([frame])
                continue
            shadow, view, threshold = planned
            key = (shadow.name, view is not None)
            if key not in groups:
                group = Routed(shadow, [], [], None if view is None else [], maps=False)
                groups[key] = (group, [], [])
            group, rows, thresholds = groups[key]
            group.frames.append(frame)
            group.postprocessors.append(shadow.postprocessor)
            if group.views is not None and view is not None:
                group.views.append(view)
            rows.append(i)
            thresholds.append(threshold)
        if not groups:
            self._emit(item)
            return
        item.shadows.extend([None] * len(item.frames))
        held = _Held(item, len(groups))
        for group, rows, thresholds in groups.values():
            self._tasks[id(group)] = _Task(held, rows, thresholds)
            schedule.add_shadow(group)

    def finished(self, done: Finished) -> None:
        """A shadow job ended: record its verdicts (or, failed, none) and release its output."""
        task = self._tasks.pop(id(done.group))
        output = done.output
        if isinstance(output, Exception):
            log.warning("shadow model %s failed on a batch: %r", done.group.model.name, output)
            self._count_skipped(done.group.frames)
        else:
            calibration = done.group.model.postprocessor.calibration
            for j, row in enumerate(task.rows):
                score = calibration.normalise_score(float(output.scores[j]))
                task.held.item.shadows[row] = ShadowVerdict(
                    model=done.group.model.name,
                    score=min(1.0, max(0.0, score)),
                    is_anomalous=score > task.thresholds[j],
                )
        self._release(task.held)

    def skipped(self, groups: list[Routed]) -> None:
        """Shadow jobs dropped so as not to delay served frames: their outputs go on without."""
        for group in groups:
            task = self._tasks.pop(id(group))
            self._count_skipped(group.frames)
            self._release(task.held)

    def _release(self, held: _Held) -> None:
        held.waiting -= 1
        if held.waiting == 0:
            self._emit(held.item)

    def _count_skipped(self, frames: list[Frame]) -> None:
        for frame in frames:
            self._metrics.shadow_skipped.labels(
                camera=self._metrics.camera(frame.meta.camera_id)
            ).inc()

    def _plan(
        self, frame: Frame, served: str | None
    ) -> tuple[ServedModel, FrameView | None, float] | None:
        """The frame's shadow model, view and image threshold; ``None``: no shadow for it."""
        recipe = self._recipes.recipe(frame.meta.camera_id)
        if recipe.shadow_model is None:
            return None
        name, threshold = recipe.shadow_model, recipe.shadow_image_threshold
        try:
            if name == served:  # a promotion swapped the pair since the batch was routed:
                # the frame's shadow is the other model of the pair, the one serving now.
                name, threshold = self._models.get(recipe.model).name, recipe.image_threshold
            shadow = self._models.get(name)
        except UnknownModelError:
            return None  # removed meanwhile: the recipe check refuses that from now on
        if shadow.name == served:  # a recipe shadowing a model with itself: nothing to compare
            return None
        try:
            view = plan_view(recipe, image_size_of(frame.image), shadow.worker.image_size)
        except RegionError:
            log.warning(
                "shadow model %s cannot take the region of %s: not shadowed",
                shadow.name,
                for_log(frame.meta.frame_id),
            )
            return None
        if threshold is None:
            threshold = shadow.postprocessor.threshold.image
        return shadow, view, threshold
