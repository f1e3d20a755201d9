"""Wires the stages: sources -> batcher -> model worker -> postprocess -> sinks.

Threads and bounded queues:

- one thread per source polls it and admits frames into the frames queue; dead letters go
  straight to the sinks. Admission takes a slot of a global in-flight bound, so a slow sink
  pushes back all the way: the source pauses (Kafka pauses its partitions) instead of memory
  growing;
- an inference thread batches frames and runs the model;
- a postprocess thread turns raw maps into results and hands them to every sink.

A frame is acked to its source (so its Kafka offset may be committed) only when every sink has
confirmed delivery. Shutdown is :meth:`Pipeline.stop_fetching`, :meth:`Pipeline.wait_drained`,
:meth:`Pipeline.close`.
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

from inspector.batcher import Batcher
from inspector.config import BatcherConfig
from inspector.messages import Latency
from inspector.metrics import Metrics
from inspector.postprocess import Postprocessor
from inspector.records import DeadLetter, Frame, Inspection, ScoredBatch
from inspector.sinks.base import Sink
from inspector.sources.base import Source
from inspector.worker import ModelWorker

log = logging.getLogger(__name__)

#: How often a blocked source thread still polls its source (commits, group membership).
_KEEPALIVE_S = 1.0


@dataclass(frozen=True)
class _Inferred:
    frames: list[Frame]
    output: ScoredBatch
    started: float
    finished: float
    # The postprocessor of the model that inferred the batch: after a reload, batches still
    # in flight keep the calibration that matches their maps.
    postprocessor: Postprocessor


class Pipeline:
    """The running stages of one daemon.

    Args:
        sources: Frame sources, one thread each.
        batcher: Batch size/wait and queue capacity.
        worker: Warmed-up model worker.
        postprocessor: Turns raw maps into results.
        sinks: Result destinations; a frame is acked when all of them confirmed.
        metrics: Metrics registry wrapper.
        max_in_flight: Frames admitted but not yet delivered, at most (default: 4 queues' worth).
        clock: Monotonic clock.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        batcher: BatcherConfig,
        worker: ModelWorker,
        postprocessor: Postprocessor,
        sinks: Sequence[Sink],
        metrics: Metrics,
        *,
        max_in_flight: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sources = list(sources)
        self.sinks = list(sinks)
        self._model = (worker, postprocessor)
        self.metrics = metrics
        self.clock = clock
        self.frames: queue.Queue[Frame] = queue.Queue(batcher.queue_size)
        self._post: queue.Queue[_Inferred | None] = queue.Queue(max(2, batcher.queue_size // 8))
        self._batcher = Batcher(self.frames, batcher, metrics, clock=clock)
        self._slots = threading.Semaphore(max_in_flight or 4 * batcher.queue_size)
        self._lock = threading.Lock()
        self._in_flight = 0
        self._stop_fetch = threading.Event()  # sources take no new frames
        self._stop_all = threading.Event()  # source threads commit, close and end
        self._input_closed = threading.Event()  # no frame will enter the frames queue again
        self._idle: list[threading.Event] = [threading.Event() for _ in self.sources]
        self._threads: list[threading.Thread] = []
        # Dead letters for refused results are sent from here, not from the sink's callback:
        # that may run on the Kafka client's I/O thread, which must never block on a send.
        self._redeliver = ThreadPoolExecutor(1, thread_name_prefix="inspector-redeliver")
        self.fatal: BaseException | None = None

    @property
    def worker(self) -> ModelWorker:
        """The model worker in use."""
        return self._model[0]

    @property
    def postprocessor(self) -> Postprocessor:
        """The postprocessor of the model in use."""
        return self._model[1]

    def swap_model(self, worker: ModelWorker, postprocessor: Postprocessor) -> None:
        """Use another (warmed-up) model from the next batch on, without stopping.

        Batches already inferred are post-processed with the model that inferred them.
        """
        self._model = (worker, postprocessor)  # one reference assignment: atomic

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start every thread (sources and sinks must be set up, the worker warmed)."""
        for i, source in enumerate(self.sources):
            self._spawn(f"source-{source.name}", functools.partial(self._source_loop, i, source))
        self._spawn("inference", self._inference_loop)
        self._spawn("postprocess", self._postprocess_loop)

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except BaseException as exc:  # a bug in a stage must stop the daemon, loudly
                log.exception("pipeline thread %s died", name)
                self.fatal = exc
                self._stop_fetch.set()

        thread = threading.Thread(target=run, name=f"inspector-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop_fetching(self) -> None:
        """Take no new frames; frames already admitted still run to delivery."""
        self._stop_fetch.set()

    @property
    def in_flight(self) -> int:
        """Frames and dead letters admitted but not yet delivered."""
        return self._in_flight

    @property
    def finished(self) -> bool:
        """All sources are exhausted or stopped and everything admitted was delivered."""
        return self._input_closed.is_set() and self._in_flight == 0

    def wait_drained(self, timeout: float) -> bool:
        """Wait until every admitted frame is delivered; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._input_closed.is_set() and self._in_flight == 0:
                return True
            time.sleep(0.02)
        return False

    def close(self, timeout: float = 10.0) -> None:
        """Stop every thread; sources commit what was delivered and close, sinks flush."""
        self._stop_fetch.set()
        self._stop_all.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._redeliver.shutdown(wait=False)  # drained frames have their dead letters sent
        for sink in self.sinks:
            try:
                sink.flush(max(0.1, deadline - time.monotonic()))
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", sink.name)

    def readiness_reasons(self) -> list[str]:
        """Why the pipeline is not ready (empty when ready)."""
        reasons = [] if self.worker.ready else ["model not warmed up"]
        reasons += [f"source {s.name} not connected" for s in self.sources if not s.ready()]
        reasons += [f"sink {s.name} not connected" for s in self.sinks if not s.ready()]
        if self.fatal is not None:
            reasons.append(f"pipeline failed: {self.fatal!r}")
        return reasons

    def update_gauges(self) -> None:
        """Refresh queue depth gauges (called by the daemon's main loop)."""
        self.metrics.queue_depth.labels(queue="frames").set(self.frames.qsize())
        self.metrics.queue_depth.labels(queue="postprocess").set(self._post.qsize())
        self.metrics.queue_depth.labels(queue="in_flight").set(self._in_flight)

    # --- sources ----------------------------------------------------------------------------

    def _source_loop(self, index: int, source: Source) -> None:
        pending: deque[Frame | DeadLetter] = deque()
        try:
            while not self._stop_all.is_set():
                if self._stop_fetch.is_set() or (source.exhausted and not pending):
                    self._mark_idle(index)
                    source.pause()
                    source.poll(0.1)  # still commits acked offsets on this thread
                    continue
                if not pending:
                    pending.extend(source.poll(0.1))
                while pending and not self._stop_fetch.is_set():
                    if not self._admit(source, pending[0], pending):
                        break
                    pending.popleft()
            self._mark_idle(index)
        finally:
            try:
                source.drain(5.0)
            finally:
                source.close()

    def _mark_idle(self, index: int) -> None:
        self._idle[index].set()
        if all(e.is_set() for e in self._idle):
            self._input_closed.set()

    def _admit(
        self, source: Source, item: Frame | DeadLetter, pending: deque[Frame | DeadLetter]
    ) -> bool:
        paused = False
        last_poll = time.monotonic()
        while not self._slots.acquire(timeout=0.1):
            if self._stop_fetch.is_set():
                if paused:
                    source.resume()
                return False
            if not paused:
                source.pause()
                paused = True
            if time.monotonic() - last_poll > _KEEPALIVE_S:
                pending.extend(source.poll(0))
                last_poll = time.monotonic()
        with self._lock:
            self._in_flight += 1
        if isinstance(item, DeadLetter):
            self._deliver_dead_letter(item)
        else:
            while True:
                try:
                    self.frames.put(item, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop_all.is_set():  # the model thread is gone: nothing will take it
                        self._release()
                        return False
                    if not paused:
                        source.pause()
                        paused = True
        if paused:
            source.resume()
        return True

    # --- model and postprocess -------------------------------------------------------------

    def _inference_loop(self) -> None:
        try:
            while True:
                batch = self._batcher.next_batch(self._input_closed)
                if not batch:
                    return
                started = self.clock()
                worker, postprocessor = self._model
                try:
                    output = worker.score([f.image for f in batch])
                except Exception as exc:
                    log.exception("inference failed for a batch of %d", len(batch))
                    for frame in batch:
                        self._fail_frame(frame, "inference", "inference_error", exc)
                    continue
                self._post.put(_Inferred(batch, output, started, self.clock(), postprocessor))
        finally:
            self._post.put(None)

    def _postprocess_loop(self) -> None:
        while (item := self._post.get()) is not None:
            infer_ms = (item.finished - item.started) * 1e3
            for i, frame in enumerate(item.frames):
                try:
                    inspection = self._postprocess_one(frame, item, i, infer_ms)
                except Exception as exc:
                    log.exception("postprocess failed for %s", frame.meta.frame_id)
                    self._fail_frame(frame, "postprocess", "postprocess_error", exc)
                    continue
                self._deliver(inspection)

    def _postprocess_one(
        self, frame: Frame, item: _Inferred, i: int, infer_ms: float
    ) -> Inspection:
        t0 = self.clock()
        meta = frame.meta
        decision = item.postprocessor.decide(
            item.output.maps[i], float(item.output.scores[i]), meta.image_size
        )
        post_ms = (self.clock() - t0) * 1e3
        queue_ms = max(0.0, (item.started - meta.received_monotonic) * 1e3)
        latency = Latency(
            decode=meta.decode_ms,
            queue=queue_ms,
            inference=infer_ms,
            postprocess=post_ms,
            total=meta.decode_ms + (self.clock() - meta.received_monotonic) * 1e3,
        )
        message = item.postprocessor.to_message(meta, decision, latency)
        m, camera = self.metrics, meta.camera_id
        m.stage_seconds.labels(stage="queue").observe(queue_ms / 1e3)
        m.stage_seconds.labels(stage="postprocess").observe(post_ms / 1e3)
        m.anomaly_score.labels(camera=camera).observe(decision.score)
        if decision.is_anomalous:
            m.anomalies.labels(camera=camera).inc()
            m.defects.labels(camera=camera).inc(len(decision.defects))
        return Inspection(message, frame, decision.heatmap, decision.mask)

    # --- delivery ----------------------------------------------------------------------------

    def _fail_frame(self, frame: Frame, stage: str, kind: str, exc: BaseException) -> None:
        self._deliver_dead_letter(_dead_letter(frame, stage, kind, _describe(exc)))

    def _deliver(self, inspection: Inspection) -> None:
        frame = inspection.frame

        def finished(errors: list[BaseException]) -> None:
            if errors:
                # A result a sink refuses (too large, rejected) would otherwise be retried
                # forever and hold back its partition's commits: it becomes a dead letter with
                # the original message. If that fails too (broker down), nothing is acked and
                # the frame comes again after a restart.
                reason = "; ".join(_describe(e) for e in errors)
                log.error("delivery of %s failed: %s", frame.meta.frame_id, reason)
                letter = _dead_letter(
                    frame, "publish", "publish_failed", f"result not delivered: {reason}"
                )
                self._redeliver.submit(self._deliver_dead_letter, letter)
                return  # the dead letter's delivery releases the slot
            frame.ack()
            self.metrics.frames_processed.labels(camera=frame.meta.camera_id).inc()
            self.metrics.end_to_end_seconds.observe(self.clock() - frame.meta.received_monotonic)
            self._release()

        self._fan_out(lambda sink, done: sink.publish(inspection, done), finished)

    def _deliver_dead_letter(self, letter: DeadLetter) -> None:
        self.metrics.frames_failed.labels(stage=letter.stage, reason=letter.error_type).inc()

        def finished(errors: list[BaseException]) -> None:
            if errors:
                self._delivery_failed(f"dead letter ({letter.reason})", errors)
            else:
                letter.ack()
            self._release()

        self._fan_out(lambda sink, done: sink.publish_dead_letter(letter, done), finished)

    def _fan_out(
        self,
        send: Callable[[Sink, Callable[[BaseException | None], None]], None],
        finished: Callable[[list[BaseException]], None],
    ) -> None:
        remaining = [len(self.sinks)]
        errors: list[BaseException] = []
        lock = threading.Lock()

        def done(exc: BaseException | None) -> None:
            with lock:
                if exc is not None:
                    errors.append(exc)
                remaining[0] -= 1
                last = remaining[0] == 0
            if last:
                finished(errors)

        if not self.sinks:
            finished(errors)
            return
        for sink in self.sinks:
            try:
                send(sink, done)
            except Exception as exc:  # a sink must not take the pipeline down
                log.exception("sink %s raised", sink.name)
                done(exc)

    def _delivery_failed(self, what: str, errors: list[BaseException]) -> None:
        # Not acked: its offset stays uncommitted, so the frame is delivered again after a
        # restart (at least once) rather than lost.
        log.error("delivery of %s failed: %s", what, "; ".join(repr(e) for e in errors))
        self.metrics.frames_failed.labels(stage="publish", reason=type(errors[0]).__name__).inc()

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _dead_letter(frame: Frame, stage: str, kind: str, reason: str) -> DeadLetter:
    """A frame that failed after decoding, with its original message (Kafka input)."""
    return DeadLetter(
        reason=reason,
        error_type=kind,
        stage=stage,
        camera_id=frame.meta.camera_id,
        raw=frame.raw,
        failed_at=datetime.now(UTC).isoformat(),
        ack=frame.ack,
    )
