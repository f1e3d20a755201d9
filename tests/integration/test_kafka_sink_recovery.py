"""KafkaSink recovering on real Apache Kafka: a broker replaced while idle, a dead sender thread.

* A broker restarted empty at the same address: ``/readyz`` must come back once it answers,
  with no frame sent (an idle line used to stay unready until its next delivery).
* kafka-python's sender thread ending while the sink uses it (seen once in CI, see
  ``kafka_client_hooks``): the sink says so, fails what the dead producer held (the delivery layer
  sends it again) and delivers on a new producer.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import kafka.producer.kafka
import pytest
from conftest import create_topic, start_apache_kafka
from fakes import make_inspection
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.producer.sender import Sender
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.errors import RecordRefusedError
from inspector.runtime.config import KafkaConfig
from inspector.runtime.delivery import Delivery
from inspector.runtime.kafka.health import Link
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Inspection
from inspector.runtime.sinks.kafka import KafkaSink
from inspector.tools.apache_kafka import KafkaCluster, KafkaNode

pytestmark = pytest.mark.integration


class Done:
    """Collects the outcomes a sink reports for one record, from any thread."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []
        self._lock = threading.Lock()
        self.called = threading.Event()

    def __call__(self, exc: BaseException | None) -> None:
        with self._lock:
            self.calls.append(exc)
        self.called.set()


def _inspection(frame_id: str, camera_id: str) -> Inspection:
    return make_inspection(frame_id, camera_id, anomalous=True)


def _frame_ids(bootstrap: str, topic: str, n: int, timeout: float = 30.0) -> list[str]:
    """``frame_id`` of the first ``n`` results on partition 0 of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    records: list[Any] = []
    try:
        consumer.assign([tp])
        consumer.seek_to_beginning(tp)
        deadline = time.monotonic() + timeout
        while len(records) < n and time.monotonic() < deadline:
            records.extend(consumer.poll(timeout_ms=200).get(tp, []))
    finally:
        consumer.close(autocommit=False)
    return [json.loads(r.value)["frame_id"] for r in records]


def _replace_with_empty(cluster: KafkaCluster, node: KafkaNode) -> None:
    """Start ``node`` again at its address with empty storage, as a new broker would.

    KafkaCluster has no public call for this; its own ``_format`` is the way to format the
    storage the same way the cluster's first start did.
    """
    shutil.rmtree(node.home / "data")
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    cluster._format(node, cluster_id)
    cluster.start_node(node)  # waits until it is a registered broker


@pytest.fixture()
def lone_broker() -> Iterator[KafkaCluster]:
    """A single Apache Kafka node of this test's own: it is stopped and replaced."""
    cluster = start_apache_kafka(1)
    try:
        yield cluster
    finally:
        cluster.stop()


def test_readiness_comes_back_without_traffic_when_the_broker_is_replaced_empty(
    lone_broker: KafkaCluster,
) -> None:
    bootstrap, node = lone_broker.bootstrap, lone_broker.nodes[0]
    topic = f"test.{uuid.uuid4().hex[:12]}"
    create_topic(bootstrap, topic)
    registry = CollectorRegistry()
    sink = KafkaSink(
        KafkaConfig(bootstrap_servers=bootstrap, results_topic=topic), Metrics(registry)
    )
    delivery: Delivery | None = None
    try:
        sink.setup()
        first = Done()
        sink.publish(_inspection("before", "cam-a"), first)
        assert first.called.wait(30) and first.calls == [None]
        assert sink.unready_reason() is None

        lone_broker.stop_node(node)
        wait_until(lambda: sink.link is Link.LOST, 60, "the sink to see the broker gone")
        assert "no connection to any broker" in (sink.unready_reason() or "")

        _replace_with_empty(lone_broker, node)
        # No frame is sent from here on: the broker's answer alone must make the sink ready.
        wait_until(lambda: sink.unready_reason() is None, 60, "readiness without traffic")
        assert sink.link is Link.CONNECTED

        # Ready meant deliverable: the new broker has nothing, not even the topic, and knows
        # nothing of the producer's id; the delivery layer's retries get the next result in.
        create_topic(bootstrap, topic)
        delivery = Delivery([sink], Metrics(CollectorRegistry()), first_retry_s=0.2, max_retry_s=2)
        outcomes: list[list[RecordRefusedError]] = []
        taken = threading.Event()
        delivery.deliver(_inspection("after", "cam-b"), lambda r: (outcomes.append(r), taken.set()))
        assert taken.wait(120), sink.unready_reason()
        assert outcomes == [[]]
        assert _frame_ids(bootstrap, topic, 1) == ["after"]  # the new broker's log only
    finally:
        if delivery is not None:
            delivery.close()
        sink.close()


