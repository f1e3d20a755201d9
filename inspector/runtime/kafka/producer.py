"""The Kafka sink's producer and its health: built, watched, replaced when it cannot go on.

:class:`ProducerKeeper` holds the producer and the sink's :class:`~.kafka_health.Health` and
is the only writer of either. Its events come from kafka-python's sender thread (delivery
outcomes, metadata answers), from the thread that sends (``ensure``) and from the sink's watch
thread (:meth:`ProducerKeeper.check`).
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

from inspector.errors import BrokerUnavailableError, ConfigError, InspectorError
from inspector.runtime.config import KafkaConfig
from inspector.runtime.kafka import client_hooks as kafka_client_hooks
from inspector.runtime.kafka.client_metrics import connection_count
from inspector.runtime.kafka.health import (
    Health,
    IllegalTransitionError,
    Link,
    SenderThreadDiedError,
    describe,
)
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import Backoff

log = logging.getLogger(__name__)

#: Rebuilding a producer that cannot go on: first wait, and the longest (seconds).
_REBUILD_FIRST_S = 1.0
_REBUILD_MAX_S = 30.0
#: Errors meaning "this broker or principal does not allow idempotent producers".
_IDEMPOTENCE_REFUSED = (
    ClusterAuthorizationFailedError,
    TransactionalIdAuthorizationFailedError,
    UnsupportedVersionError,
)
#: Waiting for a broker to answer again after the connections were lost.
_UNSETTLED = (Link.LOST, Link.RECONNECTING)


class ProducerKeeper:
    """Builds the producer, keeps its health, and replaces it when it cannot go on.

    Args:
        kafka: Connection settings.
        metrics: ``inspector_sink_rebuilds_total`` counts the replacements.
        factory: Builds the producer from keyword settings.
        clock: Monotonic clock.
        on_replaced: Called with the first live generation each time producers are retired
            (replaced or closed): what they hold will never be confirmed.
        sink: The sink's name, for metrics.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        metrics: Metrics,
        factory: Callable[..., KafkaProducer],
        *,
        on_replaced: Callable[[int], None],
        clock: Callable[[], float] = time.monotonic,
        sink: str = "kafka",
    ) -> None:
        self.kafka = kafka
        self.metrics = metrics
        self._factory = factory
        self._on_replaced = on_replaced
        self._clock = clock
        self._sink = sink
        self.idempotent = True  # written only with _lock held
        # Serialises building and replacing the producer. Held for as long as a connection
        # attempt takes (request_timeout_ms), so never taken on kafka-python's sender thread
        # (callbacks), by readiness queries or by close.
        self._lock = threading.Lock()
        # Guards the fields below; held briefly and never while calling out.
        self._state = threading.Lock()
        self._health = Health(Link.NOT_CONNECTED)
        self._producer: KafkaProducer | None = None
        self._unwatch: Callable[[], None] | None = None
        self._rebuild_backoff = Backoff(_REBUILD_FIRST_S, _REBUILD_MAX_S)
        self._next_rebuild = float("-inf")

    def settings(self, *, idempotent: bool = True) -> dict[str, Any]:
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

    def snapshot(self) -> tuple[Health, KafkaProducer | None]:
        """The health and the producer, read together."""
        with self._state:
            return self._health, self._producer

    # --- the producer -------------------------------------------------------------------------

    def ensure(self) -> tuple[KafkaProducer, int]:
        """The producer to send with and its generation, replaced first if it cannot send.

        Raises:
            ConfigError: The compression codec's library is missing.
            InspectorError: The sink is closed, a rebuild waits for its backoff, or no broker
                answered (:class:`~inspector.errors.BrokerUnavailableError`).
        """
        with self._lock:
            health, producer = self.snapshot()
            if health.link is Link.CLOSED:
                raise InspectorError("kafka sink is closed")
            alive = kafka_client_hooks.sender_alive(producer) if producer is not None else None
            if alive is False and health.link is not Link.BROKEN:
                self._sender_died(producer, health.generation)
                health, producer = self.snapshot()
            if producer is not None and health.link is not Link.BROKEN:
                return producer, health.generation
            return self._replace(health)

    def _replace(self, health: Health) -> tuple[KafkaProducer, int]:
        """Build the first producer, or a new one in place of a broken one (``_lock`` held)."""
        with self._state:
            old, self._producer = self._producer, None
            unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        if old is not None:  # retired at once, even if its successor must wait for the backoff
            kafka_client_hooks.discard(old)  # what it holds fails through its callbacks...
            self._on_replaced(health.generation + 1)  # ...or, if they never come, here
        if health.link is Link.BROKEN:
            self._before_rebuild(health)
        producer = self._connect()  # BrokerUnavailableError: tried again later
        with self._state:
            try:
                self._health = self._health.adopted(self._clock())
            except IllegalTransitionError:  # closed meanwhile: close does not wait for us
                adopted = None
            else:
                self._producer, adopted = producer, self._health.generation
        if adopted is None:
            kafka_client_hooks.discard(producer)
            raise InspectorError("kafka sink is closed")
        unwatch = kafka_client_hooks.watch_metadata(producer, lambda: self._answered(adopted))
        with self._state:
            self._unwatch = unwatch
        return producer, adopted

    def _before_rebuild(self, health: Health) -> None:
        """Log, count and pace a rebuild (``_lock`` held); raises during the backoff."""
        if isinstance(health.failure, _IDEMPOTENCE_REFUSED) and self.idempotent:
            log.warning(
                "kafka sink: the broker refused the idempotent producer; reconnecting "
                "without idempotence (retries may duplicate results)"
            )
            self.idempotent = False
            return
        now = self._clock()
        with self._state:
            wait = self._next_rebuild - now
            if wait <= 0:
                self._next_rebuild = now + self._rebuild_backoff.next()
        if wait > 0:
            raise InspectorError(
                f"kafka sink: the producer is being rebuilt (next try in {wait:.1f} s) "
                f"after {health.failure!r}"
            )
        log.warning(
            "kafka sink: the producer cannot go on (%r); building a new one", health.failure
        )
        self.metrics.sink_rebuilds.labels(sink=self._sink).inc()

    def _connect(self) -> KafkaProducer:
        servers = self.kafka.bootstrap_servers
        codec = self.kafka.compression
        if codec != "none" and kafka_client_hooks.codec_available(codec) is False:
            # kafka-python would find out only after bootstrapping, with a bare RuntimeError.
            raise ConfigError(
                f"kafka.compression={codec}: kafka-python finds no library for this codec "
                f"(pip install 'kafka-python[{codec}]')"
            )
        try:
            try:
                return self._factory(**self.settings(idempotent=self.idempotent))
            except (KafkaConfigurationError, UnsupportedVersionError) as refused:
                if not self.idempotent:
                    raise
                # kafka-python raises these classes for more than idempotence (conflicting
                # settings, a broker without an API) and says which only in its message. The
                # same producer without idempotence tells: if it connects, that was the refusal.
                try:
                    producer = self._factory(**self.settings(idempotent=False))
                except (KafkaError, OSError):
                    raise refused from None
                log.warning(
                    "kafka sink: the broker refuses an idempotent producer (%s); falling back "
                    "to acks=all without idempotence (retries may duplicate results)",
                    refused,
                )
                self.idempotent = False
                return producer
        except (KafkaError, OSError) as exc:
            raise BrokerUnavailableError(
                f"kafka sink: cannot connect to {servers} (kafka.bootstrap_servers): {exc!r}"
            ) from exc

    # --- events -------------------------------------------------------------------------------

    def move(
        self,
        link: Link,
        generation: int,
        failure: BaseException | None = None,
        *,
        only_from: tuple[Link, ...] | None = None,
    ) -> bool:
        """Apply an event of producer ``generation``; ``False`` if it changes nothing.

        Events of a replaced producer, and moves the state table refuses (a callback after
        close, a success of a producer being replaced), are dropped.
        """
        with self._state:
            health = self._health
            if (
                health.generation != generation
                or not health.allows(link)
                or (only_from is not None and health.link not in only_from)
                or (health.link is link and health.failure is failure)
            ):
                return False
            self._health = health.moved(link, self._clock(), failure)
        where = self.kafka.bootstrap_servers
        if link is Link.LOST:
            log.warning("kafka sink (%s): no connection to any broker; not ready", where)
        elif link is Link.CONNECTED and health.link in _UNSETTLED:
            log.info("kafka sink (%s): a broker answers again; ready", where)
        return True

    def delivered(self, generation: int) -> None:
        """A record of producer ``generation`` was acknowledged: the path works."""
        self.move(Link.CONNECTED, generation, only_from=(*_UNSETTLED, Link.FAILING))
        with self._state:
            self._rebuild_backoff.reset()

    def failed(self, exc: BaseException, generation: int) -> None:
        """A record of producer ``generation`` failed for a reason not about the record."""
        if self.idempotent and isinstance(exc, _IDEMPOTENCE_REFUSED):
            self.move(Link.BROKEN, generation, exc)  # reconnects without idempotence
        elif getattr(exc, "retriable", False) or isinstance(exc, OSError | BrokerNotAvailableError):
            self.move(Link.FAILING, generation, exc)
        else:
            # Not something the client retries by itself: the producer may never recover
            # (kafka-python keeps a fatal idempotent producer fatal), so a new one replaces it.
            self.move(Link.BROKEN, generation, exc)

    def _answered(self, generation: int) -> None:
        """A broker answered a metadata request of producer ``generation`` (sender thread)."""
        self.move(Link.CONNECTED, generation, only_from=_UNSETTLED)

    def _sender_died(self, producer: KafkaProducer | None, generation: int) -> None:
        failure = _sender_died_error(producer)
        if self.move(Link.BROKEN, generation, failure):  # once per producer
            log.error(
                "kafka sink (%s): %s (it died: see the error logged before it); building a new "
                "producer, the records it held are failed and sent again",
                self.kafka.bootstrap_servers,
                failure,
            )

    def check(self) -> None:
        """One look at the producer (see :meth:`KafkaSink.check`)."""
        health, producer = self.snapshot()
        if health.link in (Link.CLOSED, Link.NOT_CONNECTED):
            return
        if (
            producer is None
            or health.link is Link.BROKEN
            or kafka_client_hooks.sender_alive(producer) is False
        ):
            try:
                self.ensure()
            except InspectorError as exc:
                log.debug("kafka sink: no new producer yet: %s", exc)
            return
        connections = connection_count(producer)
        if connections == 0:
            self.move(Link.LOST, health.generation, only_from=(Link.CONNECTED, Link.RECONNECTING))
        elif connections is not None:
            self.move(Link.RECONNECTING, health.generation, only_from=(Link.LOST,))
        health, current = self.snapshot()
        if health.link in _UNSETTLED and current is producer:
            # kafka-python retries a failed refresh by itself, but not one after a clean close;
            # asking is cheap (it backs off between tries) and gets the answer that ends this.
            kafka_client_hooks.request_metadata(producer)

    def reason(self, where: str) -> str | None:
        """The readiness reason of the current state; reads, never changes anything."""
        health, producer = self.snapshot()
        now = self._clock()
        connections = None
        if producer is not None and health.link not in (Link.CLOSED, Link.BROKEN):
            if kafka_client_hooks.sender_alive(producer) is False:  # before the watch acts on it
                health = Health(Link.BROKEN, health.generation, now, _sender_died_error(producer))
            else:
                connections = connection_count(producer)
        return describe(health, where, now, connections)

    # --- shutdown -----------------------------------------------------------------------------

    def flush(self, timeout: float) -> bool:
        """Wait until every record sent so far is acknowledged; ``False`` on timeout."""
        _, producer = self.snapshot()
        if producer is None:
            return True
        if kafka_client_hooks.sender_alive(producer) is False:
            return False  # nothing it holds will ever complete
        try:
            producer.flush(timeout=max(0.0, timeout))
        except KafkaTimeoutError:
            return False
        return True

    def close(self) -> None:
        """Close for good: flush briefly, then fail what is left; never waits for ``_lock``."""
        with self._state:
            health = self._health
            if health.link is not Link.CLOSED:
                self._health = health.moved(Link.CLOSED, self._clock())
            producer, self._producer = self._producer, None
            unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        if producer is not None:
            try:
                if kafka_client_hooks.sender_alive(producer) is False:
                    raise KafkaTimeoutError("its sender thread is not running")
                producer.close(timeout=5)
            except Exception as exc:  # records still pending after 5 s, or nothing drives them
                log.warning("kafka sink: closing the producer gracefully failed: %r", exc)
                kafka_client_hooks.discard(producer)
        self._on_replaced(health.generation + 1)


def _sender_died_error(producer: KafkaProducer | None) -> SenderThreadDiedError:
    thread = kafka_client_hooks.sender_thread(producer)
    name = thread.name if thread is not None else "?"
    return SenderThreadDiedError(
        f"kafka-python's sender thread ({name}) of the producer is not running"
    )
