"""KafkaSink against a real broker: results, dead letters, delivery errors."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
from fakes import make_inspection
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from inspector.errors import InspectorError, RecordRefusedError
from inspector.runtime.config import KafkaConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Inspection, RawMessage
from inspector.runtime.sinks.kafka import KafkaSink

pytestmark = pytest.mark.integration


class Done:
    """Collects the outcomes a sink reports, from any thread."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []
        self._lock = threading.Lock()
        self.finished = threading.Event()
        self.expected = 1

    def __call__(self, exc: BaseException | None) -> None:
        with self._lock:
            self.calls.append(exc)
            if len(self.calls) >= self.expected:
                self.finished.set()


def _inspection(frame_id: str, camera_id: str, offset: int = 0) -> Inspection:
    return make_inspection(frame_id, camera_id, anomalous=True, offset=offset)


def _sink(bootstrap: str, registry: CollectorRegistry, **kafka: Any) -> KafkaSink:
    sink = KafkaSink(KafkaConfig(bootstrap_servers=bootstrap, **kafka), Metrics(registry))
    sink.setup()
    return sink


def test_results_are_keyed_by_camera_with_json_headers(
    bootstrap: str, make_topic: Callable[..., str], read_topic: Callable[..., list[Any]]
) -> None:
    topic = make_topic(1)
    registry = CollectorRegistry()
    sink = _sink(bootstrap, registry, results_topic=topic)
    done = Done()
    done.expected = 2
    try:
        assert sink.ready()
        first, second = _inspection("f1", "cam-a", 7), _inspection("f2", "cam-b", 8)
        sink.publish(first, done)
        sink.publish(second, done)
        assert sink.flush(15)
        assert done.finished.wait(5)
    finally:
        sink.close()
    assert done.calls == [None, None]
    assert not sink.ready()

    records = read_topic(topic, 2)
    assert [r.key for r in records] == [b"cam-a", b"cam-b"]
    for record, inspection in zip(records, (first, second), strict=True):
        assert json.loads(record.value) == json.loads(inspection.message.to_json())
        assert dict(record.headers) == {
            "content_type": b"application/json",
            "schema": b"inspector.result/v1",
        }
    assert json.loads(records[0].value)["schema"] == "inspector.result/v1"
    assert registry.get_sample_value("inspector_stage_seconds_count", {"stage": "publish"}) == 2


def test_dead_letters_keep_the_original_message_and_say_why(
    bootstrap: str, make_topic: Callable[..., str], read_topic: Callable[..., list[Any]]
) -> None:
    dlq = make_topic(1)
    sink = _sink(bootstrap, CollectorRegistry(), dlq_topic=dlq, max_message_bytes=65536)
    original_headers = (("camera_id", b"cam-a"), ("frame_id", b"f-9"))
    letters = [
        DeadLetter(
            reason="not a decodable image (5 bytes, starts with b'hello')",
            error_type="undecodable",
            stage="decode",
            camera_id="cam-a",
            raw=RawMessage(b"hello", b"cam-a", original_headers, "frames", 3, 41),
            failed_at="2026-01-01T00:00:00+00:00",
        ),
        DeadLetter(  # not from Kafka: a camera frame the model choked on
            reason="RuntimeError: boom",
            error_type="inference_error",
            stage="inference",
            camera_id="line-2",
            raw=None,
            failed_at="2026-01-01T00:00:01+00:00",
        ),
        DeadLetter(  # cannot be copied whole: the DLQ has the same size limit
            reason="frame of 100000 bytes exceeds kafka.max_message_bytes (65536)",
            error_type="oversized",
            stage="decode",
            camera_id="cam-h",
            raw=RawMessage(b"\x00" * 100_000, None, (), "frames", 0, 5),
            failed_at="2026-01-01T00:00:02+00:00",
        ),
    ]
    done = Done()
    done.expected = 3
    try:
        for letter in letters:
            sink.publish_dead_letter(letter, done)
        assert sink.flush(15)
        assert done.finished.wait(5)
    finally:
        sink.close()
    assert done.calls == [None, None, None]

    undecodable, camera, oversized = read_topic(dlq, 3)
    assert (undecodable.key, undecodable.value) == (b"cam-a", b"hello")
    assert undecodable.headers[:2] == list(original_headers)  # original headers first, in order
    assert dict(undecodable.headers) == {
        "camera_id": b"cam-a",
        "frame_id": b"f-9",
        "error": b"not a decodable image (5 bytes, starts with b'hello')",
        "error_type": b"undecodable",
        "stage": b"decode",
        "source_topic": b"frames",
        "source_partition": b"3",
        "source_offset": b"41",
        "failed_at": b"2026-01-01T00:00:00+00:00",
    }
    assert (camera.key, camera.value) == (b"line-2", b"")
    camera_headers = dict(camera.headers)
    assert camera_headers["error_type"] == b"inference_error"
    assert camera_headers["source_topic"] == b"" and camera_headers["source_offset"] == b""
    assert oversized.key is None and oversized.value == b""
    oversized_headers = dict(oversized.headers)
    assert oversized_headers["error_type"] == b"oversized"
    assert oversized_headers["source_offset"] == b"5"
    assert b"100000 bytes" in oversized_headers["value_dropped"]


def test_producer_errors_reach_done(bootstrap: str, make_topic: Callable[..., str]) -> None:
    sink = _sink(
        bootstrap, CollectorRegistry(), results_topic=make_topic(1), max_message_bytes=4096
    )
    try:
        too_big = Done()
        sink.publish(_inspection("x" * 10_000, "cam"), too_big)  # over max_request_size
        # A refusal of this record (the pipeline dead-letters it), caused by the client's error.
        assert len(too_big.calls) == 1 and isinstance(too_big.calls[0], RecordRefusedError)
        assert isinstance(too_big.calls[0].__cause__, KafkaError)
        assert sink.ready()  # a message too large says nothing about the connection
    finally:
        sink.close()
    after_close = Done()
    sink.publish(_inspection("f", "cam"), after_close)
    assert len(after_close.calls) == 1 and isinstance(after_close.calls[0], InspectorError)
