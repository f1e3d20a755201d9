"""The inference thread's pending work, run one model batch at a time, earliest deadline first.

The daemon runs its models on one thread: torch's OpenMP teams make a second inference thread
costly on a CPU (:func:`inspector.model.fastpath.in_passing_thread`). A heavy camera's tiled
frame (a 1024x768 frame in 128 px tiles: 63 model inputs, seconds of a CPU) would hold that
thread, and a light camera's batch would wait behind the whole frame and miss its deadline.
So the thread keeps its work here, as jobs, and runs one step at a time of the most urgent:

- a batch of whole frames (or of regions resized to the model's input) is one job of one
  step, as the batcher made it;
- each tiled frame is a job of its own, resumable: chunks of ``max_batch_size`` tiles
  (:class:`~inspector.runtime.worker.ViewScoring`, which holds its partial stitched state),
  so a light camera's batch that arrives meanwhile runs between two chunks.

Urgency is the deadline: the earliest ``captured_at`` + camera ``deadline_ms`` of a job's
frames (:meth:`~inspector.runtime.recipes.Recipes.deadline_at`). A job past its deadline is
still run to its end, but after every job that can still be on time: its verdict is late
either way, and going first would make the others late too. Jobs without a deadline (no
``deadline_ms``, or no capture time) come last. Ties go by arrival, so a camera's frames,
whose deadlines follow their capture order, keep their order while on time.

A camera's shadow model (:mod:`inspector.runtime.shadow`) scores frames already scored by
their served model: its jobs (:meth:`Scheduler.add_shadow`) are a lower tier that runs only
when no served job is waiting, and the step that finds served work waiting beside shadow jobs
drops those shadow jobs (:meth:`Scheduler.take_skipped`), begun or not: a shadow never delays a
served frame by more than the one model batch it was running when that frame arrived.

Every frame added comes back exactly once, in a :class:`Finished` job: scored or failed.
Frames are acked only on delivery (by frame, not by position), and a Kafka source commits an
offset only when every offset before it is done
(:class:`~inspector.runtime.kafka.offsets.OffsetTracker`), so frames finishing out of
order never commit a frame that is still pending.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from inspector.runtime.records import FrameMeta, ScoredBatch
from inspector.runtime.routing import Routed
from inspector.runtime.worker import ViewScoring

#: When a frame's verdict is due, seconds since the epoch; ``None``: no deadline.
DueFn = Callable[[FrameMeta], float | None]


@dataclass(frozen=True)
class Finished:
    """A job run to its end.

    Attributes:
        group: Its frames, their model, postprocessors and views.
        output: Their scores and maps, or why inference failed.
        seconds: Inference time of its own (its steps together, not the work run between
            them).
        finished: Monotonic time it ended.
        shadow: A shadow job (its frames' results come from their served job).
    """

    group: Routed
    output: ScoredBatch | Exception
    seconds: float
    finished: float
    shadow: bool = False


class Job:
    """Frames of one model scored together, one model batch per :meth:`step`.

    Args:
        group: The frames (a plain group: one step; frames with views: one step per
            ``max_batch_size`` inputs).
        due: When the first of its frames' verdicts is due (epoch seconds), or ``None``.
        seq: Arrival order, for ties.
        clock: Monotonic clock for :attr:`seconds`.

    Attributes:
        seconds: Time spent in :meth:`step` so far.
    """

    def __init__(
        self,
        group: Routed,
        due: float | None,
        seq: int,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.group = group
        self.due = due
        self.seq = seq
        self.seconds = 0.0
        self._clock = clock
        self._scoring: ViewScoring | None = None

    @property
    def steps_left(self) -> int:
        """Model batches still to run."""
        views = self.group.views
        if views is None:
            return 1
        if self._scoring is not None:
            return self._scoring.steps_left
        per_batch = self.group.model.worker.max_batch_size
        return math.ceil(sum(v.inputs for v in views) / per_batch)

    def step(self) -> ScoredBatch | None:
        """Run the next model batch; the output once the last one ran, else ``None``.

        Raises:
            Exception: Whatever inference raised (the job is over: its frames failed).
        """
        t0 = self._clock()
        group = self.group
        worker = group.model.worker
        try:
            if group.views is None:
                return worker.score([f.image for f in group.frames], map_filter=group.map_filter())
            if self._scoring is None:
                images = [f.image for f in group.frames]
                self._scoring = worker.view_scoring(images, group.views, group.map_filter())
            return self._scoring.result() if self._scoring.step() else None
        finally:
            self.seconds += self._clock() - t0


class Scheduler:
    """The inference thread's jobs, earliest deadline first (used by that thread alone).

    Args:
        due: When a frame's verdict is due (epoch seconds), ``None`` without a deadline.
        wall_clock: Seconds since the epoch (deadlines are wall time, like ``captured_at``).
        clock: Monotonic clock (:attr:`Finished.finished`).
    """

    def __init__(
        self,
        due: DueFn,
        *,
        wall_clock: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._due = due
        self._wall_clock = wall_clock
        self._clock = clock
        self._jobs: list[Job] = []
        self._shadows: list[Job] = []  # served jobs first: these run only when _jobs is empty
        self._skipped: list[Routed] = []
        self._seq = itertools.count()

    def __len__(self) -> int:
        """Jobs not finished, shadow jobs included."""
        return len(self._jobs) + len(self._shadows)

    @property
    def frames(self) -> int:
        """Frames held for their served model, in jobs begun or waiting (not the shadows')."""
        return sum(len(j.group.frames) for j in self._jobs)

    def add_shadow(self, group: Routed) -> Job:
        """Queue a shadow model's group as one job (whatever its tiles).

        It runs after every served job and is dropped when served work waits (module doc).
        """
        job = Job(group, None, next(self._seq), self._clock)
        self._shadows.append(job)
        return job

    def take_skipped(self) -> list[Routed]:
        """The shadow groups dropped since the last call, in arrival order."""
        skipped, self._skipped = self._skipped, []
        return skipped

    def add(self, group: Routed) -> list[Job]:
        """Queue a routed group: one job, or one per tiled frame (see the module doc).

        Returns:
            The jobs made, in arrival order.
        """
        jobs = [
            Job(part, self._earliest(part), next(self._seq), self._clock) for part in _split(group)
        ]
        self._jobs.extend(jobs)
        return jobs

    def next_job(self) -> Job | None:
        """The job the next :meth:`step` runs (``None``: nothing to do)."""
        if not self._jobs:
            return self._shadows[0] if self._shadows else None
        now = self._wall_clock()
        return min(self._jobs, key=lambda job: _urgency(job, now))

    def step(self) -> Finished | None:
        """Run one model batch of the most urgent job; the job if that ended it, else ``None``.

        Served work waiting drops every shadow job first (:meth:`take_skipped` has them). A
        job whose inference raises ends there, failed: its frames come back with the error.
        """
        if self._jobs and self._shadows:
            self._skipped.extend(job.group for job in self._shadows)
            self._shadows.clear()
        job = self.next_job()
        if job is None:
            return None
        shadow = not self._jobs
        held = self._shadows if shadow else self._jobs
        try:
            output = job.step()
        except Exception as exc:  # one job's failure fails its frames, never the thread
            held.remove(job)
            return Finished(job.group, exc, job.seconds, self._clock(), shadow)
        if output is None:
            return None
        held.remove(job)
        return Finished(job.group, output, job.seconds, self._clock(), shadow)

    def _earliest(self, group: Routed) -> float | None:
        dues = [d for f in group.frames if (d := self._due(f.meta)) is not None]
        return min(dues, default=None)


def _urgency(job: Job, now: float) -> tuple[int, float, int]:
    """Sort key: on time by deadline, then late by deadline, then no deadline; by arrival."""
    if job.due is None:
        return 2, 0.0, job.seq
    return (1 if job.due < now else 0), job.due, job.seq


def _split(group: Routed) -> list[Routed]:
    """One group per tiled frame (many model inputs each), the group's other frames together.

    Frames without tiling (whole, or a region resized) are one model input each: they stay
    one batch, as the batcher made it.
    """
    views = group.views
    if views is None or all(v.grid is None for v in views):
        return [group]
    rows = list(zip(group.frames, group.postprocessors, views, strict=True))
    single = [r for r in rows if r[2].grid is None]
    parts = [[r] for r in rows if r[2].grid is not None]
    if single:
        parts.insert(0, single)
    return [
        Routed(group.model, [r[0] for r in p], [r[1] for r in p], [r[2] for r in p]) for p in parts
    ]
