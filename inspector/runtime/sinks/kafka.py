"""Results and dead letters to Kafka.

Results go to ``kafka.results_topic`` keyed by camera id (one camera's results stay in order
on one partition); dead letters go to ``kafka.dlq_topic`` with the original key, value and
headers plus the reason, so they can be replayed once the cause is fixed. The producer is
idempotent with ``acks=all``: a frame counts as delivered (its offset may be committed) only
when every in-sync replica has its result.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    BrokerNotAvailableError,
    ClusterAuthorizationFailedError,
    CorruptRecordError,
    InvalidRecordError,
    InvalidTimestampError,
    KafkaConfigurationError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    TransactionalIdAuthorizationFailedError,
    UnsupportedVersionError,
)

from inspector.errors import (
    BrokerUnavailableError,
    ConfigError,
    InspectorError,
    RecordRefusedError,
)
from inspector.messages import SCHEMA_ID
from inspector.runtime.config import KafkaConfig
from inspector.runtime.kafka_metrics import connection_count
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import Backoff
from inspector.runtime.records import DeadLetter, Inspection
from inspector.runtime.sinks.base import DoneFn, Sink

log = logging.getLogger(__name__)

#: Headers of every result record.
RESULT_HEADERS: tuple[tuple[str, bytes], ...] = (
    ("content_type", b"application/json"),
    ("schema", SCHEMA_ID.encode()),
)
#: Room left in ``max_request_size`` for record framing when a dead letter copies a payload.
_FRAMING_BYTES = 1024
#: Errors about one record (too large, invalid): sending it again cannot help.
_REFUSALS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    InvalidTimestampError,
    CorruptRecordError,
)
#: Rebuilding a producer in a fatal state: first wait, and the longest (seconds).
_REBUILD_FIRST_S = 1.0
_REBUILD_MAX_S = 30.0
#: Errors meaning "this broker or principal does not allow idempotent producers".
_IDEMPOTENCE_REFUSED = (
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
    UnsupportedVersionError,
)


class KafkaSink(Sink):
    """Publishes results and dead letters with an idempotent ``acks=all`` producer.

    ``done`` is called from kafka-python's sender thread once the broker acknowledged the
    record (or it finally failed after retries within the delivery timeout), or at once when
    the record cannot be sent at all (too large, producer closed).

    Args:
        kafka: Connection, topics, size limit, compression and batching.
        metrics: Where publish latency is recorded.
        producer_factory: Builds the producer from keyword settings (default
            ``kafka.KafkaProducer``); tests inject fakes.
        clock: Monotonic clock for publish latency.
    """

    name = "kafka"

    def __init__(
        self,
        kafka: KafkaConfig,
        metrics: Metrics,
        *,
        producer_factory: Callable[..., KafkaProducer] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kafka = kafka
        self.metrics = metrics
        self._factory: Callable[..., KafkaProducer] = producer_factory or KafkaProducer
        self._clock = clock
        self._lock = threading.Lock()
        self._producer: KafkaProducer | None = None
        self._closed = False
        self.idempotent = True
        self._drop_idempotence = False  # set by a delivery callback, acted on by the next send
        self._failing: BaseException | None = None  # the last delivery error, until a success
        # A producer in a state it cannot leave (kafka-python keeps an idempotent producer
        # fatal after UnknownProducerId + a failed InitProducerId, e.g. when the broker came back
        # without its state): replaced by the next send, with backoff between attempts.
        self._rebuild = False
        # Set when the producer was seen without any broker connection (a broker restart, a
        # network cut); cleared by the next delivery. A broker that comes back may have lost the
        # producer's state, so only a delivery proves the path works again.
        self._lost = False
        self._rebuild_backoff = Backoff(_REBUILD_FIRST_S, _REBUILD_MAX_S)
        self._next_rebuild = float("-inf")
        # Sends the broker has not confirmed yet: token -> (sent at, topic). The client retries
        # a partition without a leader until the delivery timeout (minutes) without failing
        # anything, so readiness looks at the age of the oldest one.
        self._unconfirmed: dict[int, tuple[float, str]] = {}
        self._unconfirmed_lock = threading.Lock()
        self._tokens = itertools.count()

    # --- connection ---------------------------------------------------------------------------

    def producer_settings(self, *, idempotent: bool = True) -> dict[str, Any]:
        """Keyword settings for ``KafkaProducer`` (secrets included: never log them)."""
        k = self.kafka
        return {
            "bootstrap_servers": [s.strip() for s in k.bootstrap_servers.split(",") if s.strip()],
            "client_id": k.client_id,
            "acks": "all",
            "enable_idempotence": idempotent,
            # Retried (idempotently, so without duplicates) until the delivery timeout.
            "delivery_timeout_ms": max(120_000, k.request_timeout_ms + k.linger_ms),
            "compression_type": None if k.compression == "none" else k.compression,
            "linger_ms": k.linger_ms,
            "max_request_size": k.max_message_bytes,
            "request_timeout_ms": k.request_timeout_ms,
            # send() waits this long for topic metadata or buffer space, on the calling thread.
            "max_block_ms": k.request_timeout_ms,
            **k.client_security_settings(),
        }

    def setup(self) -> None:
        """Connect the producer.

        Raises:
            ConfigError: The compression codec's library is missing.
            InspectorError: No broker answered within kafka-python's bootstrap timeout.
        """
        with self._lock:
            if self._producer is None:
                self._producer = self._connected()

    def _connected(self) -> KafkaProducer:
        """A new producer (lock held); refused if the sink was closed while it connected.

        Connecting may block for ``request_timeout_ms``; :meth:`close` does not wait for it (a
        SIGTERM during start-up must not), so what was built meanwhile is closed here.
        """
        producer = self._connect()
        if self._closed:
            with contextlib.suppress(Exception):
                producer.close(timeout=0)
            raise InspectorError("kafka sink is closed")
        return producer

    def _connect(self) -> KafkaProducer:
        servers = self.kafka.bootstrap_servers
        try:
            try:
                return self._factory(**self.producer_settings(idempotent=self.idempotent))
            except (KafkaConfigurationError, UnsupportedVersionError) as exc:
                about_idempotence = "idempot" in str(exc).lower()
                if not self.idempotent or not (
                    about_idempotence or isinstance(exc, UnsupportedVersionError)
                ):
                    raise
                log.warning(
                    "kafka sink: the broker refuses an idempotent producer (%s); falling back "
                    "to acks=all without idempotence (retries may duplicate results)",
                    exc,
                )
                self.idempotent = False
                return self._factory(**self.producer_settings(idempotent=False))
        except (RuntimeError, ValueError) as exc:
            if "codec" not in str(exc).lower():
                raise
            # kafka-python: "Libraries for snappy compression codec not found".
            raise ConfigError(f"kafka.compression={self.kafka.compression}: {exc}") from exc
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailableError(
                f"kafka sink: cannot connect to {servers} (kafka.bootstrap_servers): {exc!r}"
            ) from exc

    def _current(self) -> KafkaProducer:
        with self._lock:
            if self._closed:
                raise InspectorError("kafka sink is closed")
            if self._rebuild and self._producer is not None:
                self._replace_broken_producer()
            if self._drop_idempotence and self._producer is not None:
                log.warning(
                    "kafka sink: the broker refused the idempotent producer; reconnecting "
                    "without idempotence (retries may duplicate results)"
                )
                self._drop_idempotence = False
                self.idempotent = False
                old, self._producer = self._producer, None
                try:
                    old.close(timeout=1)
                except Exception:
                    log.debug("closing the refused producer failed", exc_info=True)
            if self._producer is None:
                self._producer = self._connected()
            return self._producer

    def _replace_broken_producer(self) -> None:
        """Close the fatal producer and build a new one (lock held); backoff between tries."""
        now = self._clock()
        if now < self._next_rebuild:
            raise InspectorError(
                f"kafka sink: the producer is being rebuilt (next try in "
                f"{self._next_rebuild - now:.1f} s) after {self._failing!r}"
            )
        self._next_rebuild = now + self._rebuild_backoff.next()
        log.warning(
            "kafka sink: the producer is in a state it cannot leave (%r); building a new one",
            self._failing,
        )
        self.metrics.sink_rebuilds.labels(sink=self.name).inc()
        old, self._producer = self._producer, None
        try:
            if old is not None:
                old.close(timeout=0)  # its unsent records fail through their callbacks
        except Exception:
            log.debug("closing the broken producer failed", exc_info=True)
        self._producer = self._connected()  # BrokerUnavailableError: tried again later
        self._rebuild = False

    def ready(self) -> bool:
        """Connected and the last delivery did not fail (safe from any thread)."""
        return self.unready_reason() is None

    def unready_reason(self) -> str | None:
        """Why the sink cannot deliver now (``None`` when it can)."""
        producer = self._producer
        where = f"kafka sink ({self.kafka.bootstrap_servers})"
        if self._closed:
            return f"{where}: closed"
        if self._failing is not None:
            failure = f"{type(self._failing).__name__}: {self._failing}"
            if self._rebuild:
                return f"{where}: rebuilding the producer after {failure}"
            return f"{where}: deliveries failing ({failure}); retrying"
        if producer is None:
            return f"{where}: not connected"
        connections = connection_count(producer)
        if connections == 0:
            # An idle producer keeps its connection (metadata is refreshed every 5 minutes,
            # before the 9-minute idle close), so none means the brokers are gone.
            self._lost = True
            return f"{where}: no connection to any broker"
        if self._lost:
            return f"{where}: reconnected after losing the brokers; ready once a delivery succeeds"
        return self._stalled_reason(where)

    def _stalled_reason(self, where: str) -> str | None:
        with self._unconfirmed_lock:
            pending = list(self._unconfirmed.values())
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
        message = inspection.message
        self._send(
            self.kafka.results_topic,
            key=message.camera_id.encode(),
            value=message.to_json().encode(),
            headers=list(RESULT_HEADERS),
            done=done,
        )

    def publish_dead_letter(self, letter: DeadLetter, done: DoneFn) -> None:
        """Copy the original message to the DLQ topic with the failure in its headers.

        Headers added after the original ones (so ``dict(headers)`` sees ours): ``error``,
        ``error_type``, ``stage``, ``source_topic``, ``source_partition``, ``source_offset``
        (empty for input that did not come from Kafka) and ``failed_at``. A payload too large
        to be produced (an ``oversized`` frame) is left out, with ``value_dropped`` saying so:
        a dead letter that cannot be written would block the offset commit forever. If the
        original headers alone are too large they are left out too (``headers_dropped``).
        """
        raw = letter.raw
        key = raw.key if raw is not None else letter.camera_id.encode()
        value = raw.value if raw is not None else b""
        original = list(raw.headers) if raw is not None else []
        ours = [
            ("error", letter.reason.encode()[:4096]),
            ("error_type", letter.error_type.encode()),
            ("stage", letter.stage.encode()),
            ("source_topic", (raw.topic if raw else "").encode()),
            ("source_partition", (str(raw.partition) if raw else "").encode()),
            ("source_offset", (str(raw.offset) if raw else "").encode()),
            ("failed_at", letter.failed_at.encode()),
        ]

        def size(*parts: list[tuple[str, bytes]]) -> int:
            heads = sum(len(k.encode()) + len(v) for part in parts for k, v in part)
            return len(value) + len(key or b"") + heads + _FRAMING_BYTES

        limit = self.kafka.max_message_bytes
        if size(original, ours) > limit:
            ours.append(
                ("value_dropped", f"{len(value)} bytes, over kafka.max_message_bytes".encode())
            )
            value = b""
        if size(original, ours) > limit:
            # Headers alone too large (a producer can send megabytes of them): the coordinates
            # in ours still find the original message on its topic.
            ours.append(("headers_dropped", f"{len(original)} headers, over the limit".encode()))
            original = []
        if len(key or b"") + _FRAMING_BYTES > limit:
            key = None
        headers = original + ours
        self._send(self.kafka.dlq_topic, key=key, value=value, headers=headers, done=done)

    def _send(
        self,
        topic: str,
        *,
        key: bytes | None,
        value: bytes,
        headers: list[tuple[str, bytes]],
        done: DoneFn,
    ) -> None:
        started = self._clock()
        token = next(self._tokens)
        with self._unconfirmed_lock:
            self._unconfirmed[token] = (started, topic)
        try:
            future = self._current().send(topic, value=value, key=key, headers=headers)
        except Exception as exc:  # too large, closed, no metadata within max_block_ms...
            self._settled(token)
            done(self._note_failure(exc, topic))
            return

        def delivered(_: Any) -> None:
            self._settled(token)
            self._failing = None
            self._lost = False
            self._rebuild_backoff.reset()
            self.metrics.stage_seconds.labels(stage="publish").observe(self._clock() - started)
            done(None)

        def failed(exc: BaseException) -> None:
            self._settled(token)
            done(self._note_failure(exc, topic))

        future.add_callback(delivered)
        future.add_errback(failed)

    def _settled(self, token: int) -> None:
        with self._unconfirmed_lock:
            self._unconfirmed.pop(token, None)

    def _note_failure(self, exc: BaseException, topic: str) -> BaseException:
        """Record a failed send; returns the error for ``done`` (a refusal, or ``exc``)."""
        log.debug("kafka sink: delivery failed: %r", exc)
        if isinstance(exc, _REFUSALS):
            # About this record only: says nothing about the connection or the producer.
            refused = RecordRefusedError(f"{topic} refused the record: {type(exc).__name__}: {exc}")
            refused.__cause__ = exc
            return refused
        if not isinstance(exc, InspectorError):  # ours (closed, rebuilding) keep the cause shown
            self._failing = exc
        if self.idempotent and isinstance(exc, _IDEMPOTENCE_REFUSED):
            self._drop_idempotence = True
        elif not (
            getattr(exc, "retriable", False)
            or isinstance(exc, OSError | BrokerNotAvailableError | InspectorError)
        ):
            # Not about this record and not something the client retries by itself: the
            # producer may never recover (kafka-python keeps a fatal idempotent producer
            # fatal), so the next send builds a new one.
            self._rebuild = True
        return exc

    # --- shutdown -----------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until every record sent so far is acknowledged; ``False`` on timeout."""
        producer = self._producer
        if producer is None:
            return True
        try:
            producer.flush(timeout=max(0.0, timeout))
        except KafkaTimeoutError:
            return False
        return True

    def close(self) -> None:
        """Flush briefly and close; records still unacknowledged fail through their ``done``.

        Never waits for a connection attempt in progress (it holds the lock for up to
        ``request_timeout_ms``): that attempt sees the sink closed and closes what it built.
        """
        self._closed = True
        producer = None
        if self._lock.acquire(timeout=0.2):  # held for long only while connecting
            try:
                producer, self._producer = self._producer, None
            finally:
                self._lock.release()
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:
                log.exception("kafka sink: closing the producer failed")
