"""Results and dead letters to Kafka.

Results go to ``kafka.results_topic`` keyed by camera id (one camera's results stay in order
on one partition); dead letters go to ``kafka.dlq_topic`` with the original key, value and
headers plus the reason, so they can be replayed once the cause is fixed. The producer is
idempotent with ``acks=all``: a frame counts as delivered (its offset may be committed) only
when every in-sync replica has its result.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import KafkaProducer
from kafka.errors import (
    BrokerNotAvailableError,
    ClusterAuthorizationFailedError,
    KafkaConfigurationError,
    KafkaError,
    KafkaTimeoutError,
    TransactionalIdAuthorizationFailedError,
    UnsupportedVersionError,
)

from inspector.config import KafkaConfig
from inspector.errors import BrokerUnavailableError, ConfigError, InspectorError
from inspector.kafka_metrics import connection_count
from inspector.messages import SCHEMA_ID
from inspector.metrics import Metrics
from inspector.records import DeadLetter, Inspection
from inspector.sinks.base import DoneFn, Sink

log = logging.getLogger(__name__)

#: Headers of every result record.
RESULT_HEADERS: tuple[tuple[str, bytes], ...] = (
    ("content_type", b"application/json"),
    ("schema", SCHEMA_ID.encode()),
)
#: Room left in ``max_request_size`` for record framing when a dead letter copies a payload.
_FRAMING_BYTES = 1024
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
        self._failing = False
        self._delivered = False

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
                self._producer = self._connect()

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
                self._producer = self._connect()
            return self._producer

    def ready(self) -> bool:
        """Connected and the last delivery did not fail (safe from any thread)."""
        producer = self._producer
        if producer is None or self._closed or self._failing:
            return False
        connections = connection_count(producer)
        # A producer idle for long may have closed its connections; earlier deliveries still
        # show the path works.
        return connections is None or connections > 0 or self._delivered

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
        a dead letter that cannot be written would block the offset commit forever.
        """
        raw = letter.raw
        key = raw.key if raw is not None else letter.camera_id.encode()
        value = raw.value if raw is not None else b""
        headers = list(raw.headers) if raw is not None else []
        headers += [
            ("error", letter.reason.encode()),
            ("error_type", letter.error_type.encode()),
            ("stage", letter.stage.encode()),
            ("source_topic", (raw.topic if raw else "").encode()),
            ("source_partition", (str(raw.partition) if raw else "").encode()),
            ("source_offset", (str(raw.offset) if raw else "").encode()),
            ("failed_at", letter.failed_at.encode()),
        ]
        size = len(value) + len(key or b"") + sum(len(k) + len(v) for k, v in headers)
        if size + _FRAMING_BYTES > self.kafka.max_message_bytes:
            headers.append(
                ("value_dropped", f"{len(value)} bytes, over kafka.max_message_bytes".encode())
            )
            value = b""
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
        try:
            future = self._current().send(topic, value=value, key=key, headers=headers)
        except Exception as exc:  # too large, closed, no metadata within max_block_ms...
            self._note_failure(exc)
            done(exc)
            return

        def delivered(_: Any) -> None:
            self._failing = False
            self._delivered = True
            self.metrics.stage_seconds.labels(stage="publish").observe(self._clock() - started)
            done(None)

        def failed(exc: BaseException) -> None:
            self._note_failure(exc)
            done(exc)

        future.add_callback(delivered)
        future.add_errback(failed)

    def _note_failure(self, exc: BaseException) -> None:
        log.debug("kafka sink: delivery failed: %r", exc)
        # Only errors about reaching the broker make the sink unready; a record that is too
        # large says nothing about the connection.
        if getattr(exc, "retriable", False) or isinstance(exc, OSError | BrokerNotAvailableError):
            self._failing = True
        if self.idempotent and isinstance(exc, _IDEMPOTENCE_REFUSED):
            self._drop_idempotence = True

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
        """Flush briefly and close; records still unacknowledged fail through their ``done``."""
        with self._lock:
            self._closed = True
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=5)
            except Exception:
                log.exception("kafka sink: closing the producer failed")
