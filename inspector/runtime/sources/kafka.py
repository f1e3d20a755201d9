"""Frames from a Kafka topic, committed at least once.

One record is one encoded image. Records are decoded on a small thread pool (OpenCV releases
the GIL) and handed out in offset order; records that cannot become a frame (empty, too large,
undecodable) become dead letters that keep the original message. Offsets are committed only
for records whose result or dead letter was acknowledged (:mod:`inspector.runtime.kafka.offsets`).

kafka-python's consumer is not thread-safe, so everything that uses it runs on the thread that
calls :meth:`KafkaSource.poll` (commits included); :meth:`~KafkaSource.pause`,
:meth:`~KafkaSource.resume` and the frames' acks only set flags and bookkeeping. The one
exception is the rebalance listener, which kafka-python 3 runs on its own IO thread: it commits
with the awaitable ``commit_async`` (a blocking call there would raise).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import CorruptRecordError, KafkaError
from kafka.structs import MemberState

from inspector.errors import BrokerUnavailableError, ConfigError, InspectorError
from inspector.runtime.config import KafkaConfig, KafkaSourceConfig
from inspector.runtime.kafka.assignment import AssignmentReadiness
from inspector.runtime.kafka.client_hooks import loop_sleep
from inspector.runtime.kafka.client_metrics import connection_count
from inspector.runtime.kafka.consumed import decode_values, to_item, wants_decoding
from inspector.runtime.kafka.consumer import (
    METADATA_MAX_AGE_MS,
    consumer_settings,
    partition_lags,
)
from inspector.runtime.kafka.fetch import (
    failing_partition,
    unreadable_record,
    within_budget,
)
from inspector.runtime.kafka.offsets import OffsetTracker
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import RateLimitedLog
from inspector.runtime.records import DeadLetter, Frame
from inspector.runtime.sources.base import Source

log = logging.getLogger(__name__)

#: Repeat "broker unreachable" warnings at most this often (seconds).
_LOG_EVERY_S = 30.0
#: How often a revocation looks whether its partitions' frames are delivered (seconds).
_SETTLE_POLL_S = 0.02


def _joining(consumer: Any) -> bool:
    """Whether the consumer is (re)joining its group (not yet assigned)."""
    try:
        return consumer.group_metadata().state != MemberState.STABLE  # type: ignore[no-any-return]
    except Exception:  # fakes without group metadata
        return False


class KafkaSource(Source):
    """Frames from Kafka topics with at-least-once offset commits.

    A new consumer group starts at the earliest offset, so frames sent before the first start
    are inspected. Headers ``frame_id``, ``camera_id`` and ``captured_at`` are optional
    (defaults: ``topic:partition:offset``, the key, the record timestamp).

    :meth:`ready` is ``True`` once the consumer is connected to a broker, its last poll did
    not fail, and its group has assigned it partitions: before that, frames would wait in the
    topic (:mod:`~inspector.runtime.kafka.assignment`). A member the group assigns
    nothing is ready as a standby after ``metadata_max_age`` plus ``kafka.session_timeout_ms``
    (time for a leader that did not know the topic yet to refresh and rebalance).

    Args:
        kafka: Connection, group, size limit and commit interval.
        config: Topics, decode threads and records per poll.
        metrics: Where frames, decode time and consumer lag are recorded.
        consumer_factory: Builds the consumer from keyword settings (default
            ``kafka.KafkaConsumer``); tests inject fakes.
        clock: Monotonic clock (commit interval, ``received_monotonic``).

    Attributes:
        tracker: Offsets handed out and acknowledged, per partition.
        topics: Topics consumed.
        assignment: Whether the group has assigned partitions yet (part of readiness).
    """

    name = "kafka"

    def __init__(
        self,
        kafka: KafkaConfig,
        config: KafkaSourceConfig,
        metrics: Metrics,
        *,
        consumer_factory: Callable[..., KafkaConsumer] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kafka = kafka
        self.config = config
        self.metrics = metrics
        self.topics: tuple[str, ...] = config.topics or (kafka.frames_topic,)
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._factory: Callable[..., KafkaConsumer] = consumer_factory or KafkaConsumer
        self._clock = clock
        self._consumer: KafkaConsumer | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._want_paused = False  # set from any thread, applied on the polling thread
        # Revoked by a rebalance in progress; not committed until the new assignment is known.
        self._limbo: set[TopicPartition] = set()
        self._limbo_lock = threading.Lock()
        self._ready = False
        self._closed = False
        self.assignment = AssignmentReadiness(
            self.topics,
            kafka.group_id,
            standby_after_s=(METADATA_MAX_AGE_MS + kafka.session_timeout_ms) / 1000,
            clock=clock,
        )
        self._last_commit = clock()
        self._warnings = RateLimitedLog(log, _LOG_EVERY_S, clock)
        self._jpeg_device = torch.device("cuda") if config.decode_device == "cuda" else None

    # --- connection ---------------------------------------------------------------------------

    def consumer_settings(self) -> dict[str, Any]:
        """Keyword settings for ``KafkaConsumer`` (secrets included: never log them)."""
        return consumer_settings(self.kafka, self.config)

    def setup(self) -> None:
        """Connect and subscribe (the group is joined by the first polls).

        Raises:
            InspectorError: No broker answered within kafka-python's bootstrap timeout.
        """
        if self._consumer is not None:
            return
        if self._jpeg_device is not None and not torch.cuda.is_available():
            raise ConfigError("sources[kafka].decode_device: cuda asked for but no CUDA GPU")
        try:
            consumer = self._factory(**self.consumer_settings())
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailableError(
                f"kafka source: cannot connect to {self.kafka.bootstrap_servers} "
                f"(kafka.bootstrap_servers): {exc!r}"
            ) from exc
        if self._closed:  # closed while the constructor looked for a broker (SIGTERM at start)
            consumer.close(autocommit=False)
            raise InspectorError("kafka source is closed")
        consumer.subscribe(topics=list(self.topics), listener=_RebalanceListener(self))
        self._consumer = consumer
        self._executor = ThreadPoolExecutor(
            self.config.decode_threads, thread_name_prefix="inspector-decode"
        )
        self._ready = True
        log.info("kafka source: group %s subscribed to %s", self.kafka.group_id, self.topics)

    def ready(self) -> bool:
        """Connected, the last poll succeeded, and partitions assigned (see the class docs)."""
        return self.unready_reason() is None

    def unready_reason(self) -> str | None:
        """Not connected, or no partition assigned yet (for ``/readyz``)."""
        if not self._ready:
            return f"source {self.name} not connected"
        waiting = self.assignment.reason()
        return None if waiting is None else f"kafka source {self._label}: {waiting}"

    def readiness_note(self) -> str | None:
        """Says so when the source is ready as a standby, with no partition."""
        note = self.assignment.note()
        return None if note is None else f"kafka source {self._label}: {note}"

    @property
    def _label(self) -> str:
        return self.source_id or self.name

    # --- polling ------------------------------------------------------------------------------

    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        """Commit what is due, fetch up to ``max_poll_records`` records and decode them.

        Args:
            timeout: Longest wait for records, in seconds.

        Returns:
            Frames and dead letters in offset order per partition.
        """
        consumer = self._consumer
        if consumer is None:
            raise InspectorError("kafka source: poll() before setup()")
        try:
            self._apply_pause(consumer)
            if self._clock() - self._last_commit >= self.kafka.commit_interval_ms / 1000:
                self._commit_async(consumer)
            batches = consumer.poll(
                timeout_ms=max(0, int(timeout * 1000)), max_records=self.config.max_poll_records
            )
            if not batches and _joining(consumer):
                batches = self._finish_join(consumer)
        except CorruptRecordError as exc:
            return self._skip_corrupt(consumer, exc)
        except (KafkaError, OSError) as exc:
            self._ready = False
            self._warn(f"kafka source: poll failed, retrying: {exc!r}")
            time.sleep(min(timeout, 1.0))  # a broken connection fails fast: do not spin
            return []
        connections = connection_count(consumer)
        self._ready = connections is None or connections > 0
        items = self._convert(batches) if batches else []
        self._update_lag(consumer)
        return items

    def _finish_join(self, consumer: KafkaConsumer) -> dict[TopicPartition, list[Any]]:
        # kafka-python 3.0.12 throws away a group join that completes while no poll() is
        # running and sends a new JoinGroup; a caller polling with gaps (a paused pipeline
        # polls once a second) may then never join. So stay inside poll() until the group is
        # stable, bounded by the session timeout.
        deadline = time.monotonic() + self.kafka.session_timeout_ms / 1000
        batches: dict[TopicPartition, list[Any]] = {}
        while not batches and _joining(consumer) and time.monotonic() < deadline:
            batches = consumer.poll(timeout_ms=100, max_records=self.config.max_poll_records)
        return batches

    def _warn(self, message: str) -> None:
        self._warnings.warning("%s", message)

    def _skip_corrupt(
        self, consumer: KafkaConsumer, exc: CorruptRecordError
    ) -> list[Frame | DeadLetter]:
        """A record the client cannot parse: dead-letter its coordinates and seek past it.

        kafka-python raises (without saying where) for a record it cannot parse, e.g. a header
        key that is not UTF-8, and raises again on every poll: the partition would never move.
        Records after it in the same record batch are unreadable too (the client parses a batch
        in order); each costs one poll and becomes such a dead letter, so every offset is
        accounted for.
        """
        tp = failing_partition(consumer)
        if tp is None:
            self._ready = False
            self._warn(f"kafka source: a record cannot be read and its partition is unknown: {exc}")
            return []
        offset = consumer.position(tp)
        self.tracker.track(tp, offset)
        self.metrics.frames_received.labels(source=self.name).inc()
        consumer.seek(tp, offset + 1)
        log.warning(
            "kafka source: record %s:%d:%d cannot be read by the client (%s); dead-lettering "
            "its coordinates and moving on",
            tp.topic,
            tp.partition,
            offset,
            exc,
        )
        ack = functools.partial(self.tracker.done, tp, offset)
        return [unreadable_record(tp, offset, exc, ack)]

    def _convert(self, batches: dict[TopicPartition, list[Any]]) -> list[Frame | DeadLetter]:
        records = [
            (tp, record)
            for tp in sorted(batches, key=lambda tp: (tp.topic, tp.partition))
            for record in batches[tp]
        ]
        # A poll of large frames holds at most its budget decoded; the rest is fetched again.
        taken, rewind = within_budget(
            records, self.config.max_poll_decoded_bytes, self.config.max_pixels
        )
        assert self._consumer is not None
        for tp, offset in rewind.items():
            self._consumer.seek(tp, offset)
        records = records[:taken]
        for tp, record in records:
            self.tracker.track(tp, record.offset)
        self.metrics.frames_received.labels(source=self.name).inc(len(records))
        limit = self.kafka.max_message_bytes
        assert self._executor is not None
        values = [r.value if wants_decoding(r.value, limit) else None for _, r in records]
        decoded = decode_values(values, self._executor, self._jpeg_device, self.config.max_pixels)
        received = self._clock()
        items: list[Frame | DeadLetter] = []
        for (tp, record), result in zip(records, decoded, strict=True):
            if result is not None:
                self.metrics.stage_seconds.labels(stage="decode").observe(result.seconds)
            ack = functools.partial(self.tracker.done, tp, record.offset)
            items.append(
                to_item(
                    tp.topic,
                    tp.partition,
                    record,
                    result,
                    max_message_bytes=limit,
                    received=received,
                    ack=ack,
                    note_invalid=self._note_invalid,
                )
            )
        return items

    def _note_invalid(self, field: str) -> None:
        self.metrics.invalid_ids.labels(field=field).inc()

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        for tp, lag in partition_lags(consumer, self.tracker).items():
            self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(lag)

    # --- backpressure -------------------------------------------------------------------------

    def pause(self) -> None:
        """Stop fetching every assigned partition from the next poll on (any thread)."""
        self._want_paused = True

    def resume(self) -> None:
        """Fetch again from the next poll on (any thread)."""
        self._want_paused = False

    def _apply_pause(self, consumer: KafkaConsumer) -> None:
        paused = set(consumer.paused())
        if self._want_paused:
            todo = set(consumer.assignment()) - paused
            if todo:
                consumer.pause(*todo)
        elif paused:
            consumer.resume(*paused)

    # --- commits ------------------------------------------------------------------------------

    def _owned(self, consumer: KafkaConsumer) -> set[TopicPartition]:
        with self._limbo_lock:
            return set(consumer.assignment()) - self._limbo

    def _commit_async(self, consumer: KafkaConsumer) -> None:
        self._last_commit = self._clock()
        offsets = self.tracker.committable(self._owned(consumer))
        if not offsets:
            return

        def completed(_: Any, response: Any) -> None:
            # Runs inside a later consumer.poll(), on this thread.
            if isinstance(response, BaseException):
                self._warn(f"kafka source: offset commit failed (retried later): {response!r}")
            else:
                self.tracker.mark_committed(offsets)

        consumer.commit_async(_offsets(offsets), callback=completed)

    def commit(self, timeout: float) -> bool:
        """Commit every acknowledged offset now, blocking; ``False`` when it failed."""
        consumer = self._consumer
        if consumer is None:
            return True
        offsets = self.tracker.committable(self._owned(consumer))
        if not offsets:
            return True
        try:
            consumer.commit(_offsets(offsets), timeout_ms=max(1, int(timeout * 1000)))
        except (KafkaError, OSError) as exc:
            log.warning("kafka source: final offset commit failed: %r", exc)
            return False
        self.tracker.mark_committed(offsets)
        self._last_commit = self._clock()
        return True

    def in_flight(self) -> int:
        """Records handed out and not yet acked (any thread)."""
        return self.tracker.in_flight()

    def final_commit(self, timeout: float) -> None:
        """Commit every acknowledged offset (the final commit on shutdown)."""
        self.commit(timeout)

    def close(self) -> None:
        """Leave the group and close (acknowledged offsets are committed on the way out)."""
        consumer = self._consumer
        self._ready = False
        self._closed = True
        if consumer is not None:
            try:
                # No auto-commit: only acknowledged offsets are ever committed, by the
                # rebalance listener as the partitions are given up.
                consumer.close(autocommit=False)
            except Exception:
                log.exception("kafka source: closing the consumer failed")
            self._consumer = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    # --- rebalances (kafka-python's IO thread) -----------------------------------------------

    async def _on_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        with self._limbo_lock:
            self._limbo |= revoked
        consumer = self._consumer
        await self._settle(consumer, revoked)
        offsets = self.tracker.committable(revoked)
        if offsets and consumer is not None:
            try:
                await consumer.commit_async(_offsets(offsets))
                self.tracker.mark_committed(offsets)
            except Exception as exc:  # the new owner re-reads from the last commit
                log.warning("kafka source: commit on revocation failed: %r", exc)
        # The bookkeeping stays until the new assignment is known: kafka-python 3 keeps the
        # fetch position of a partition that comes back to this member, so its offsets still in
        # flight are not read again and must still hold back commits (see _on_assigned).

    async def _settle(self, consumer: KafkaConsumer | None, revoked: set[TopicPartition]) -> None:
        """Wait (bounded by ``kafka.revoke_drain_ms``) until ``revoked`` has nothing in flight.

        The checkpoint of a revocation: frames already in the pipeline finish and their
        results are confirmed by the sinks, so the commit that follows covers them and the
        next owner starts after them instead of inspecting them again. The pipeline's own
        threads deliver them; this coroutine only yields to kafka-python's event loop
        (heartbeats continue) between looks.
        """
        # kafka-python's own loop: a blocking wait here would stop heartbeats. None (no such
        # hook on this client): commit what is delivered at once.
        sleep = loop_sleep(consumer)
        if sleep is None or self._closed:  # closing: the pipeline drained before, by its deadline
            return
        deadline = time.monotonic() + self.kafka.revoke_drain_ms / 1000
        while any(self.tracker.pending(tp) for tp in revoked):
            if time.monotonic() >= deadline:
                left = sum(self.tracker.pending(tp) for tp in revoked)
                log.info(
                    "kafka source: %d frame(s) of revoked partitions still in flight after "
                    "%d ms (kafka.revoke_drain_ms): their next owner inspects them again",
                    left,
                    self.kafka.revoke_drain_ms,
                )
                return
            await sleep(_SETTLE_POLL_S)

    def _on_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        # First, so that the bookkeeping below failing cannot leave readiness waiting.
        self.assignment.assigned(len(assigned))
        with self._limbo_lock:
            gone, self._limbo = self._limbo - assigned, set()
        self._forget(gone)
        if assigned:
            log.info("kafka source: partitions assigned: %s", sorted(map(tuple, assigned)))
        else:
            log.info(
                "kafka source: group %s assigned no partition of %s",
                self.kafka.group_id,
                ", ".join(self.topics),
            )
        consumer = self._consumer
        if self._want_paused and consumer is not None and assigned:
            consumer.pause(*assigned)  # before the first fetch of the new assignment

    def _forget(self, partitions: Iterable[TopicPartition]) -> None:
        # Another member owns them now and re-reads from the last commit: late acks are void.
        partitions = list(partitions)
        self.tracker.revoke(partitions)
        for tp in partitions:
            with contextlib.suppress(KeyError):  # never had a lag sample
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        if partitions:
            log.info("kafka source: partitions revoked: %s", sorted(map(tuple, partitions)))


def _offsets(offsets: dict[TopicPartition, int]) -> dict[TopicPartition, Any]:
    return {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()}


class _RebalanceListener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Commits acknowledged offsets of partitions before they move to another member.

    Never raises: kafka-python re-raises a listener's exception from every later ``poll()``
    and retries the join, so one bug here would stop the source for good. A failed revocation
    costs duplicates at most (the next owner re-reads from the last commit).
    """

    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        try:
            await self._source._on_revoked(revoked)
        except Exception:
            log.exception("kafka source: handling revoked partitions failed (not committed)")

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        try:
            self._source._on_assigned(assigned)
        except Exception:
            log.exception("kafka source: handling assigned partitions failed")

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        # Evicted from the group: a commit would be rejected, and kafka-python drops the fetch
        # positions (whatever comes back is read from the last commit): forget.
        try:
            self._source._forget(lost)
        except Exception:
            log.exception("kafka source: handling lost partitions failed")
