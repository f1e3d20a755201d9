"""KafkaSource with a fake consumer: settings, commits, pause, lag, failures (no broker)."""

from __future__ import annotations

import asyncio
import io
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import pytest
from kafka import OffsetAndMetadata, TopicPartition
from kafka.errors import CorruptRecordError, KafkaConnectionError, KafkaTimeoutError
from kafka.future import Future
from kafka.structs import ConsumerGroupMetadata, MemberState
from PIL import Image
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from inspector.errors import InspectorError
from inspector.runtime.config import KafkaConfig, KafkaSourceConfig
from inspector.runtime.kafka.consumed import InvalidHeaderError, captured_at
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Frame
from inspector.runtime.sources.kafka import KafkaSource

TP = TopicPartition("frames", 0)
PNG = bytes(cv2.imencode(".png", np.full((4, 6, 3), 9, np.uint8))[1].tobytes())


@dataclass
class Rec:
    offset: int
    value: bytes | None = PNG
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = 1_764_331_200_000


class FakeConsumer:
    """The parts of KafkaConsumer the source uses."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.batches: deque[dict[TopicPartition, list[Rec]]] = deque()
        self.assigned = {TP}
        self.paused_set: set[TopicPartition] = set()
        self.highwaters: dict[TopicPartition, int] = {}
        self.positions: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.async_commits: list[dict[TopicPartition, OffsetAndMetadata]] = []
        self.commit_error: BaseException | None = None
        self.poll_error: BaseException | None = None
        self.connections = 1.0
        self.listener: Any = None
        self.closed = False
        self.states: deque[str] = deque()
        self.polls = 0
        self.seeks: list[tuple[TopicPartition, int]] = []

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.topics = topics
        self.listener = listener

    def poll(self, timeout_ms: int, max_records: int) -> dict[TopicPartition, list[Rec]]:
        self.polls += 1
        if self.poll_error is not None:
            raise self.poll_error
        if self.states:
            self.states.popleft()
        return self.batches.popleft() if self.batches else {}

    def group_metadata(self) -> ConsumerGroupMetadata:
        return ConsumerGroupMetadata(state=self.states[0] if self.states else MemberState.STABLE)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def paused(self) -> set[TopicPartition]:
        return set(self.paused_set)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_set |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_set -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.positions[tp] = offset

    def highwater(self, tp: TopicPartition) -> int | None:
        return self.highwaters.get(tp)

    def position(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        return self.positions.get(tp)

    def commit_async(self, offsets: dict[TopicPartition, Any], callback: Any = None) -> Future:
        self.async_commits.append(offsets)
        future = Future()
        if self.commit_error is not None:
            future.failure(self.commit_error)
        else:
            future.success(None)
        if callback is not None:
            callback(offsets, self.commit_error or object())
        return future

    def commit(self, offsets: dict[TopicPartition, Any], timeout_ms: int | None = None) -> None:
        if self.commit_error is not None:
            raise self.commit_error
        self.commits.append(offsets)

    def metrics(self) -> dict[str, dict[str, float]]:
        return {"consumer-metrics": {"connection-count": self.connections}}

    def close(self, autocommit: bool = True) -> None:
        assert autocommit is False
        self.closed = True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _source(
    registry: CollectorRegistry | None = None,
    source_config: dict[str, Any] | None = None,
    **kafka: Any,
) -> tuple[KafkaSource, FakeConsumer, Clock]:
    consumers: list[FakeConsumer] = []

    def factory(**settings: Any) -> FakeConsumer:
        consumers.append(FakeConsumer(**settings))
        return consumers[-1]

    clock = Clock()
    source = KafkaSource(
        KafkaConfig(frames_topic="frames", commit_interval_ms=1000, **kafka),
        KafkaSourceConfig(decode_threads=2, **(source_config or {})),
        Metrics(registry or CollectorRegistry()),
        consumer_factory=factory,
        clock=clock,
    )
    source.setup()
    return source, consumers[0], clock


def test_consumer_settings_commit_manually_from_earliest_with_client_side_limits() -> None:
    source = KafkaSource(
        KafkaConfig(
            bootstrap_servers="a:9092, b:9092",
            group_id="g",
            max_message_bytes=30 << 20,
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username="inspector",
            sasl_password=SecretStr("s3cret"),
            ssl_cafile="/etc/ca.pem",
        ),
        KafkaSourceConfig(max_poll_records=7, fetch_max_wait_ms=35),
        Metrics(CollectorRegistry()),
    )
    settings = source.consumer_settings()
    assert settings["fetch_max_wait_ms"] == 35
    assert settings["bootstrap_servers"] == ["a:9092", "b:9092"]
    assert settings["group_id"] == "g"
    assert settings["enable_auto_commit"] is False
    assert settings["auto_offset_reset"] == "earliest"
    assert settings["max_poll_records"] == 7
    assert settings["max_partition_fetch_bytes"] >= 30 << 20
    assert settings["fetch_max_bytes"] >= settings["max_partition_fetch_bytes"]
    # A group formed before a new topic's metadata arrived waits at most this for partitions.
    assert settings["metadata_max_age_ms"] <= 30_000
    assert settings["sasl_plain_password"] == "s3cret"  # the secret's value, not "**********"
    assert settings["sasl_mechanism"] == "SCRAM-SHA-512"
    assert settings["security_protocol"] == "SASL_SSL"
    assert settings["ssl_cafile"] == "/etc/ca.pem"
    assert source.topics == ("inspector.frames",)


def test_setup_failure_is_an_inspector_error_naming_the_servers() -> None:
    def factory(**settings: Any) -> FakeConsumer:
        raise KafkaTimeoutError("bootstrap timed out")

    source = KafkaSource(
        KafkaConfig(bootstrap_servers="nowhere:9092"),
        KafkaSourceConfig(),
        Metrics(CollectorRegistry()),
        consumer_factory=factory,
    )
    with pytest.raises(InspectorError, match="nowhere:9092"):
        source.setup()
    with pytest.raises(InspectorError, match="setup"):
        source.poll(0)


def test_items_come_in_offset_order_with_acks_bound_to_their_offsets() -> None:
    source, consumer, _ = _source()
    tp1 = TopicPartition("frames", 1)
    consumer.batches.append(
        {
            tp1: [Rec(0, key=b"cam-1")],
            TP: [Rec(5), Rec(6, value=b""), Rec(7, value=b"junk")],
        }
    )
    items = source.poll(0.1)
    coords = [
        (i.meta.source_partition, i.meta.source_offset)
        if isinstance(i, Frame)
        else (i.raw.partition, i.raw.offset)  # type: ignore[union-attr]
        for i in items
    ]
    assert coords == [(0, 5), (0, 6), (0, 7), (1, 0)]
    assert [type(i) for i in items] == [Frame, DeadLetter, DeadLetter, Frame]
    assert source.tracker.in_flight() == 4
    items[1].ack()
    assert source.tracker.pending(TP) == 2
    items[0].ack()
    assert source.tracker.committable() == {TP: 7}
    source.close()


def test_commits_are_periodic_on_the_polling_thread_and_only_for_acked_offsets() -> None:
    source, consumer, clock = _source()
    consumer.batches.append({TP: [Rec(0), Rec(1), Rec(2)]})
    items = source.poll(0.1)
    items[0].ack()
    items[2].ack()
    source.poll(0.1)
    assert consumer.async_commits == []  # the interval has not passed
    clock.now += 1.0
    source.poll(0.1)
    assert consumer.async_commits == [{TP: OffsetAndMetadata(1, "", -1)}]
    assert source.tracker.committed(TP) == 1
    clock.now += 1.0
    source.poll(0.1)
    assert len(consumer.async_commits) == 1  # nothing new to commit
    items[1].ack()
    source.final_commit(1.0)
    assert consumer.commits == [{TP: OffsetAndMetadata(3, "", -1)}]
    source.close()
    assert consumer.closed


def test_failed_commits_are_retried(caplog: pytest.LogCaptureFixture) -> None:
    source, consumer, clock = _source()
    consumer.batches.append({TP: [Rec(0)]})
    source.poll(0.1)[0].ack()
    consumer.commit_error = KafkaConnectionError("down")
    clock.now += 1.0
    with caplog.at_level(logging.WARNING):
        source.poll(0.1)
    assert "offset commit failed" in caplog.text
    assert source.tracker.committed(TP) == 0
    consumer.commit_error = None
    clock.now += 1.0
    source.poll(0.1)
    assert source.tracker.committed(TP) == 1
    consumer.commit_error = KafkaConnectionError("down")
    source.tracker.track(TP, 1)
    source.tracker.done(TP, 1)
    assert source.commit(1.0) is False
    source.close()


def test_pause_and_resume_take_effect_on_the_next_poll() -> None:
    source, consumer, _ = _source()
    source.pause()
    assert consumer.paused_set == set()  # only the polling thread touches the consumer
    source.poll(0.1)
    assert consumer.paused_set == {TP}
    tp1 = TopicPartition("frames", 1)
    asyncio.run(consumer.listener.on_partitions_assigned({TP, tp1}))
    assert consumer.paused_set == {TP, tp1}  # new partitions start paused
    source.resume()
    source.poll(0.1)
    assert consumer.paused_set == set()
    source.close()


def test_poll_stays_in_the_consumer_until_the_group_is_joined() -> None:
    source, consumer, _ = _source()
    consumer.states.extend([MemberState.UNJOINED] + [MemberState.REBALANCING] * 3)
    consumer.batches.extend([{}, {}, {}, {TP: [Rec(0)]}])
    assert len(source.poll(0)) == 1  # one call, however many consumer polls the join took
    assert consumer.polls == 4
    assert source.poll(0) == []
    assert consumer.polls == 5  # stable: a single poll
    source.close()


def test_ready_only_once_the_group_assigns_partitions() -> None:
    source, consumer, clock = _source(group_id="line1", session_timeout_ms=10_000)
    source.source_id = "kafka-2"  # as the intake names it
    consumer.states.extend([MemberState.UNJOINED, MemberState.REBALANCING])
    source.poll(0)  # connected, subscribed, the join under way
    waiting = "kafka source kafka-2: waiting for a partition assignment of frames (group line1)"
    assert not source.ready() and source.unready_reason() == waiting

    asyncio.run(consumer.listener.on_partitions_assigned(set()))  # a join that gave nothing
    reason = source.unready_reason()
    assert reason is not None and reason.startswith(waiting + ": ")
    assert "ready as a standby in 40 s" in reason  # metadata max age 30 s + session 10 s
    clock.now += 40.0
    assert source.ready() and source.unready_reason() is None
    assert (source.readiness_note() or "").startswith("kafka source kafka-2: standby: group line1")

    asyncio.run(consumer.listener.on_partitions_assigned({TP}))
    assert source.ready() and source.readiness_note() is None
    asyncio.run(consumer.listener.on_partitions_revoked({TP}))  # rebalancing: still ready
    assert source.ready()
    source.close()
    assert source.unready_reason() == "source kafka not connected"


def test_poll_survives_broker_errors_and_reports_unready(caplog: pytest.LogCaptureFixture) -> None:
    source, consumer, _ = _source()
    asyncio.run(consumer.listener.on_partitions_assigned({TP}))
    assert source.ready()
    consumer.poll_error = KafkaConnectionError("connection refused")
    with caplog.at_level(logging.WARNING):
        assert source.poll(0.01) == []
    assert not source.ready()
    assert "poll failed" in caplog.text
    consumer.poll_error = None
    source.poll(0.01)
    assert source.ready()
    consumer.connections = 0.0  # kafka-python keeps polling quietly while the broker is gone
    source.poll(0.01)
    assert not source.ready()
    source.close()
    assert not source.ready()


def test_lag_is_highwater_minus_committed_else_position() -> None:
    registry = CollectorRegistry()
    source, consumer, clock = _source(registry)

    def lag(partition: int) -> float | None:
        return registry.get_sample_value(
            "inspector_consumer_lag", {"topic": "frames", "partition": str(partition)}
        )

    tp1 = TopicPartition("frames", 1)
    consumer.assigned = {TP, tp1}
    consumer.highwaters = {TP: 10, tp1: 4}
    consumer.positions = {tp1: 4}
    consumer.batches.append({TP: [Rec(3), Rec(4)]})
    items = source.poll(0.1)
    assert lag(0) == 7  # consumption started at 3; nothing committed since
    assert lag(1) == 0  # caught up, nothing read: from the fetch position
    for item in items:
        item.ack()
    clock.now += 1.0
    source.poll(0.1)
    source.poll(0.1)
    assert lag(0) == 5
    source.close()


def test_revoked_partitions_commit_acked_offsets_and_forget_the_rest() -> None:
    registry = CollectorRegistry()
    source, consumer, _ = _source(registry)
    consumer.highwaters = {TP: 3}
    consumer.batches.append({TP: [Rec(0), Rec(1), Rec(2)]})
    items = source.poll(0.1)
    items[0].ack()
    asyncio.run(consumer.listener.on_partitions_revoked({TP}))
    assert consumer.async_commits == [{TP: OffsetAndMetadata(1, "", -1)}]
    assert source.commit(1.0)  # nothing of a partition in limbo is committed mid-rebalance
    assert consumer.commits == []
    asyncio.run(consumer.listener.on_partitions_assigned(set()))  # it went elsewhere
    assert not source.tracker._parts
    lag = {"topic": "frames", "partition": "0"}
    assert registry.get_sample_value("inspector_consumer_lag", lag) is None
    items[1].ack()  # late: the partition belongs to someone else now
    assert source.tracker.in_flight() == 0
    consumer.batches.append({TP: [Rec(7)]})
    source.poll(0.1)[0].ack()
    asyncio.run(consumer.listener.on_partitions_lost({TP}))  # evicted: no commit possible
    assert len(consumer.async_commits) == 1
    assert not source.tracker._parts
    source.close()


# Waiting for frames in flight on revocation (kafka.revoke_drain_ms) awaits kafka-python's own
# event loop: tested on the real client in a real rebalance and close,
# tests/integration/test_kafka_source.py (test_a_revocation_*, test_closing_does_not_wait_*).


def test_a_failing_rebalance_handler_does_not_stop_the_source(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # kafka-python re-raises a listener's exception from every later poll(): one bug in the
    # handler would stop the source for good ("User rebalance callback throws an error").
    source, consumer, _ = _source()
    consumer.batches.append({TP: [Rec(0)]})
    source.poll(0.1)[0].ack()

    def broken(*_: Any) -> dict[TopicPartition, int]:
        raise RuntimeError("handler bug")

    monkeypatch.setattr(source.tracker, "committable", broken)
    monkeypatch.setattr(source.tracker, "revoke", broken)
    with caplog.at_level(logging.ERROR):
        asyncio.run(consumer.listener.on_partitions_revoked({TP}))
        asyncio.run(consumer.listener.on_partitions_assigned(set()))
        asyncio.run(consumer.listener.on_partitions_lost({TP}))
    failed = [r for r in caplog.records if r.exc_info and "handler bug" in str(r.exc_info[1])]
    assert [r.getMessage().split(" failed")[0] for r in failed] == [
        "kafka source: handling revoked partitions",
        "kafka source: handling assigned partitions",
        "kafka source: handling lost partitions",
    ]
    assert consumer.async_commits == []
    source.close()


def test_a_partition_that_comes_back_keeps_its_offsets_in_flight() -> None:
    # kafka-python 3 keeps the fetch position of a partition re-assigned to the same member,
    # so offsets still in the pipeline are not read again: they must keep holding commits.
    source, consumer, _ = _source()
    consumer.batches.append({TP: [Rec(0), Rec(1), Rec(2)]})
    items = source.poll(0.1)
    items[0].ack()
    asyncio.run(consumer.listener.on_partitions_revoked({TP}))
    asyncio.run(consumer.listener.on_partitions_assigned({TP}))
    assert source.tracker.pending(TP) == 2
    consumer.batches.append({TP: [Rec(3)]})
    source.poll(0.1)[0].ack()
    source.final_commit(1.0)
    assert consumer.commits == []  # 1 and 2 are still in flight: still at 1
    items[1].ack()
    items[2].ack()
    source.final_commit(1.0)
    assert consumer.commits == [{TP: OffsetAndMetadata(4, "", -1)}]
    source.close()


@pytest.mark.parametrize(
    ("header", "timestamp", "expected"),
    [
        (b"2026-11-28T12:00:00+00:00", 0, "2026-11-28T12:00:00+00:00"),
        (b"2026-11-28T12:00:00.5Z", 0, "2026-11-28T12:00:00.5Z"),
        (b"1764331200000", 0, "2025-11-28T12:00:00.000+00:00"),
        (b"1764331200123", -1, "2025-11-28T12:00:00.123+00:00"),
        (None, 1764331200000, "2025-11-28T12:00:00.000+00:00"),
        (b"", -1, None),
        (None, None, None),
    ],
)
def test_captured_at(header: bytes | None, timestamp: int | None, expected: str | None) -> None:
    assert captured_at(header, timestamp) == expected


def test_fetched_batches_are_checksummed_in_c() -> None:
    # kafka-python verifies every fetched batch's CRC-32C; without the crc32c package it does
    # so in pure Python, which took a third of the source thread at 500 frames/s.
    import crc32c
    from kafka.record import util

    assert util.calc_crc32c.__defaults__ == (crc32c.crc32c,)


def test_a_record_the_client_cannot_read_is_dead_lettered_and_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # kafka-python raises on every poll for a header key that is not UTF-8: without a skip the
    # partition would never move again.
    registry = CollectorRegistry()
    source, consumer, _ = _source(registry)
    consumer.positions[TP] = 5
    consumer.poll_error = CorruptRecordError("Found invalid record structure: UnicodeDecodeError")
    with caplog.at_level(logging.WARNING):
        items = source.poll(0.1)
    assert len(items) == 1 and isinstance(items[0], DeadLetter)
    letter = items[0]
    assert (letter.error_type, letter.stage) == ("corrupt_record", "fetch")
    assert letter.raw is not None and (letter.raw.partition, letter.raw.offset) == (0, 5)
    assert consumer.seeks == [(TP, 6)]
    assert "frames:0:5" in caplog.text
    consumer.poll_error = None
    consumer.batches.append({TP: [Rec(6)]})
    (frame,) = source.poll(0.1)
    assert isinstance(frame, Frame)
    letter.ack()
    frame.ack()
    assert source.tracker.committable() == {TP: 7}  # the partition moves on past it
    assert registry.get_sample_value("inspector_frames_received_total", {"source": "kafka"}) == 2


def test_a_poll_holds_at_most_its_decoded_byte_budget() -> None:
    big = bytes(cv2.imencode(".png", np.zeros((100, 100, 3), np.uint8))[1].tobytes())  # 30 kB
    other = TopicPartition("frames", 1)
    source, consumer, _ = _source(source_config={"max_poll_decoded_bytes": 70_000})
    consumer.assigned = {TP, other}
    consumer.batches.append(
        {TP: [Rec(0, big), Rec(1, big), Rec(2, big)], other: [Rec(10, big), Rec(11, big)]}
    )
    items = source.poll(0.1)
    assert [i.meta.source_offset for i in items if isinstance(i, Frame)] == [0, 1]
    # The rest is fetched again: each partition from its first record not taken.
    assert consumer.seeks == [(TP, 2), (other, 10)]
    assert source.tracker.pending(TP) == 2 and source.tracker.pending(other) == 0


def test_a_decompression_bomb_is_a_too_large_dead_letter() -> None:
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, "PNG", optimize=True)
    source, consumer, _ = _source()
    consumer.batches.append({TP: [Rec(0, buffer.getvalue())]})
    (letter,) = source.poll(0.1)
    assert isinstance(letter, DeadLetter) and letter.error_type == "too_large"
    assert "12000 x 12000" in letter.reason


@pytest.mark.parametrize(
    "header", [b"yesterday", b"99999999999999999999", "²".encode(), "١٢٣".encode(), b"\xff"]
)
def test_a_captured_at_that_is_not_a_time_is_refused(header: bytes) -> None:
    with pytest.raises(InvalidHeaderError, match="captured_at"):
        captured_at(header, 1764331200000)
