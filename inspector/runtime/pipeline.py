"""Wires the stages: sources -> batcher -> model worker -> postprocess -> sinks.

Threads and bounded queues:

- one thread per source polls it and admits frames into the frames queue; dead letters go
  straight to the sinks (:class:`~inspector.runtime.intake.Intake`: sources may be added,
  removed, paused and resumed while the others run);
- an inference thread batches frames and runs the models, one model batch at a time,
  earliest deadline first (:mod:`~inspector.runtime.schedule`: a light camera's batch runs
  between the tile chunks of a heavy camera's frame); a camera's shadow model scores its
  frames there too, only while no served job waits (:mod:`~inspector.runtime.shadow`);
- a postprocess thread turns raw maps into results and hands them to every sink
  (:class:`~inspector.runtime.delivery.Delivery`, which retries a failing sink until it takes them).

A frame is acked to its source (so its Kafka offset may be committed) only when every sink has
confirmed delivery. Shutdown is :meth:`Pipeline.stop_fetching`, :meth:`Pipeline.wait_drained`,
:meth:`Pipeline.close`, in that order, under one deadline: stop the model, flush the sinks,
then let the sources commit what was delivered and close (never before the flush: results
confirmed during it must be committed too).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence

from inspector.dead_letters import ErrorType, FailureStage
from inspector.messages import Latency
from inspector.runtime.admission import Admission
from inspector.runtime.batcher import Batcher
from inspector.runtime.config import DEFAULT_MAX_IN_FLIGHT_BYTES, BatcherConfig
from inspector.runtime.delivery import Delivery, Outcomes
from inspector.runtime.drift import ScoreDrift
from inspector.runtime.ids import for_log
from inspector.runtime.intake import Intake, SourceSlot
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelSet, ServedModel
from inspector.runtime.recipes import Recipes
from inspector.runtime.records import Frame, Inspection
from inspector.runtime.routing import ModelRouter
from inspector.runtime.schedule import Finished, Scheduler
from inspector.runtime.shadow import Inferred, ShadowBook, ShadowLane
from inspector.runtime.sinks.base import Sink
from inspector.runtime.sources.base import Source
from inspector.runtime.worker import ModelWorker

log = logging.getLogger(__name__)

#: With work in hand, the inference thread takes new frames while it holds fewer than this
#: many batches' worth: enough to see what is due soonest, while the rest wait in the bounded
#: frames queue (whose depth shows the backlog, and which pushes back on the sources).
_LOOKAHEAD_BATCHES = 2


class Pipeline:
    """The running stages of one daemon.

    Args:
        sources: Frame sources, one thread each (set up already).
        batcher: Batch size/wait and queue capacity.
        models: The served models (warmed up); each camera's recipe picks one.
        sinks: Result destinations; a frame is acked when all of them confirmed.
        metrics: Metrics registry wrapper.
        max_in_flight: Frames admitted but not yet delivered, at most (default: 4 queues' worth).
        max_in_flight_bytes: Their decoded bytes at most (``admission.max_in_flight_bytes``).
        stall_timeout_s: Frames in flight and no delivery for this long: not ready.
        recipes: Each camera's model, thresholds and deadline (default: the model, none).
        source_ids: Unique id of each source (default: its name, numbered when repeated).
        keep_open: Keep running when every source is exhausted or removed (sources may be
            added later, through the control API); otherwise the pipeline finishes then.
        clock: Monotonic clock.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        batcher: BatcherConfig,
        models: ModelSet,
        sinks: Sequence[Sink],
        metrics: Metrics,
        *,
        max_in_flight: int | None = None,
        max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
        stall_timeout_s: float = 60.0,
        recipes: Recipes | None = None,
        source_ids: Sequence[str] | None = None,
        keep_open: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._initial = list(zip(source_ids or _default_ids(sources), sources, strict=True))
        self.sinks = list(sinks)
        self.models = models
        self.metrics = metrics
        self.clock = clock
        self.frames: queue.Queue[Frame] = queue.Queue(batcher.queue_size)
        self._post: queue.Queue[Inferred | None] = queue.Queue(max(2, batcher.queue_size // 8))
        self._batcher = Batcher(self.frames, batcher, metrics, clock=clock)
        self.admission = Admission(
            max_in_flight or 4 * batcher.queue_size, max_in_flight_bytes, clock
        )
        self._stall_timeout_s = stall_timeout_s
        self.recipes = recipes or Recipes({})
        self._router = ModelRouter(models, self.recipes)
        self._drift = ScoreDrift(metrics.score_drift)
        self.shadows = ShadowBook(metrics)  # each camera's served-vs-shadow comparison
        self._shadow_lane = ShadowLane(models, self.recipes, metrics, self._post.put)
        self._stop_model = threading.Event()  # the model takes no new batch
        self._model_threads: list[threading.Thread] = []
        self._delivery = Delivery(self.sinks, metrics, clock=clock)
        self.outcomes = Outcomes(self._delivery, metrics, self.admission.free, clock)
        self.fatal: BaseException | None = None
        self.intake = Intake(
            self.frames,
            self.admission,
            self.outcomes,
            self._fail,
            keep_open=keep_open,
        )
        self._input_closed = self.intake.closed  # no frame will enter the frames queue again

    @property
    def sources(self) -> list[Source]:
        """The sources running now."""
        return [slot.source for slot in self.intake.slots()]

    @property
    def worker(self) -> ModelWorker:
        """The default model's worker."""
        return self.models.default.worker

    def swap_model(self, model: ServedModel) -> None:
        """Serve another version of the default model from the next batch on, without stopping.

        Batches already inferred are post-processed with the model that inferred them.
        """
        self.models.replace_default(model)

    # --- lifecycle ------------------------------------------------------------------------

    def start(self, held: Sequence[str] = ()) -> None:
        """Start every thread (sources and sinks must be set up, the worker warmed).

        Args:
            held: Ids of sources that start paused (as an operator left them).
        """
        slots = [self.intake.add(i, source, start=False) for i, source in self._initial]
        for slot in slots:
            self.intake.start(slot, paused=slot.id in held)
        self._model_threads.append(self._spawn("inference", self._inference_loop))
        self._model_threads.append(self._spawn("postprocess", self._postprocess_loop))

    def add_source(self, source_id: str, source: Source) -> SourceSlot:
        """Run one more source (set up already) beside the others."""
        return self.intake.add(source_id, source)

    def _fail(self, exc: BaseException) -> None:
        self.fatal = exc
        self.intake.input_stopped()

    def _spawn(self, name: str, target: Callable[[], None]) -> threading.Thread:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # a bug in a stage must stop the daemon, loudly
                log.exception("pipeline thread %s died", name)
                self._fail(exc)

        thread = threading.Thread(target=run, name=f"inspector-{name}", daemon=True)
        thread.start()
        return thread

    def stop_fetching(self) -> None:
        """Take no new frames; frames already admitted still run to delivery."""
        self.intake.input_stopped()

    @property
    def in_flight(self) -> int:
        """Frames and dead letters admitted but not yet delivered."""
        return self.admission.items

    @property
    def undelivered(self) -> int:
        """Frames neither delivered nor dead-lettered (left uncommitted: they come again)."""
        return self.admission.items + self.outcomes.unsendable

    @property
    def finished(self) -> bool:
        """All sources are exhausted or stopped and everything admitted was delivered."""
        return self._input_closed.is_set() and self.admission.items == 0

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every admitted frame is delivered; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            if self.finished:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(0.02, remaining))

    def close(self, deadline: float | None = None) -> None:
        """Stop every thread by ``deadline`` (monotonic; default 10 s from now), in order.

        The model stops, the sinks flush (their confirmations ack frames), retries stop, then
        the sources commit what was delivered and close, and last the sinks close. Frames not
        delivered by then stay uncommitted (see :attr:`undelivered`).
        """
        end = time.monotonic() + 10.0 if deadline is None else deadline

        def left() -> float:
            return max(0.0, end - time.monotonic())

        self.intake.input_stopped()
        self._stop_model.set()
        for thread in self._model_threads:
            thread.join(left())
        for sink in self.sinks:
            try:
                sink.flush(left())
            except Exception:
                log.exception("flushing sink %s failed", sink.name)
        self._delivery.close()
        self.intake.stop_all(end)
        self.intake.join(left)
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", sink.name)

    def readiness_notes(self) -> list[str]:
        """What a ready pipeline's sources say about themselves (e.g. a Kafka standby)."""
        return [n for s in self.sources if (n := s.readiness_note()) is not None]

    def readiness_reasons(self) -> list[str]:
        """Why the pipeline is not ready (empty when ready)."""
        reasons = [f"model {m.name} not warmed up" for m in self.models.all() if not m.worker.ready]
        reasons += [r for s in self.sources if (r := s.unready_reason()) is not None]
        reasons += [r for s in self.sinks if (r := s.unready_reason()) is not None]
        if self.fatal is not None:
            reasons.append(f"pipeline failed: {self.fatal!r}")
        stalled = self._stalled_for()
        if stalled is not None:
            reasons.append(
                f"delivery stalled: {self.in_flight} frame(s) in flight and nothing delivered "
                f"for {stalled:.0f} s"
            )
        if self.outcomes.unsendable:
            reasons.append(
                f"{self.outcomes.unsendable} dead letter(s) refused by a sink: left uncommitted "
                "(see log)"
            )
        return reasons

    def _stalled_for(self) -> float | None:
        if self.in_flight == 0:
            return None
        quiet = self.clock() - max(self._delivery.last_confirmed, self.admission.busy_since)
        return quiet if quiet > self._stall_timeout_s else None

    def update_gauges(self) -> None:
        """Refresh queue depth gauges (called by the daemon's main loop)."""
        self.metrics.queue_depth.labels(queue="frames").set(self.frames.qsize())
        self.metrics.queue_depth.labels(queue="postprocess").set(self._post.qsize())
        self.metrics.queue_depth.labels(queue="in_flight").set(self.in_flight)
        self.metrics.queue_depth.labels(queue="retry").set(self._delivery.retrying)
        self.metrics.in_flight_bytes.set(self.admission.bytes)

    # --- model and postprocess -------------------------------------------------------------

    def _inference_loop(self) -> None:
        schedule = Scheduler(
            lambda meta: self.recipes.deadline_at(meta.camera_id, meta.captured_at),
            clock=self.clock,
        )
        lookahead = _LOOKAHEAD_BATCHES * self._batcher.config.max_batch_size
        try:
            while not self._stop_model.is_set():
                if not schedule:  # nothing in hand: wait for a batch, as full as it gets
                    batch = self._batcher.next_batch(self._input_closed)
                    if not batch:
                        return
                elif schedule.frames < lookahead:
                    # Work in hand: take what arrived meanwhile without waiting, so that a
                    # frame due sooner runs before the next chunk of a tiled frame.
                    batch = self._batcher.ready_batch()
                else:
                    batch = []
                self._schedule(schedule, batch)
                finished = schedule.step()
                self._shadow_lane.skipped(schedule.take_skipped())
                if finished is not None:
                    self._finish(schedule, finished)
        finally:
            self._post.put(None)

    def _schedule(self, schedule: Scheduler, batch: list[Frame]) -> None:
        if not batch:
            return
        routed, orphans = self._router.route(batch)
        # Its recipe names a model no longer served, or its ROI does not fit it.
        for orphan in orphans:
            self.outcomes.failed(orphan.frame, FailureStage.INFERENCE, orphan.kind, orphan.error)
        for group in routed:
            schedule.add(group)

    def _finish(self, schedule: Scheduler, done: Finished) -> None:
        if done.shadow:  # its frames' result comes from their served job, held till now
            self._shadow_lane.finished(done)
            return
        frames, output = done.group.frames, done.output
        if isinstance(output, Exception):
            log.error("inference failed for a batch of %d", len(frames), exc_info=output)
            for frame in frames:
                self.outcomes.failed(
                    frame, FailureStage.INFERENCE, ErrorType.INFERENCE_ERROR, output
                )
            return
        group = done.group
        inferred = Inferred(
            frames, output, done.seconds, done.finished, group.postprocessors, group.views
        )
        self._shadow_lane.served(schedule, inferred)

    def _postprocess_loop(self) -> None:
        while (item := self._post.get()) is not None:
            infer_ms = item.seconds * 1e3
            for i, frame in enumerate(item.frames):
                try:
                    inspection = self._postprocess_one(frame, item, i, infer_ms)
                except Exception as exc:
                    log.exception("postprocess failed for %s", for_log(frame.meta.frame_id))
                    self.outcomes.failed(
                        frame, FailureStage.POSTPROCESS, ErrorType.POSTPROCESS_ERROR, exc
                    )
                    continue
                self.outcomes.result(inspection)

    def _postprocess_one(self, frame: Frame, item: Inferred, i: int, infer_ms: float) -> Inspection:
        t0 = self.clock()
        meta = frame.meta
        postprocessor = item.postprocessors[i]
        decision = postprocessor.decide(
            item.output.maps[i],
            float(item.output.scores[i]),
            meta.image_size,
            None if item.views is None else item.views[i],
        )
        post_ms = (self.clock() - t0) * 1e3
        waited = item.finished - item.seconds - meta.received_monotonic
        queue_ms = max(0.0, waited * 1e3)
        latency = Latency(
            decode=meta.decode_ms,
            queue=queue_ms,
            inference=infer_ms,
            postprocess=post_ms,
            total=meta.decode_ms + (self.clock() - meta.received_monotonic) * 1e3,
        )
        late = self.recipes.late(meta.camera_id, meta.captured_at)
        shadow = item.shadow(i)
        message = postprocessor.to_message(meta, decision, latency, late, shadow)
        if shadow is not None:
            self.shadows.record(meta.camera_id, message.model.name, decision.is_anomalous, shadow)
        m = self.metrics
        camera = m.camera(meta.camera_id)
        m.stage_seconds.labels(stage="queue").observe(queue_ms / 1e3)
        m.stage_seconds.labels(stage="postprocess").observe(post_ms / 1e3)
        m.anomaly_score.labels(camera=camera).observe(decision.score)
        calibration, model = postprocessor.calibration, postprocessor.model.checkpoint_sha256
        self._drift.observe(camera, model, calibration.good_score_quintiles, decision.raw_score)
        if decision.is_anomalous:
            m.anomalies.labels(camera=camera).inc()
            m.defects.labels(camera=camera).inc(len(decision.defects))
        return Inspection(message, frame, decision.heatmap, decision.mask)


def _default_ids(sources: Sequence[Source]) -> list[str]:
    """Each source's name, numbered from the second of the same name on (``kafka``, ``kafka-2``)."""
    seen: dict[str, int] = {}
    ids = []
    for source in sources:
        seen[source.name] = seen.get(source.name, 0) + 1
        n = seen[source.name]
        ids.append(source.name if n == 1 else f"{source.name}-{n}")
    return ids
