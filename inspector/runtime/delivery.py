"""Delivery of results and dead letters to every sink, retried until each sink has it.

A frame is done when every sink confirmed its result (or its dead letter). A sink that fails
for a reason that may pass (broker down, a producer being rebuilt, a full disk) gets the same
item again after a backoff, for as long as it takes: the frame keeps its in-flight slot and its
offset stays uncommitted, so the source pauses rather than the frame being forgotten. Only a
sink's *refusal* of a record (:class:`~inspector.errors.RecordRefusedError`: too large,
invalid) ends the attempt, so the pipeline can dead-letter the frame instead. Sinks that
already confirmed are not asked again (no duplicates in the others).

Retries and follow-up sends run on one thread of this module, never on a sink's callback thread
(that may be the Kafka client's I/O thread, which must never block on a send).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from inspector.dead_letters import DEAD_LETTER_REFUSED, ErrorType, FailureStage
from inspector.errors import RecordRefusedError
from inspector.runtime.admission import footprint
from inspector.runtime.ids import for_log
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import Backoff, RateLimitedLog
from inspector.runtime.records import DeadLetter, Frame, Inspection
from inspector.runtime.sinks.base import Sink

log = logging.getLogger(__name__)

#: Called once per item when every sink took or refused it, with the refusals (empty: done).
OnSettled = Callable[[list[RecordRefusedError]], None]

#: Repeat the "retrying" warning at most this often (seconds).
_WARN_EVERY_S = 10.0


@dataclass
class _Fanout:
    """One item on its way to every sink."""

    remaining: int
    on_settled: OnSettled
    refusals: list[RecordRefusedError] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Delivery:
    """Fans items out to sinks and retries failed sinks with exponential backoff.

    Args:
        sinks: Every sink; each item goes to all of them.
        metrics: ``inspector_delivery_retries_total`` counts the retries.
        first_retry_s: First backoff after a failure.
        max_retry_s: Longest backoff.
        clock: Monotonic clock.

    Attributes:
        last_confirmed: Monotonic time a sink last confirmed an item (start time before that).
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        metrics: Metrics,
        *,
        first_retry_s: float = 0.25,
        max_retry_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics
        self.first_retry_s = first_retry_s
        self.max_retry_s = max_retry_s
        self.clock = clock
        self.last_confirmed = clock()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._retrying = 0
        self._warnings = RateLimitedLog(log, _WARN_EVERY_S, clock)
        self._backoff = Backoff(first_retry_s, max_retry_s)
        self._thread = threading.Thread(target=self._run, name="inspector-delivery", daemon=True)
        self._thread.start()

    @property
    def retrying(self) -> int:
        """Sends waiting for their retry."""
        return self._retrying

    def deliver(self, item: Inspection | DeadLetter, on_settled: OnSettled) -> None:
        """Send ``item`` to every sink; ``on_settled`` runs once all took or refused it."""
        fanout = _Fanout(len(self.sinks), on_settled)
        if not self.sinks:
            on_settled([])
            return
        for sink in self.sinks:
            self._send(sink, item, fanout, 0)

    def call_soon(self, action: Callable[[], None]) -> None:
        """Run ``action`` on the delivery thread (from a callback that must not block)."""
        self._schedule(0.0, action)

    def close(self) -> None:
        """Stop retrying; sends still waiting are abandoned (their frames stay uncommitted)."""
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify_all()
        self._thread.join(1.0)

    # --- internals ------------------------------------------------------------------------

    def _send(
        self, sink: Sink, item: Inspection | DeadLetter, fanout: _Fanout, attempt: int
    ) -> None:
        kind = "result" if isinstance(item, Inspection) else "dead_letter"
        answered = threading.Event()  # a sink must call done once; a second call is ignored

        def done(exc: BaseException | None) -> None:
            if answered.is_set():
                return
            answered.set()
            if exc is None:
                self.last_confirmed = self.clock()
                self._settle(fanout, None)
            elif isinstance(exc, RecordRefusedError):
                self._settle(fanout, exc)
            else:
                self._retry(sink, item, fanout, attempt, kind, exc)

        try:
            if isinstance(item, Inspection):
                sink.publish(item, done)
            else:
                sink.publish_dead_letter(item, done)
        except Exception as exc:  # a sink must not take the pipeline down: treat as a failure
            log.exception("sink %s raised while publishing", sink.name)
            done(exc)

    def _retry(
        self,
        sink: Sink,
        item: Inspection | DeadLetter,
        fanout: _Fanout,
        attempt: int,
        kind: str,
        exc: BaseException,
    ) -> None:
        delay = self._backoff.after(attempt)
        self.metrics.delivery_retries.labels(kind=kind).inc()
        self._warnings.warning(
            "sink %s failed to take a %s (%s: %s); retrying every %.1f s at most, the frame "
            "stays uncommitted meanwhile",
            sink.name,
            kind.replace("_", " "),
            type(exc).__name__,
            exc,
            self.max_retry_s,
        )
        with self._cond:
            self._retrying += 1

        def again() -> None:
            with self._cond:
                self._retrying -= 1
            self._send(sink, item, fanout, attempt + 1)

        self._schedule(delay, again)

    def _settle(self, fanout: _Fanout, refusal: RecordRefusedError | None) -> None:
        with fanout.lock:
            if refusal is not None:
                fanout.refusals.append(refusal)
            fanout.remaining -= 1
            last = fanout.remaining == 0
        if last:
            fanout.on_settled(fanout.refusals)

    def _schedule(self, delay: float, action: Callable[[], None]) -> None:
        with self._cond:
            if self._closed:
                return
            heapq.heappush(self._heap, (self.clock() + delay, next(self._seq), action))
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    wait = self._heap[0][0] - self.clock() if self._heap else None
                    if wait is not None and wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return
                _, _, action = heapq.heappop(self._heap)
            try:
                action()
            except Exception:  # one item's follow-up must not end every other's retries
                log.exception("a delivery follow-up failed")


