"""Stand-ins for kafka-python's producer in KafkaSink unit tests (no broker).

They mimic the parts of ``KafkaProducer`` the sink uses, public and private (those the sink
reads through ``kafka_client_hooks``): ``_sender`` is a real thread, ``_metadata`` takes listeners
and update requests as ``kafka.cluster.ClusterMetadata`` does.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kafka.errors import KafkaConfigurationError, KafkaConnectionError
from kafka.future import Future
from prometheus_client import CollectorRegistry

from inspector.runtime.config import KafkaConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.sinks.kafka import KafkaSink


class FakeCluster:
    """``ClusterMetadata``'s listeners and update requests."""

    def __init__(self) -> None:
        self.listeners: set[Callable[[object], None]] = set()
        self.requests = 0

    def add_listener(self, listener: Callable[[object], None]) -> None:
        self.listeners.add(listener)

    def remove_listener(self, listener: Callable[[object], None]) -> None:
        self.listeners.discard(listener)

    def request_update(self) -> Future:
        self.requests += 1
        return Future()

    def answer(self) -> None:
        """A metadata response was applied (kafka-python calls the listeners)."""
        for listener in list(self.listeners):
            listener(self)


class FakeSender(threading.Thread):
    """A sender thread that runs until it is force-closed or made to end."""

    def __init__(self) -> None:
        super().__init__(name="fake-producer-network-thread", daemon=True)
        self.stop = threading.Event()
        self.force_closed = False

    def run(self) -> None:
        self.stop.wait(30)

    def force_close(self) -> None:
        self.force_closed = True
        self.stop.set()

    def end(self) -> None:
        """The thread ends while the producer is in use (what a crash does)."""
        self.stop.set()
        self.join(5)


class FakeProducer:
    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.sent: list[dict[str, Any]] = []
        self.futures: list[Future] = []
        self.send_error: BaseException | None = None
        self.flush_error: BaseException | None = None
        self.closed = False
        self.connections = 1.0
        self._metadata = FakeCluster()
        self._sender: FakeSender | None = None

    def start_sender(self) -> FakeSender:
        self._sender = FakeSender()
        self._sender.start()
        return self._sender

    def send(self, topic: str, **kwargs: Any) -> Future:
        if self.send_error is not None:
            raise self.send_error
        self.sent.append({"topic": topic, **kwargs})
        self.futures.append(Future())
        return self.futures[-1]

    def flush(self, timeout: float | None = None) -> None:
        if self.flush_error is not None:
            raise self.flush_error

    def metrics(self) -> dict[str, dict[str, float]]:
        return {"producer-metrics": {"connection-count": self.connections}}

    def close(self, timeout: float | None = None) -> None:
        self.closed = True
        if self._sender is not None:
            self._sender.stop.set()


class Factory:
    def __init__(self, refuse_idempotence: bool = False, *, senders: bool = False) -> None:
        self.made: list[FakeProducer] = []
        self.refuse_idempotence = refuse_idempotence
        self.senders = senders
        self.unreachable = False

    def __call__(self, **settings: Any) -> FakeProducer:
        if self.unreachable:
            raise KafkaConnectionError("unable to bootstrap from the brokers")
        if self.refuse_idempotence and settings["enable_idempotence"]:
            raise KafkaConfigurationError("Idempotent/Transactional producer requires >= 0.11")
        self.made.append(FakeProducer(**settings))
        if self.senders:
            self.made[-1].start_sender()
        return self.made[-1]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make_sink(
    factory: Factory | None = None, registry: CollectorRegistry | None = None, **kafka: Any
) -> tuple[KafkaSink, Factory, Clock]:
    """A set-up sink over fakes, without its watch thread (tests call ``check``)."""
    factory = factory or Factory()
    clock = Clock()
    sink = KafkaSink(
        KafkaConfig(results_topic="results", dlq_topic="dlq", **kafka),
        Metrics(registry or CollectorRegistry()),
        producer_factory=factory,
        clock=clock,
        watch_interval_s=None,
    )
    sink.setup()
    return sink, factory, clock
