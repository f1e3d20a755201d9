"""Results and dead letters to Kafka.

Results go to ``kafka.results_topic`` keyed by camera id (one camera's results stay in order
on one partition); dead letters go to ``kafka.dlq_topic`` with the original key, value and
headers plus the reason, so they can be replayed once the cause is fixed. The producer is
idempotent with ``acks=all``: a frame counts as delivered (its offset may be committed) only
when every in-sync replica has its result.

Where the sink stands (:mod:`~inspector.runtime.kafka.health`) is learnt from delivery
outcomes, from the producer's metadata answers and from a watch thread that looks at the
producer once a second (:meth:`KafkaSink.check`): it replaces a producer whose sender thread
is gone, notes lost connections, and while the brokers are lost asks for metadata, so that
``/readyz`` comes back as soon as a broker answers, with traffic or without.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    InvalidTimestampError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from inspector.errors import InspectorError, RecordRefusedError
from inspector.runtime.config import KafkaConfig
from inspector.runtime.kafka.health import Link
from inspector.runtime.kafka.produced import Record, dead_letter_record, result_record
from inspector.runtime.kafka.producer import ProducerKeeper
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import RateLimitedLog
from inspector.runtime.records import DeadLetter, Inspection
from inspector.runtime.sinks.base import DoneFn, Sink

log = logging.getLogger(__name__)

#: Errors about one record (too large, invalid): sending it again cannot help.
_REFUSALS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    InvalidTimestampError,
    CorruptRecordError,
)
#: How often the watch thread looks at the producer (seconds).
WATCH_INTERVAL_S = 1.0


@dataclass(frozen=True)
class _Pending:
    """A record sent and not yet confirmed or failed."""

    sent_at: float
    topic: str
    generation: int
    done: DoneFn


class KafkaSink(Sink):
    """Publishes results and dead letters with an idempotent ``acks=all`` producer.

    ``done`` is called exactly once per record: from kafka-python's sender thread once the
    broker acknowledged the record (or it finally failed after retries within the delivery
    timeout), at once when the record cannot be sent at all (too large, producer closed), or
    by the sink when the producer it was sent with was replaced (its sender thread died, it
    broke) or closed before the broker confirmed it; the delivery layer then sends it again.
    ``done`` may run while the sink replaces its producer, so it must not publish to this sink
    itself (the delivery layer never does: its retries run on its own thread).

    Args:
        kafka: Connection, topics, size limit, compression and batching.
        metrics: Where publish latency and producer rebuilds are recorded.
        producer_factory: Builds the producer from keyword settings (default
            ``kafka.KafkaProducer``); tests inject fakes.
        clock: Monotonic clock for publish latency, backoff and readiness.
        watch_interval_s: How often the watch thread calls :meth:`check` (``None``: no thread;
            tests call :meth:`check` themselves).
    """

    name = "kafka"

    def __init__(
        self,
        kafka: KafkaConfig,
        metrics: Metrics,
        *,
        producer_factory: Callable[..., KafkaProducer] | None = None,
        clock: Callable[[], float] = time.monotonic,
        watch_interval_s: float | None = WATCH_INTERVAL_S,
    ) -> None:
        self.kafka = kafka
        self.metrics = metrics
        self._clock = clock
        self._keeper = ProducerKeeper(
            kafka,
            metrics,
            producer_factory or KafkaProducer,
            on_replaced=self._fail_replaced,
            clock=clock,
            sink=self.name,
        )
        # Sends the broker has not confirmed yet, by token. The client retries a partition
        # without a leader until the delivery timeout (minutes) without failing anything, so
        # readiness looks at the age of the oldest one.
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._live = 0  # records of producers below this generation are failed by the sink
        self._tokens = itertools.count()
        self._watch_interval_s = watch_interval_s
        self._stop_watch = threading.Event()
        self._watch_thread: threading.Thread | None = None
        self._watch_errors = RateLimitedLog(log, 60.0, clock)

    @property
    def idempotent(self) -> bool:
        """Whether the producer is idempotent (``False`` after a broker refused it)."""
        return self._keeper.idempotent

    def producer_settings(self, *, idempotent: bool = True) -> dict[str, Any]:
        """Keyword settings for ``KafkaProducer`` (secrets included: never log them)."""
        return self._keeper.settings(idempotent=idempotent)

    def setup(self) -> None:
        """Connect the producer and start watching it.

        Raises:
            ConfigError: The compression codec's library is missing.
            InspectorError: No broker answered within kafka-python's bootstrap timeout.
        """
        self._keeper.ensure()
        if self._watch_interval_s is not None and self._watch_thread is None:
            self._watch_thread = threading.Thread(
                target=self._watch, name="inspector-kafka-sink-watch", daemon=True
            )
            self._watch_thread.start()

    # --- health -------------------------------------------------------------------------------

    def check(self) -> None:
        """One look at the producer: what the watch thread does every ``watch_interval_s``.

        Fails the records replaced producers still hold; replaces a producer whose sender
        thread is gone, or a broken one once its backoff allows; notes lost and returning
        connections; and while the brokers are lost asks for metadata, so that a broker's
        answer makes the sink ready again without waiting for a delivery.
        """
        self._fail_replaced(None)
        self._keeper.check()

    def _watch(self) -> None:
        interval = self._watch_interval_s or WATCH_INTERVAL_S
        while not self._stop_watch.wait(interval):
            try:
                self.check()
            except Exception as exc:  # the watch must outlive a surprise: say it, go on
                self._watch_errors.error("kafka sink: the health check failed: %r", exc)

    def ready(self) -> bool:
        """Connected and the last delivery did not fail (safe from any thread)."""
        return self.unready_reason() is None

    def unready_reason(self) -> str | None:
        """Why the sink cannot deliver now (``None`` when it can); changes nothing."""
        where = f"kafka sink ({self.kafka.bootstrap_servers})"
        reason = self._keeper.reason(where)
        if reason is not None:
            return reason
        with self._pending_lock:
            pending = [(p.sent_at, p.topic) for p in self._pending.values()]
        if not pending:
            return None
        sent_at, topic = min(pending)
        waited = self._clock() - sent_at
        if waited * 1000 < self.kafka.publish_stall_ms:
            return None
        return (
            f"{where}: {len(pending)} record(s) unconfirmed, the oldest to {topic} for "
            f"{waited:.0f} s (no leader for its partition? kafka.publish_stall_ms); retrying, "
            "their frames stay uncommitted"
        )

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Send one result (JSON, key = camera id); ``done`` once the broker has it."""
        self._send(self.kafka.results_topic, result_record(inspection), done)

    def publish_dead_letter(self, letter: DeadLetter, done: DoneFn) -> None:
        """Copy the original message to the DLQ topic with the failure in its headers.

        See :func:`~inspector.runtime.kafka.produced.dead_letter_record` for the headers
        and what is left out of a record over ``kafka.max_message_bytes``.
        """
        record = dead_letter_record(letter, self.kafka.max_message_bytes)
        self._send(self.kafka.dlq_topic, record, done)

    def _send(self, topic: str, record: Record, done: DoneFn) -> None:
        started = self._clock()
        try:
            producer, generation = self._keeper.ensure()
        except Exception as exc:  # closed, rebuilding, no broker: the delivery layer retries
            done(self._note_failure(exc, topic, None))
            return
        token = next(self._tokens)
        with self._pending_lock:
            self._pending[token] = _Pending(started, topic, generation, done)
        try:
            future = producer.send(
                topic, value=record.value, key=record.key, headers=record.headers
            )
        except Exception as exc:  # too large, closed, no metadata within max_block_ms...
            if self._settle(token) is not None:
                done(self._note_failure(exc, topic, generation))
            return

        def delivered(_: Any) -> None:
            if self._settle(token) is None:
                return  # already failed by the sink: its producer was replaced
            self._keeper.delivered(generation)
            self.metrics.stage_seconds.labels(stage="publish").observe(self._clock() - started)
            done(None)

        def failed(exc: BaseException) -> None:
            if self._settle(token) is not None:
                done(self._note_failure(exc, topic, generation))

        future.add_callback(delivered)
        future.add_errback(failed)

    def _settle(self, token: int) -> _Pending | None:
        """Take a record off the pending ones; ``None`` if it was settled already."""
        with self._pending_lock:
            return self._pending.pop(token, None)

    def _fail_replaced(self, live: int | None) -> None:
        """Fail the records of producers below generation ``live`` (``None``: as before).

        Their producer was replaced or closed and will never confirm them; a callback of
        theirs that comes after all the same finds them settled and is ignored.
        """
        with self._pending_lock:
            if live is not None:
                self._live = max(self._live, live)
            stale = [t for t, p in self._pending.items() if p.generation < self._live]
            entries = [self._pending.pop(t) for t in stale]
        for entry in entries:
            entry.done(
                InspectorError(
                    f"kafka sink: the producer this record to {entry.topic} was sent with was "
                    "replaced before the broker confirmed it; send it again"
                )
            )

    def _note_failure(
        self, exc: BaseException, topic: str, generation: int | None
    ) -> BaseException:
        """Note a failed send of producer ``generation``; returns the error for ``done``."""
        log.debug("kafka sink: delivery failed: %r", exc)
        if isinstance(exc, _REFUSALS):
            # About this record only: says nothing about the connection or the producer.
            refused = RecordRefusedError(f"{topic} refused the record: {type(exc).__name__}: {exc}")
            refused.__cause__ = exc
            return refused
        if generation is not None and not isinstance(exc, InspectorError):
            self._keeper.failed(exc, generation)  # ours (closed, rebuilding) say nothing new
        return exc

    # --- shutdown -----------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until every record sent so far is acknowledged; ``False`` on timeout."""
        return self._keeper.flush(timeout)

    def close(self) -> None:
        """Flush briefly and close; records still unacknowledged fail through their ``done``.

        Never waits for a connection attempt in progress (it may take ``request_timeout_ms``):
        that attempt finds the sink closed and closes what it built.
        """
        self._stop_watch.set()
        self._keeper.close()
        watch = self._watch_thread
        if watch is not None and watch is not threading.current_thread():
            watch.join(1.0)

    @property
    def link(self) -> Link:
        """The sink's state (for tests and diagnostics)."""
        return self._keeper.snapshot()[0].link