class Outcomes:
    """How each admitted item ends: acked once delivered, dead-lettered when refused.

    Args:
        delivery: Sends to the sinks (retrying failures).
        metrics: Counts processed and failed frames.
        free: Gives an item's place in the in-flight bounds back (its bytes as argument).
        clock: Monotonic clock (end-to-end time).

    Attributes:
        results_delivered: Results every sink confirmed.
        dead_letters_delivered: Dead letters every sink confirmed.
        unsendable: Dead letters refused for good: left uncommitted (they come again after a
            restart) and reported until then.
    """

    def __init__(
        self,
        delivery: Delivery,
        metrics: Metrics,
        free: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.delivery = delivery
        self.metrics = metrics
        self.free = free
        self.clock = clock
        self._lock = threading.Lock()
        self.results_delivered = 0
        self.dead_letters_delivered = 0
        self.unsendable = 0

    def failed(
        self, frame: Frame, stage: FailureStage, kind: ErrorType, exc: BaseException
    ) -> None:
        """A frame that failed after admission (inference, post-processing): dead-letter it."""
        letter = dead_letter_of(frame, stage, kind, f"{type(exc).__name__}: {exc}")
        self.dead_letter(letter, footprint(frame))

    def result(self, inspection: Inspection) -> None:
        """Deliver a frame's result; ack the frame once every sink has it."""
        frame = inspection.frame
        nbytes = footprint(frame)

        def settled(refusals: list[RecordRefusedError]) -> None:
            if refusals:
                # A result a sink refuses for good (too large, invalid) becomes a dead letter
                # with the original message, instead of holding back its partition's commits.
                reason = "; ".join(str(e) for e in refusals)
                log.error("result of %s refused: %s", for_log(frame.meta.frame_id), reason)
                letter = dead_letter_of(
                    frame,
                    FailureStage.PUBLISH,
                    ErrorType.PUBLISH_REFUSED,
                    f"result not delivered: {reason}",
                )
                # On the delivery thread: this may run on a sink's I/O thread.
                self.delivery.call_soon(lambda: self.dead_letter(letter, nbytes))
                return
            frame.ack()
            with self._lock:
                self.results_delivered += 1
            camera = self.metrics.camera(frame.meta.camera_id)
            self.metrics.frames_processed.labels(camera=camera).inc()
            if inspection.message.late:  # counted with the delivery, so late/processed is a ratio
                self.metrics.results_late.labels(camera=camera).inc()
            self.metrics.end_to_end_seconds.observe(self.clock() - frame.meta.received_monotonic)
            self.free(nbytes)

        self.delivery.deliver(inspection, settled)

    def dead_letter(self, letter: DeadLetter, nbytes: int) -> None:
        """Deliver a dead letter holding ``nbytes`` of the bounds; ack it once delivered."""
        self.metrics.frames_failed.labels(stage=letter.stage, reason=letter.error_type).inc()

        def settled(refusals: list[RecordRefusedError]) -> None:
            if refusals:
                # Even the dead letter (whose payload and headers are dropped when too large) is
                # refused: left uncommitted, it comes again after a restart; counted until then.
                log.error(
                    "dead letter of %s refused, left uncommitted: %s",
                    _coordinates(letter),
                    "; ".join(str(e) for e in refusals),
                )
                self.metrics.frames_failed.labels(
                    stage=FailureStage.PUBLISH, reason=DEAD_LETTER_REFUSED
                ).inc()
                with self._lock:
                    self.unsendable += 1
            else:
                letter.ack()
                with self._lock:
                    self.dead_letters_delivered += 1
            self.free(nbytes)

        self.delivery.deliver(letter, settled)


def _coordinates(letter: DeadLetter) -> str:
    raw = letter.raw
    return f"{raw.topic}:{raw.partition}:{raw.offset}" if raw is not None else "(local input)"


def dead_letter_of(frame: Frame, stage: FailureStage, kind: ErrorType, reason: str) -> DeadLetter:
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
