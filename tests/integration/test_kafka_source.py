"""KafkaSource against a real broker: decoding, dead letters, commits, pause, lag."""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime

import cv2
import numpy as np
import pytest
from conftest import create_topic, start_apache_kafka
from kafka import KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.runtime.config import KafkaConfig, KafkaSourceConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Frame
from inspector.runtime.sources.kafka import KafkaSource

pytestmark = pytest.mark.integration

Item = Frame | DeadLetter
#: 6000 ms is Apache Kafka's minimum session timeout and joins a group fastest.
GROUP_TIMEOUTS = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}


def _image(seed: int, size: int = 32) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size + 8, 3), dtype=np.uint8)


def _encode(ext: str, image: np.ndarray) -> bytes:
    return bytes(cv2.imencode(ext, image)[1].tobytes())


def _produce(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes | None, bytes, list[tuple[str, bytes]]]],
) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 << 20)
    try:
        for key, value, headers in messages:
            producer.send(topic, value=value, key=key, headers=headers, partition=0)
        producer.flush(15)
    finally:
        producer.close(timeout=5)


def _source(
    bootstrap: str, topic: str, group: str, metrics: Metrics, **kafka: object
) -> KafkaSource:
    settings: dict[str, object] = {
        "bootstrap_servers": bootstrap,
        "frames_topic": topic,
        "group_id": group,
        "commit_interval_ms": 100,
        **GROUP_TIMEOUTS,
        **kafka,
    }
    source = KafkaSource(
        KafkaConfig.model_validate(settings), KafkaSourceConfig(max_poll_records=4), metrics
    )
    source.setup()
    return source


def _poll_until(
    source: KafkaSource, n: int, timeout: float = 20.0, *, gap: float = 0.0
) -> list[Item]:
    items: list[Item] = []
    deadline = time.monotonic() + timeout
    while len(items) < n and time.monotonic() < deadline:
        items.extend(source.poll(0 if gap else 0.2))
        time.sleep(gap)
    return items


def _poll_for(source: KafkaSource, seconds: float) -> list[Item]:
    items: list[Item] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        items.extend(source.poll(0.1))
    return items


def _partition(item: Item) -> int:
    if isinstance(item, Frame):
        assert item.meta.source_partition is not None
        return item.meta.source_partition
    assert item.raw is not None
    return item.raw.partition


def _offset(item: Item) -> int:
    if isinstance(item, Frame):
        assert item.meta.source_offset is not None
        return item.meta.source_offset
    assert item.raw is not None
    return item.raw.offset