class SenderCrash(BaseException):
    """What ends the sender thread: it escapes ``except Exception`` in ``Sender.run``."""


class CrashingSender(Sender):  # type: ignore[misc]
    """kafka-python's own Sender, whose run loop raises once when told to.

    It raises only while a record waits in its accumulator, so the record is held, never sent,
    when the thread ends: what the sink must fail and have sent again.
    """

    made: ClassVar[list[CrashingSender]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.armed = threading.Event()
        CrashingSender.made.append(self)

    def run_once(self) -> None:
        if self.armed.is_set() and self._accumulator.has_undrained():
            raise SenderCrash("the sender's run loop failed (test)")
        super().run_once()


def test_a_dead_sender_thread_is_reported_and_the_producer_rebuilt(
    bootstrap: str,
    make_topic: Callable[..., str],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    crashes: list[BaseException | None] = []
    previous_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if isinstance(args.exc_value, SenderCrash):
            crashes.append(args.exc_value)  # expected: the thread dies of it
        else:
            previous_hook(args)

    CrashingSender.made.clear()
    monkeypatch.setattr(kafka.producer.kafka, "Sender", CrashingSender)
    monkeypatch.setattr(threading, "excepthook", hook)
    topic = make_topic(1)
    rebuild_may_connect = threading.Event()
    built: list[KafkaProducer] = []

    def factory(**settings: Any) -> KafkaProducer:
        if built:  # the rebuild waits, so that the test sees the state in between
            assert rebuild_may_connect.wait(60)
        built.append(KafkaProducer(**settings))
        return built[-1]

    registry = CollectorRegistry()
    sink = KafkaSink(
        KafkaConfig(bootstrap_servers=bootstrap, results_topic=topic),
        Metrics(registry),
        producer_factory=factory,
    )
    try:
        sink.setup()
        first = Done()
        sink.publish(_inspection("f1", "cam-a"), first)
        assert first.called.wait(30) and first.calls == [None]

        sender = CrashingSender.made[0]
        sender.armed.set()
        held = Done()
        with caplog.at_level(logging.ERROR):
            sink.publish(_inspection("f2", "cam-a"), held)
            wait_until(lambda: not sender.is_alive(), 30, "the sender thread to die")
            assert len(crashes) == 1
            # The watch thread notices, fails what the dead producer held (once, not as a
            # refusal: the delivery layer sends it again) and builds a new producer.
            assert held.called.wait(30), sink.unready_reason()
            assert len(held.calls) == 1 and isinstance(held.calls[0], Exception)
            assert not isinstance(held.calls[0], RecordRefusedError)
            reason = sink.unready_reason() or ""
            assert "sender thread" in reason and "not running" in reason, reason
        died = [
            r
            for r in caplog.records
            if r.levelno >= logging.ERROR and "sender thread" in r.getMessage()
        ]
        assert len(died) == 1, [r.getMessage() for r in died]  # logged once

        rebuild_may_connect.set()
        wait_until(lambda: sink.unready_reason() is None, 60, "a new producer")
        assert len(built) == 2
        assert registry.get_sample_value("inspector_sink_rebuilds_total", {"sink": "kafka"}) == 1

        again, third = Done(), Done()
        sink.publish(_inspection("f2", "cam-a"), again)  # the delivery layer's retry
        sink.publish(_inspection("f3", "cam-a"), third)
        assert again.called.wait(30) and third.called.wait(30)
        assert again.calls == [None] and third.calls == [None]
        assert len(held.calls) == 1  # never a second outcome for the held record
    finally:
        rebuild_may_connect.set()
        sink.close()
    # Held in the dead producer's accumulator, never sent: each frame exactly once, in order.
    assert _frame_ids(bootstrap, topic, 3) == ["f1", "f2", "f3"]
