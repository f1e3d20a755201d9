"""KafkaSink's health over fake producers: lost brokers, metadata answers, a dead sender thread.

The fakes stand for kafka-python (tests/unit/runtime/sinks/kafka_producer_fakes.py); the sink,
its state machine and its bookkeeping of pending records are the real ones.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fakes import make_inspection
from kafka.errors import KafkaError, KafkaTimeoutError
from kafka_producer_fakes import Factory, make_sink
from prometheus_client import CollectorRegistry

from inspector.errors import InspectorError, RecordRefusedError
from inspector.runtime.kafka.health import Link
from inspector.runtime.records import Inspection


def _inspection(frame: str = "f1") -> Inspection:
    return make_inspection(frame, "cam-a", image_size=(2, 2))


def test_after_losing_the_brokers_a_metadata_answer_makes_the_sink_ready_without_traffic() -> None:
    sink, factory, clock = make_sink()
    producer = factory.made[0]
    cluster = producer._metadata
    sink.check()
    assert sink.ready() and cluster.requests == 0  # nothing asked while all is well

    producer.connections = 0.0
    assert "no connection to any broker" in (sink.unready_reason() or "")  # seen at once...
    assert sink.link is Link.CONNECTED  # ...by a query that changes nothing
    producer.connections = 1.0
    assert sink.ready()  # a blip between two checks leaves no trace

    producer.connections = 0.0
    clock.now = 3.0
    sink.check()  # the watch notes the loss and asks for metadata
    assert sink.link is Link.LOST and cluster.requests == 1
    clock.now = 10.0
    assert sink.unready_reason() == (
        "kafka sink (localhost:9092): no connection to any broker (for 7 s)"
    )
    producer.connections = 1.0  # a broker is back, maybe a new one without our producer state
    sink.check()
    assert sink.link is Link.RECONNECTING and cluster.requests == 2
    assert "ready once a broker answers a metadata request" in (sink.unready_reason() or "")

    cluster.answer()  # kafka-python applied a metadata response (its sender thread)
    assert sink.link is Link.CONNECTED and sink.ready()
    sink.check()
    assert cluster.requests == 2  # no more asking once answered
    assert factory.made == [producer] and producer.sent == []  # no traffic, no new producer


def test_a_delivery_also_ends_the_wait_and_a_metadata_answer_does_not_end_failing() -> None:
    sink, factory, _ = make_sink()
    producer = factory.made[0]
    producer.connections = 0.0
    sink.check()
    producer.connections = 1.0
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    producer.futures[0].success(object())
    assert calls == [None] and sink.link is Link.CONNECTED

    sink.publish(_inspection(), calls.append)
    producer.futures[1].failure(KafkaTimeoutError("expired"))
    producer._metadata.answer()  # the broker answers, but deliveries still fail
    assert sink.link is Link.FAILING and "deliveries failing" in (sink.unready_reason() or "")


def test_a_producer_whose_sender_thread_died_is_replaced_and_its_records_sent_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    sink, factory, clock = make_sink(Factory(senders=True), registry)
    first = factory.made[0]
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)  # held by the first producer
    assert first._sender is not None
    first._sender.end()

    reason = sink.unready_reason()
    assert reason is not None and "sender thread (fake-producer-network-thread)" in reason
    assert sink.link is Link.CONNECTED and calls == []  # the query acted on nothing

    factory.unreachable = True  # the first rebuild finds no broker: see the state in between
    with caplog.at_level(logging.ERROR):
        sink.check()
        # The record it held fails once, not as a refusal: the delivery layer sends it again.
        assert len(calls) == 1 and isinstance(calls[0], InspectorError)
        assert not isinstance(calls[0], RecordRefusedError)
        assert first.closed and sink.link is Link.BROKEN
        assert "sender thread" in (sink.unready_reason() or "")
        sink.check()  # within the backoff: no new try, no second error line
        assert len(factory.made) == 1
    died = [r for r in caplog.records if "sender thread" in r.getMessage()]
    assert len(died) == 1 and died[0].levelno == logging.ERROR

    factory.unreachable = False
    clock.now = 5.0
    sink.check()
    assert len(factory.made) == 2 and sink.ready()
    assert registry.get_sample_value("inspector_sink_rebuilds_total", {"sink": "kafka"}) == 2
    first.futures[0].success(object())  # had the dead producer answered after all: ignored
    assert len(calls) == 1

    sink.publish(_inspection(), calls.append)  # the delivery layer's retry
    factory.made[1].futures[0].success(object())
    assert calls[1:] == [None] and sink.ready()
    sink.close()


def test_a_send_finds_a_dead_sender_and_goes_to_a_new_producer() -> None:
    sink, factory, _ = make_sink(Factory(senders=True))
    assert factory.made[0]._sender is not None
    factory.made[0]._sender.end()
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    assert len(factory.made) == 2 and len(factory.made[1].sent) == 1 and factory.made[0].closed
    factory.made[1].futures[0].success(object())
    assert calls == [None] and sink.ready()
    sink.close()


def test_events_of_a_replaced_producer_change_nothing() -> None:
    sink, factory, _ = make_sink(Factory(senders=True))
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    sink.publish(_inspection(), calls.append)
    fatal = KafkaError("Unexpected error in InitProducerIdResponse")
    factory.made[0].futures[0].failure(fatal)
    sink.check()  # replaces it; the record it still held fails at once
    assert len(factory.made) == 2 and calls[0] is fatal and isinstance(calls[1], InspectorError)
    sender = factory.made[0]._sender
    assert sender is not None and sender.force_closed and not sender.is_alive()
    old_cluster = factory.made[0]._metadata
    assert not old_cluster.listeners  # no longer listened to
    factory.made[0].futures[1].failure(fatal)  # late: settled already, and of the old producer
    assert len(calls) == 2 and sink.ready()
    sink.close()


def test_close_fails_what_is_left_and_nothing_moves_after_it() -> None:
    sink, factory, _ = make_sink()
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    sink.close()
    assert len(calls) == 1 and isinstance(calls[0], InspectorError)
    factory.made[0].futures[0].success(object())  # a late acknowledgement: already failed
    factory.made[0]._metadata.answer()
    assert len(calls) == 1 and sink.link is Link.CLOSED
    assert sink.unready_reason() == "kafka sink (localhost:9092): closed"


def test_each_record_is_settled_once_when_callbacks_race_a_replacement() -> None:
    # Callbacks on the "sender thread", sends, checks and queries at once, as in the daemon:
    # every done is called exactly once, whoever settles it.
    sink, factory, _ = make_sink()
    results: dict[int, list[BaseException | None]] = {}
    lock = threading.Lock()

    def done_for(n: int) -> Callable[[BaseException | None], None]:
        def done(exc: BaseException | None) -> None:
            with lock:
                results.setdefault(n, []).append(exc)

        return done

    def publish(n: int) -> None:
        sink.publish(_inspection(f"f{n}"), done_for(n))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(publish, range(200)))
    fatal = KafkaError("fatal")
    factory.made[0].futures[0].failure(fatal)
    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(f.success, object()) for f in factory.made[0].futures[1:]]
        checks = [pool.submit(sink.check) for _ in range(10)]
        queries = [pool.submit(sink.unready_reason) for _ in range(50)]
        for job in answers + checks + queries:
            job.result()
    assert sorted(results) == list(range(200))
    assert all(len(calls) == 1 for calls in results.values())
    sink.close()