def test_frames_and_dead_letters_from_a_new_group_start_at_earliest(
    bootstrap: str, make_topic: Callable[..., str], unique_group: str
) -> None:
    topic = make_topic(1)
    jpeg = _encode(".jpg", _image(0))
    png = _encode(".png", _image(1))
    huge = _encode(".png", _image(2, size=256))  # incompressible noise: well over 64 KiB
    assert len(huge) > 64 * 1024
    garbage_headers = [("camera_id", b"cam-g"), ("content_type", b"image/png")]
    # All sent before the group exists: a new group must start at the earliest offset.
    _produce(
        bootstrap,
        topic,
        [
            (
                b"cam-a",
                jpeg,
                [
                    ("camera_id", b"cam-a"),
                    ("frame_id", b"f-jpeg"),
                    ("captured_at", b"2026-11-28T12:00:00+00:00"),
                ],
            ),
            (b"cam-b", png, [("captured_at", b"1764331200000")]),
            (None, png, []),
            (b"cam-a", b"", [("frame_id", b"f-empty")]),
            (b"cam-g", b"definitely not an image", garbage_headers),
            (None, jpeg[: len(jpeg) // 2], []),
            (b"cam-h", huge, []),
        ],
    )
    registry = CollectorRegistry()
    source = _source(bootstrap, topic, unique_group, Metrics(registry), max_message_bytes=65536)
    try:
        # Polled like a backpressured pipeline does (poll(0), then a pause): kafka-python 3.0
        # drops a group join that completes between polls, so this only works because the
        # source stays in poll() until the group is joined.
        items = _poll_until(source, 7, gap=0.3)
    finally:
        source.close()

    assert [_offset(i) for i in items] == list(range(7))
    frames = [i for i in items if isinstance(i, Frame)]
    letters = [i for i in items if isinstance(i, DeadLetter)]
    assert len(frames) == 3 and len(letters) == 4

    first, second, third = (f.meta for f in frames)
    assert (first.frame_id, first.camera_id) == ("f-jpeg", "cam-a")
    assert first.captured_at == "2026-11-28T12:00:00+00:00"
    assert (first.source_topic, first.source_partition) == (topic, 0)
    assert first.image_size == (32, 40) and frames[0].image.shape == (32, 40, 3)
    assert first.decode_ms > 0 and first.received_monotonic > 0
    assert (second.frame_id, second.camera_id) == (f"{topic}:0:1", "cam-b")
    assert datetime.fromisoformat(second.captured_at or "") == datetime.fromisoformat(
        "2025-11-28T12:00:00+00:00"
    )
    np.testing.assert_array_equal(frames[1].image, _image(1))  # PNG is lossless
    assert (third.frame_id, third.camera_id) == (f"{topic}:0:2", "unknown")
    assert third.captured_at is not None  # the record timestamp
    datetime.fromisoformat(third.captured_at)

    kinds = {_offset(letter): letter for letter in letters}
    assert {o: d.error_type for o, d in kinds.items()} == {
        3: "empty",
        4: "undecodable",
        5: "undecodable",
        6: "oversized",
    }
    garbage = kinds[4]
    assert garbage.camera_id == "cam-g" and garbage.stage == "decode"
    assert garbage.raw is not None
    assert garbage.raw.value == b"definitely not an image"
    assert garbage.raw.key == b"cam-g"
    assert garbage.raw.headers == tuple(garbage_headers)
    assert (garbage.raw.topic, garbage.raw.partition) == (topic, 0)
    assert "truncated" in kinds[5].reason
    assert kinds[6].raw is not None and kinds[6].raw.value == huge
    assert kinds[3].camera_id == "cam-a"

    assert registry.get_sample_value("inspector_frames_received_total", {"source": "kafka"}) == 7
    decoded = registry.get_sample_value("inspector_stage_seconds_count", {"stage": "decode"})
    assert decoded == 5  # three frames and two undecodable; empty/oversized never decoded


def test_offsets_are_committed_only_after_ack_and_a_restart_resumes_there(
    bootstrap: str,
    make_topic: Callable[..., str],
    unique_group: str,
    group_offsets: Callable[[str], dict[int, int]],
) -> None:
    topic = make_topic(1)
    png = _encode(".png", _image(3))
    _produce(bootstrap, topic, [(b"cam", png, [])] * 6)

    first = _source(bootstrap, topic, unique_group, Metrics(CollectorRegistry()))
    try:
        items = _poll_until(first, 6)
        assert [_offset(i) for i in items] == list(range(6))
        for i in (0, 1, 3, 4):  # offset 2 is still "in flight"
            items[i].ack()
        assert first.tracker.in_flight() == 2
        # The periodic commit, on the polling thread.
        wait_until(
            lambda: group_offsets(unique_group) == {0: 2},
            15,
            "the periodic commit of offset 2",
            step=lambda: first.poll(0.1),
        )
        first.final_commit(5)
    finally:
        first.close()  # leaving the group commits acknowledged offsets only
    assert group_offsets(unique_group) == {0: 2}

    second = _source(bootstrap, topic, unique_group, Metrics(CollectorRegistry()))
    try:
        again = _poll_until(second, 4)
        # At least once: 3 and 4 come again, because 2 was never acknowledged.
        assert [_offset(i) for i in again] == [2, 3, 4, 5]
        for item in again:
            item.ack()
        second.final_commit(5)
        assert group_offsets(unique_group) == {0: 6}
    finally:
        second.close()


def test_pause_stops_fetching_and_lag_counts_from_the_committed_offset(
    bootstrap: str, make_topic: Callable[..., str], unique_group: str
) -> None:
    topic = make_topic(1)
    png = _encode(".png", _image(4))
    _produce(bootstrap, topic, [(b"cam", png, [])] * 10)
    registry = CollectorRegistry()
    source = _source(bootstrap, topic, unique_group, Metrics(registry))

    def lag() -> float | None:
        return registry.get_sample_value(
            "inspector_consumer_lag", {"topic": topic, "partition": "0"}
        )

    try:
        items = _poll_until(source, 1)
        source.pause()
        items += _poll_for(source, 1.5)  # the group stays alive, nothing new arrives
        assert [_offset(i) for i in items] == list(range(4))  # max_poll_records
        assert lag() == 10  # nothing acknowledged: a restart would read all ten again

        for item in items:
            item.ack()
        deadline = time.monotonic() + 5
        while lag() != 6 and time.monotonic() < deadline:
            assert source.poll(0.1) == []  # commits happen while paused too
        assert lag() == 6

        source.resume()
        rest = _poll_until(source, 6)
        assert [_offset(i) for i in rest] == list(range(4, 10))
        for item in rest:
            item.ack()
        deadline = time.monotonic() + 5
        while lag() != 0 and time.monotonic() < deadline:
            source.poll(0.1)
        assert lag() == 0
        assert source.ready()
    finally:
        source.close()


# kafka-python 3.0.12 does not close a socket whose connect() was refused; the garbage
# collector does, with a ResourceWarning. They are collected here, while this test ignores
# them, and kafka-python's error logs are muted: captured log records would keep the
# exceptions (and through their tracebacks the sockets) alive past the test.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_a_lost_broker_does_not_crash_polling(
    unique_topic: str, unique_group: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="kafka")
    cluster = start_apache_kafka(1)  # a private one: this test kills it
    broker = cluster.nodes[0]
    source = None
    try:
        create_topic(cluster.bootstrap, unique_topic)
        _produce(broker.address, unique_topic, [(b"cam", _encode(".png", _image(5)), [])])
        # A short request timeout bounds close() with the broker gone.
        source = _source(
            broker.address,
            unique_topic,
            unique_group,
            Metrics(CollectorRegistry()),
            request_timeout_ms=2000,
        )
        assert len(_poll_until(source, 1)) == 1
        assert source.ready()
        cluster.kill_node(broker)
        assert _poll_for(source, 2.0) == []  # no exception, nothing invented
        assert not source.ready()
    finally:
        if source is not None:
            source.close()
        cluster.stop()
        gc.collect()


def test_a_rebalance_commits_acknowledged_offsets_before_partitions_move(
    bootstrap: str,
    make_topic: Callable[..., str],
    unique_group: str,
    group_offsets: Callable[[str], dict[int, int]],
) -> None:
    topic = make_topic(2)
    png = _encode(".png", _image(6))
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for partition in (0, 1):
            for _ in range(4):
                producer.send(topic, value=png, partition=partition)
        producer.flush(15)
    finally:
        producer.close(timeout=5)

    def member() -> KafkaSource:
        # No periodic commits: whatever gets committed is the rebalance listener's doing.
        return _source(
            bootstrap, topic, unique_group, Metrics(CollectorRegistry()), commit_interval_ms=600_000
        )

    first = member()
    second: KafkaSource | None = None
    try:
        items = _poll_until(first, 8)
        in_flight = [i for i in items if _partition(i) == 1 and _offset(i) >= 2]
        for item in items:
            if item not in in_flight:
                item.ack()  # all of partition 0, half of partition 1
        # A second member joins; each is polled by its own thread, like two daemons.
        second = member()
        late = _pump_both(first, second, until=lambda: _owner(first, second, 1) is not None)
        # Committed by the first member as the rebalance began: only what was acknowledged.
        assert group_offsets(unique_group) == {0: 4, 1: 2}
        owner = _owner(first, second, 1)
        if owner is second:
            # The new owner resumes at the committed offset: 2 and 3 are read again.
            late += _pump_both(first, second, until=lambda: len(late) >= 2)
            assert sorted((_partition(i), _offset(i)) for i in late) == [(1, 2), (1, 3)]
        else:
            # Partition 1 came back to the first member, which (kafka-python keeps the fetch
            # position) does not read 2 and 3 again: their acks must still count.
            assert late == []
            for item in in_flight:
                item.ack()
            first.final_commit(5)
            assert group_offsets(unique_group) == {0: 4, 1: 4}
    finally:
        first.close()
        if second is not None:
            second.close()


# --- revocation: kafka-python's own event loop runs the listener ---------------------------------
# The listener waits for frames in flight by awaiting the consumer's loop sleep (a private hook,
# inspector.runtime.kafka.client_hooks.loop_sleep): these run it where kafka-python runs it, in a
# real rebalance (a second member joins) and in a real close.


def _revoking(source: KafkaSource, tp: TopicPartition) -> bool:
    """Whether ``source``'s rebalance listener has begun revoking ``tp`` (its first step)."""
    return tp in source._limbo


def _two_members_on_partition_zero(
    bootstrap: str, topic: str, group: str, revoke_drain_ms: int
) -> tuple[KafkaSource, Callable[[], KafkaSource], list[Item]]:
    """Three frames on partition 0 of a 2-partition topic, read by a first member; no acks yet.

    Returns the first member, a factory for the second and the first member's three items.
    """
    png = _encode(".png", _image(7))
    _produce(bootstrap, topic, [(b"cam", png, [])] * 3)

    def member() -> KafkaSource:
        # No periodic commits: whatever gets committed is the rebalance listener's doing.
        return _source(
            bootstrap,
            topic,
            group,
            Metrics(CollectorRegistry()),
            commit_interval_ms=600_000,
            revoke_drain_ms=revoke_drain_ms,
        )

    first = member()
    items = _poll_until(first, 3)
    assert [(_partition(i), _offset(i)) for i in items] == [(0, 0), (0, 1), (0, 2)]
    return first, member, items


def test_a_revocation_waits_for_its_frames_in_flight_then_commits_past_them(
    bootstrap: str,
    make_topic: Callable[..., str],
    unique_group: str,
    group_offsets: Callable[[str], dict[int, int]],
) -> None:
    topic = make_topic(2)
    first, member, items = _two_members_on_partition_zero(bootstrap, topic, unique_group, 30_000)
    second: KafkaSource | None = None

    def pipeline() -> None:
        # Frames 1 and 2 finish only once the revocation has begun, and then late enough that
        # a listener that did not wait would have committed offset 1 already.
        wait_until(lambda: _revoking(first, TopicPartition(topic, 0)), 30, "the revocation")
        time.sleep(0.5)
        items[1].ack()
        items[2].ack()

    items[0].ack()
    delivering = threading.Thread(target=pipeline)
    delivering.start()
    try:
        second = member()
        late = _pump_both(first, second, until=lambda: _owner(first, second, 0) is not None)
        delivering.join(30)
        assert _owner(first, second, 0) is not None, "the rebalance did not complete"
        # The listener waited (heartbeats went on) and committed past the delivered frames...
        assert group_offsets(unique_group) == {0: 3}
        # ...so whichever member owns partition 0 now does not inspect them again.
        late += _pump_both(first, second, until=lambda: False, seconds=1.0)
        assert late == []
    finally:
        delivering.join(30)
        first.close()
        if second is not None:
            second.close()


def test_a_revocation_commits_what_is_delivered_once_revoke_drain_ms_passed(
    bootstrap: str,
    make_topic: Callable[..., str],
    unique_group: str,
    group_offsets: Callable[[str], dict[int, int]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = make_topic(2)
    first, member, items = _two_members_on_partition_zero(bootstrap, topic, unique_group, 500)
    second: KafkaSource | None = None
    items[0].ack()  # 1 and 2 never finish
    try:
        with caplog.at_level(logging.INFO, logger="inspector.runtime.sources.kafka"):
            second = member()
            late = _pump_both(first, second, until=lambda: _owner(first, second, 0) is not None)
        owner = _owner(first, second, 0)
        assert owner is not None, "the revocation held the rebalance up for good"
        assert group_offsets(unique_group) == {0: 1}
        assert "2 frame(s) of revoked partitions still in flight after 500 ms" in caplog.text
        if owner is second:  # the next owner inspects them again
            late += _pump_both(first, second, until=lambda: len(late) >= 2)
            assert sorted((_partition(i), _offset(i)) for i in late) == [(0, 1), (0, 2)]
        else:  # they came back to the first member, which still has them in flight
            assert late == []
    finally:
        first.close()
        if second is not None:
            second.close()


def test_closing_does_not_wait_for_frames_in_flight(
    bootstrap: str,
    make_topic: Callable[..., str],
    unique_group: str,
    group_offsets: Callable[[str], dict[int, int]],
) -> None:
    # The pipeline drained by its shutdown deadline before the source closes: what is left
    # stays uncommitted at once, without another revoke_drain_ms.
    topic = make_topic(1)
    png = _encode(".png", _image(8))
    _produce(bootstrap, topic, [(b"cam", png, [])] * 2)
    source = _source(
        bootstrap,
        topic,
        unique_group,
        Metrics(CollectorRegistry()),
        commit_interval_ms=600_000,
        revoke_drain_ms=60_000,
    )
    try:
        items = _poll_until(source, 2)
        assert [_offset(i) for i in items] == [0, 1]
        items[0].ack()
    finally:
        started = time.monotonic()
        source.close()  # kafka-python revokes the partitions inside close()
        took = time.monotonic() - started
    assert took < 20, f"close() took {took:.1f} s: it waited for the frame in flight"
    assert group_offsets(unique_group) == {0: 1}  # committed by the listener on the way out


def _owner(first: KafkaSource, second: KafkaSource, partition: int) -> KafkaSource | None:
    """The member partition ``partition`` is assigned to, once both have an assignment."""
    owned = [
        {tp.partition for tp in source._consumer.assignment()}
        for source in (first, second)
        if source._consumer is not None
    ]
    if len(owned) < 2 or not all(owned) or owned[0] & owned[1]:
        return None  # still rebalancing
    return first if partition in owned[0] else second


def _pump_both(
    first: KafkaSource, second: KafkaSource, until: Callable[[], bool], seconds: float = 20.0
) -> list[Item]:
    """Poll both members on their own threads until ``until()`` (or ``seconds``); what they got."""
    stop = threading.Event()
    got: list[Item] = []

    def pump(source: KafkaSource) -> None:
        while not stop.is_set():
            got.extend(source.poll(0.1))

    threads = [threading.Thread(target=pump, args=(m,)) for m in (first, second)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + seconds
        while not until() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    return got
