"""Frames to the broker and results back, for the end-to-end benchmark.

Producers (all frames up front, or paced at a rate), what comes back on the results and
dead-letter topics, and the rate and latencies computed from it: the daemon's own per frame
(``latency_ms.total``), capture to verdict (the result's ``captured_at`` to ``processed_at``;
without a ``captured_at`` header the frame's record timestamp, i.e. when it was produced) and,
paced, produce to result.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from inspector.errors import InspectorError
from inspector.messages import capture_to_verdict_ms
from inspector.runtime.config import KafkaConfig
from inspector.tools.benchmark.report import named_latency_fields


@dataclass
class Collected:
    """What came back on the results and dead-letter topics."""

    stamps_ms: list[float] = field(default_factory=list)
    #: The daemon's own time per frame (``latency_ms.total``).
    latencies_ms: list[float] = field(default_factory=list)
    #: Capture to verdict per frame (``None``: the result has no capture time).
    capture_ms: list[float | None] = field(default_factory=list)
    #: Frames-topic offset of each result's frame (results in arrival order).
    offsets: list[int] = field(default_factory=list)
    flagged: list[bool] = field(default_factory=list)
    #: The daemon's inference time of each result's batch (``latency_ms.inference``).
    inference_ms: list[float] = field(default_factory=list)
    dead_letters: int = 0

    def capture_to_verdict_ms(self) -> list[float]:
        """Capture-to-verdict times of the results that carry a capture time."""
        return [ms for ms in self.capture_ms if ms is not None]

    @property
    def accounted(self) -> int:
        """Frames with a result or a dead letter."""
        return len(self.stamps_ms) + self.dead_letters

    def add_result(self, timestamp_ms: int, value: bytes) -> None:
        """Record one result message (its record timestamp and JSON value)."""
        message = json.loads(value)
        # Record timestamps are the daemon producer's send times; -1 only from brokers
        # without timestamps, where the arrival time here is the best left.
        self.stamps_ms.append(timestamp_ms if timestamp_ms >= 0 else time.time() * 1e3)
        self.latencies_ms.append(float(message["latency_ms"]["total"]))
        self.capture_ms.append(
            capture_to_verdict_ms(message.get("captured_at"), str(message["processed_at"]))
        )
        self.offsets.append(int(message["source"]["offset"]))
        self.flagged.append(bool(message["is_anomalous"]))
        self.inference_ms.append(float(message["latency_ms"]["inference"]))

    def poll(self, consumer: KafkaConsumer, dlq_topic: str) -> None:
        """Record what one poll of :func:`results_consumer` brings (waits up to 200 ms)."""
        for tp, records in consumer.poll(timeout_ms=200).items():
            if tp.topic == dlq_topic:
                self.dead_letters += len(records)
                continue
            for record in records:
                self.add_result(record.timestamp, record.value)


def results_consumer(kafka: KafkaConfig) -> KafkaConsumer:
    """A consumer of the results and dead-letter topics from their start (fresh topics)."""
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    partitions = [TopicPartition(kafka.results_topic, 0), TopicPartition(kafka.dlq_topic, 0)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    return consumer


@dataclass
class Paced:
    """Frames offered at a fixed rate from a thread once the daemon consumes."""

    bootstrap: str
    topic: str
    payloads: Sequence[bytes]
    rate: float
    stop: threading.Event = field(default_factory=threading.Event)
    #: Frames-topic offset -> wall-clock send time (ms), filled when the thread ends.
    sent_ms: dict[int, float] = field(default_factory=dict)
    failure: list[BaseException] = field(default_factory=list)
    thread: threading.Thread | None = None

    def start(self) -> None:
        """Start offering the frames."""
        self.thread = threading.Thread(target=self._run, name="bench-producer", daemon=True)
        self.thread.start()

    def join(self) -> None:
        """Wait until every frame was sent; re-raise what the sending thread hit."""
        if self.thread is not None:
            self.thread.join()
        if self.failure:
            raise self.failure[0]

    def _run(self) -> None:
        # No lingering: a frame leaves when it is offered, as a camera's would.
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0)
        try:
            sends = []
            period, next_at = 1.0 / self.rate, time.monotonic()
            for i, payload in enumerate(self.payloads):
                if self.stop.wait(max(0.0, next_at - time.monotonic())):
                    break
                sent_at = time.time() * 1e3
                future = producer.send(self.topic, payload, key=camera_key(i))
                sends.append((future, sent_at))
                next_at += period
            producer.flush(120)
            self.sent_ms = {future.get(60).offset: at for future, at in sends}
        except BaseException as exc:  # re-raised by join()
            self.failure.append(exc)
        finally:
            producer.close()


def result_rate(stamps_ms: Sequence[float]) -> float:
    """Results per second: the least-squares slope of the results' count over their times.

    The daemon sends a batch's results together, so they come in bursts. Counting from the
    first result to the last, ``(n - 1) / span``, credits the first burst's frames to no time
    at all and overstates the rate by one batch in ``n`` (12.5 % for 64 frames in batches of
    8); the slope is exact for evenly spaced bursts of any size as for one-by-one results.

    Args:
        stamps_ms: The results' times (ms), any order; at least two distinct ones.
    """
    times = sorted(stamp / 1e3 for stamp in stamps_ms)
    slope, _ = statistics.linear_regression(times, range(1, len(times) + 1))
    return slope


def camera_key(i: int) -> bytes:
    """Frame ``i``'s key: four cameras taking turns, in both the saturated and the paced run."""
    return f"cam-{i % 4}".encode()


def produce(bootstrap: str, topic: str, payloads: Sequence[bytes]) -> float:
    """Send every frame (keyed by four cameras); returns the seconds it took."""
    t0 = time.perf_counter()
    # Large batches: JPEG frames are tens of kB, and producing must not dominate the run.
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=1 << 20
    )
    try:
        for i, payload in enumerate(payloads):
            producer.send(topic, payload, key=camera_key(i))
        producer.flush(120)
    finally:
        producer.close()
    return time.perf_counter() - t0


def paced_results(got: Collected, paced: Paced) -> tuple[Collected, dict[str, Any]]:
    """The paced frames' results (the probe's left out) and their latency fields.

    Produce-to-result latency: the frame's send time here to its result's record timestamp
    (the daemon's producer, same clock on one machine; another machine's clock skew would
    show in it).
    """
    kept = Collected(dead_letters=got.dead_letters)
    waits = []
    rows = zip(
        got.stamps_ms,
        got.latencies_ms,
        got.capture_ms,
        got.offsets,
        got.flagged,
        got.inference_ms,
        strict=True,
    )
    for stamp, latency, capture, offset, flagged, inference in rows:
        if offset in paced.sent_ms:
            kept.stamps_ms.append(stamp)
            kept.latencies_ms.append(latency)
            kept.capture_ms.append(capture)
            kept.offsets.append(offset)
            kept.flagged.append(flagged)
            kept.inference_ms.append(inference)
            waits.append(max(0.0, stamp - paced.sent_ms[offset]))
    if not waits:
        raise InspectorError("e2e --rate: no paced frame came back; see the daemon's log")
    return kept, {"rate": paced.rate, **named_latency_fields("produce_to_result", waits)}
