"""KafkaSink with a fake producer: settings, callbacks, fallbacks, dead letters (no broker)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
from fakes import make_inspection
from kafka.errors import (
    ClusterAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
)
from kafka_producer_fakes import Clock, Factory, FakeProducer, make_sink
from prometheus_client import CollectorRegistry

from inspector.errors import ConfigError, InspectorError, RecordRefusedError
from inspector.runtime.config import KafkaConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Inspection, RawMessage
from inspector.runtime.sinks.kafka import KafkaSink


def _inspection(camera: str = "cam-a") -> Inspection:
    return make_inspection("f1", camera, image_size=(2, 2))


def _sink(
    factory: Factory | None = None, registry: CollectorRegistry | None = None, **kafka: Any
) -> tuple[KafkaSink, Factory, Clock]:
    return make_sink(factory, registry, **kafka)


def test_producer_settings() -> None:
    sink = KafkaSink(
        KafkaConfig(compression="none", linger_ms=7, max_message_bytes=4 << 20),
        Metrics(CollectorRegistry()),
    )
    settings = sink.producer_settings()
    assert settings["acks"] == "all"
    assert settings["enable_idempotence"] is True
    assert settings["compression_type"] is None
    assert settings["linger_ms"] == 7
    assert settings["max_request_size"] == 4 << 20
    assert sink.producer_settings(idempotent=False)["enable_idempotence"] is False
    gzip = KafkaSink(KafkaConfig(), Metrics(CollectorRegistry())).producer_settings()
    assert gzip["compression_type"] == "gzip"


def test_delivery_calls_done_and_times_the_publish() -> None:
    registry = CollectorRegistry()
    sink, factory, clock = _sink(registry=registry)
    calls: list[BaseException | None] = []
    sink.publish(_inspection("cam-a"), calls.append)
    sent = factory.made[0].sent[0]
    assert (sent["topic"], sent["key"]) == ("results", b"cam-a")
    assert calls == []  # not before the broker acknowledged it
    clock.now = 0.25
    factory.made[0].futures[0].success(object())
    assert calls == [None]
    assert registry.get_sample_value("inspector_stage_seconds_sum", {"stage": "publish"}) == 0.25


def test_failures_reach_done_and_connection_errors_make_the_sink_unready() -> None:
    sink, factory, _ = _sink()
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    timeout = KafkaTimeoutError("delivery timed out")
    factory.made[0].futures[0].failure(timeout)
    assert calls == [timeout]
    assert not sink.ready()
    sink.publish(_inspection(), calls.append)
    factory.made[0].futures[1].success(object())
    assert sink.ready()


def test_send_raising_calls_done_once_and_does_not_raise() -> None:
    sink, factory, _ = _sink()
    too_large = MessageSizeTooLargeError("too large")
    factory.made[0].send_error = too_large
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    # A refusal of this record: the pipeline dead-letters the frame instead of retrying.
    assert len(calls) == 1 and isinstance(calls[0], RecordRefusedError)
    assert calls[0].__cause__ is too_large and "too large" in str(calls[0])
    assert sink.ready()


def test_a_broker_refusing_idempotence_at_connect_falls_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        sink, factory, _ = _sink(Factory(refuse_idempotence=True))
    assert not sink.idempotent
    assert factory.made[0].settings["enable_idempotence"] is False
    assert "idempotent" in caplog.text


def test_a_broker_refusing_idempotence_at_runtime_reconnects_without_it() -> None:
    sink, factory, _ = _sink()
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    refused = ClusterAuthorizationFailedError()
    factory.made[0].futures[0].failure(refused)
    assert calls == [refused]
    sink.publish(_inspection(), calls.append)
    assert factory.made[0].closed
    assert len(factory.made) == 2
    assert factory.made[1].settings["enable_idempotence"] is False
    assert len(factory.made[1].sent) == 1


def test_missing_compression_library_is_a_config_error() -> None:
    def factory(**settings: Any) -> FakeProducer:
        raise RuntimeError("Libraries for snappy compression codec not found")

    sink = KafkaSink(
        KafkaConfig(compression="snappy"), Metrics(CollectorRegistry()), producer_factory=factory
    )
    with pytest.raises(ConfigError, match=r"kafka\.compression=snappy"):
        sink.setup()


def test_dead_letter_headers_follow_the_original_ones() -> None:
    sink, factory, _ = _sink()
    raw = RawMessage(b"\x89PNG", b"cam-a", (("frame_id", b"f"), ("error", b"old")), "frames", 2, 9)
    letter = DeadLetter("bad", "undecodable", "decode", "cam-a", raw, "2026-01-01T00:00:00+00:00")
    sink.publish_dead_letter(letter, lambda exc: None)
    sent = factory.made[0].sent[0]
    assert (sent["topic"], sent["key"], sent["value"]) == ("dlq", b"cam-a", b"\x89PNG")
    names = [name for name, _ in sent["headers"]]
    assert names[:2] == ["frame_id", "error"]
    assert dict(sent["headers"])["error"] == b"bad"  # ours win in a dict view
    assert dict(sent["headers"])["source_partition"] == b"2"


def test_flush_timeout_and_close() -> None:
    sink, factory, _ = _sink()
    factory.made[0].flush_error = KafkaTimeoutError()
    assert sink.flush(0.1) is False
    factory.made[0].flush_error = None
    assert sink.flush(0.1) is True
    sink.close()
    assert factory.made[0].closed and not sink.ready()
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    assert len(calls) == 1 and isinstance(calls[0], InspectorError)
    assert sink.flush(0.1) is True


def test_a_producer_in_a_fatal_state_is_rebuilt_with_backoff() -> None:
    # kafka-python after a broker came back without its producer state: UnknownProducerId, then
    # a failed InitProducerId, and every later send fails with this, for ever.
    registry = CollectorRegistry()
    sink, factory, clock = _sink(registry=registry)
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    fatal = KafkaError("Unexpected error in InitProducerIdResponse: [Error -1] UnknownError")
    factory.made[0].futures[0].failure(fatal)
    assert calls == [fatal]  # not a refusal: the pipeline retries it
    reason = sink.unready_reason()
    assert reason is not None and "rebuilding the producer" in reason and "InitProducerId" in reason
    assert not sink.ready()

    sink.publish(_inspection(), calls.append)  # the retry builds a new producer
    assert len(factory.made) == 2 and factory.made[0].closed
    assert registry.get_sample_value("inspector_sink_rebuilds_total", {"sink": "kafka"}) == 1
    factory.made[1].futures[0].failure(fatal)  # the new one fails the same way at once

    sink.publish(_inspection(), calls.append)  # within the backoff: no third producer yet
    assert len(factory.made) == 2
    assert isinstance(calls[-1], InspectorError) and "next try in" in str(calls[-1])
    assert "InitProducerId" in (sink.unready_reason() or "")  # the cause stays visible

    clock.now = 10.0  # past the backoff
    sink.publish(_inspection(), calls.append)
    assert len(factory.made) == 3
    factory.made[2].futures[0].success(object())
    assert calls[-1] is None and sink.ready()


def test_a_retriable_failure_keeps_the_producer() -> None:
    sink, factory, _ = _sink()
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    factory.made[0].futures[0].failure(KafkaTimeoutError("delivery timed out"))
    assert "deliveries failing" in (sink.unready_reason() or "")
    sink.publish(_inspection(), calls.append)
    assert len(factory.made) == 1


def test_a_dead_letter_with_huge_headers_drops_them_and_keeps_its_coordinates() -> None:
    sink, factory, _ = _sink(max_message_bytes=64 * 1024)
    raw = RawMessage(b"x" * 10, b"cam", (("junk", b"h" * 200_000),), "frames", 3, 42)
    letter = DeadLetter("bad header", "malformed_record", "parse", "cam", raw, "2026-11-29T00:00Z")
    calls: list[BaseException | None] = []
    sink.publish_dead_letter(letter, calls.append)
    sent = factory.made[0].sent[0]
    headers = dict(sent["headers"])
    assert "junk" not in headers and b"1 headers" in headers["headers_dropped"]
    assert (headers["source_partition"], headers["source_offset"]) == (b"3", b"42")
    assert sum(len(v) for _, v in sent["headers"]) < 64 * 1024


def test_close_does_not_wait_for_a_connection_attempt_in_progress() -> None:
    # SIGTERM during start-up: the constructor may look for a broker for 30 s with the lock held.
    release = threading.Event()
    made: list[FakeProducer] = []

    def slow_factory(**settings: Any) -> FakeProducer:
        release.wait(10)
        made.append(FakeProducer(**settings))
        return made[-1]

    sink = KafkaSink(KafkaConfig(), Metrics(CollectorRegistry()), producer_factory=slow_factory)
    failures: list[BaseException] = []

    def set_up() -> None:
        try:
            sink.setup()
        except InspectorError as exc:
            failures.append(exc)

    connecting = threading.Thread(target=set_up)
    connecting.start()
    time.sleep(0.1)  # inside the constructor, lock held
    started = time.monotonic()
    sink.close()
    assert time.monotonic() - started < 1.0  # did not wait for the attempt
    release.set()
    connecting.join(5)
    # What the attempt built after the close is closed at once, never used.
    assert made and made[0].closed
    assert failures and "closed" in str(failures[0])
    assert not sink.ready()


def test_a_record_the_broker_does_not_confirm_for_long_makes_the_sink_unready() -> None:
    # A partition without a leader: the client retries for minutes and fails nothing.
    sink, factory, clock = _sink(publish_stall_ms=10_000)
    calls: list[BaseException | None] = []
    sink.publish(_inspection(), calls.append)
    clock.now = 9.0
    assert sink.unready_reason() is None  # a slow broker, not yet a stalled one
    clock.now = 12.0
    reason = sink.unready_reason()
    assert reason is not None and "unconfirmed" in reason and "results for 12 s" in reason
    factory.made[0].futures[0].success(object())
    assert sink.unready_reason() is None and calls == [None]
    # A failed send is no longer waiting either (the delivery layer sends it again).
    sink.publish_dead_letter(
        DeadLetter(
            reason="r", error_type="e", stage="decode", camera_id="c", raw=None, failed_at="t"
        ),
        calls.append,
    )
    factory.made[0].futures[1].failure(KafkaTimeoutError("expired"))
    clock.now = 60.0
    assert "unconfirmed" not in (sink.unready_reason() or "")
