"""End-to-end mode: frames topic -> the real daemon -> results topic, over a real broker.

The embedded Tansu broker (or ``--bootstrap-servers``) gets fresh, uniquely named topics and
group. N JPEG frames are produced before the daemon starts; the daemon runs in a thread with
the benchmark's model switches; the rate is the slope of the results' count over their
record timestamps (set by the daemon's producer; see :func:`result_rate`), so start-up,
warm-up and the group join are excluded. The model alone is timed on the same frames at the
same batch size, in the same process, before and after the daemon; ``e2e_ratio`` is relative
to their mean.

With ``rate`` the frames are offered at that rate instead, once a probe frame has come back
(the group has joined and the model is warm), and every frame's produce-to-result latency is
reported: what a frame sees at that load, without the queueing of a saturated run.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry

from inspector.benchmark.checkpoint import write_checkpoint
from inspector.benchmark.model import Batch, make_worker, measure_worker, throughput
from inspector.benchmark.options import BenchOptions, decode_jpegs, full_batches, synthetic_jpegs
from inspector.benchmark.report import base_fields, finish, gflop_per_image, latency_fields
from inspector.broker import EMBEDDED_FETCH_MAX_WAIT_MS, EmbeddedBroker, create_topics
from inspector.checkpoint import load_checkpoint
from inspector.config import InspectorConfig, explicit_config
from inspector.daemon import Daemon
from inspector.errors import InspectorError
from inspector.model.runtime import in_passing_thread

log = logging.getLogger(__name__)


@dataclass
class _Collected:
    """What came back on the results and dead-letter topics."""

    stamps_ms: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    #: Frames-topic offset of each result's frame (results in arrival order).
    offsets: list[int] = field(default_factory=list)
    flagged: list[bool] = field(default_factory=list)
    #: The daemon's inference time of each result's batch (``latency_ms.inference``).
    inference_ms: list[float] = field(default_factory=list)
    dead_letters: int = 0

    @property
    def accounted(self) -> int:
        return len(self.stamps_ms) + self.dead_letters

    def add_result(self, timestamp_ms: int, value: bytes) -> None:
        message = json.loads(value)
        # Record timestamps are the daemon producer's send times; -1 only from brokers
        # without timestamps, where the arrival time here is the best left.
        self.stamps_ms.append(timestamp_ms if timestamp_ms >= 0 else time.time() * 1e3)
        self.latencies_ms.append(float(message["latency_ms"]["total"]))
        self.offsets.append(int(message["source"]["offset"]))
        self.flagged.append(bool(message["is_anomalous"]))
        self.inference_ms.append(float(message["latency_ms"]["inference"]))


@dataclass
class _Paced:
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
        self.thread = threading.Thread(target=self._run, name="bench-producer", daemon=True)
        self.thread.start()

    def join(self) -> None:
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
                future = producer.send(self.topic, payload, key=_camera_key(i))
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


def decode_threads() -> int:
    """Decode threads for the daemon: half the cores, 2 to 8 (OpenCV releases the GIL)."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def _camera_key(i: int) -> bytes:
    """Frame ``i``'s key: four cameras taking turns, in both the saturated and the paced run."""
    return f"cam-{i % 4}".encode()


def _produce(bootstrap: str, topic: str, payloads: Sequence[bytes]) -> float:
    """Send every frame (keyed by four cameras); returns the seconds it took."""
    t0 = time.perf_counter()
    # Large batches: JPEG frames are tens of kB, and producing must not dominate the run.
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, batch_size=1 << 20
    )
    try:
        for i, payload in enumerate(payloads):
            producer.send(topic, payload, key=_camera_key(i))
        producer.flush(120)
    finally:
        producer.close()
    return time.perf_counter() - t0


def daemon_config_for(
    options: BenchOptions, device: torch.device, bootstrap: str, tag: str, ckpt: Path
) -> InspectorConfig:
    """The benchmark daemon's configuration: fresh topics and group named by ``tag``."""
    return explicit_config(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "frames_topic": f"bench.{tag}.frames",
                "results_topic": f"bench.{tag}.results",
                "dlq_topic": f"bench.{tag}.dlq",
                "group_id": f"bench.{tag}",
                # Tansu joins a group in about half the session timeout; 6000 is the minimum.
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
            },
            "sources": [
                {
                    "type": "kafka",
                    "decode_threads": decode_threads(),
                    "max_poll_records": max(64, options.batch_size),
                    "decode_device": options.decode_device,
                }
                | (
                    {}
                    if options.bootstrap_servers
                    else {"fetch_max_wait_ms": EMBEDDED_FETCH_MAX_WAIT_MS}
                )
            ],
            "model": {
                "checkpoint": str(ckpt),
                "device": device.type,
                "warmup_batches": options.warmup,
                "precision": options.precision,
                "channels_last": options.channels_last,
                "compile": options.compile,
                "cuda_graphs": options.cuda_graphs,
            },
            # Room for two full batches, so batch size, not the queue, bounds the batches.
            "batcher": {
                "max_batch_size": options.batch_size,
                "max_wait_ms": 20,
                "queue_size": max(64, 2 * options.batch_size),
            },
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )


def _stream(
    config: InspectorConfig, n_frames: int, timeout_s: float, paced: _Paced | None = None
) -> _Collected:
    """Run the daemon in a thread until every frame has a result or a dead letter.

    With ``paced``, ``paced`` starts offering its frames once the first of ``n_frames`` (the
    probe, produced beforehand) has come back.
    """
    kafka = config.kafka
    consumer = KafkaConsumer(
        bootstrap_servers=kafka.bootstrap_servers, enable_auto_commit=False, fetch_max_wait_ms=100
    )
    partitions = [TopicPartition(kafka.results_topic, 0), TopicPartition(kafka.dlq_topic, 0)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    daemon = Daemon(config, registry=CollectorRegistry())
    failure: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # re-raised in the calling thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="bench-daemon", daemon=True)
    thread.start()
    got = _Collected()
    deadline = time.monotonic() + timeout_s
    try:
        while got.accounted < n_frames:
            if not thread.is_alive() or time.monotonic() > deadline:
                break
            for tp, records in consumer.poll(timeout_ms=200).items():
                if tp.topic == kafka.dlq_topic:
                    got.dead_letters += len(records)
                    continue
                for record in records:
                    got.add_result(record.timestamp, record.value)
            if paced is not None and paced.thread is None and got.accounted:
                paced.start()
    finally:
        if paced is not None:
            paced.stop.set()
            paced.join()
        daemon.request_exit()
        thread.join()
        consumer.close(autocommit=False)
    if failure:
        raise failure[0]
    missing = n_frames - got.accounted
    if missing:
        raise InspectorError(
            f"e2e: {missing} of {n_frames} frames had neither a result nor a dead letter "
            f"after {timeout_s:g} s (the daemon's log above says why)"
        )
    return got


def _release(device: torch.device) -> None:
    """Return a finished model's memory before the next one is built."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@dataclass(frozen=True)
class _ModelOnly:
    """The worker alone on the benchmark's batches."""

    images_per_s: float
    batch_seconds: list[float]
    gflop: float
    precision: str


def _model_only(
    ckpt: Path, device: torch.device, options: BenchOptions, batches: Sequence[Batch]
) -> _ModelOnly:
    """The worker alone on ``batches``: images/s, seconds per batch, GFLOP, precision."""
    worker = make_worker(load_checkpoint(ckpt).model, device, options)
    gflop = gflop_per_image(worker.model, device)
    seconds = measure_worker(worker, batches, options.warmup)
    precision = worker.fast.precision
    del worker
    _release(device)
    return _ModelOnly(throughput(seconds, options.batch_size), seconds, gflop, precision)


def run_e2e(options: BenchOptions, device: torch.device, command: Sequence[str]) -> dict[str, Any]:
    """End-to-end benchmark plus model-only on the same frames.

    Returns:
        The result object (see ``inspector bench``).

    Raises:
        InspectorError: The broker or daemon failed, or results are missing.
    """
    n = options.n_frames
    jpegs = synthetic_jpegs(n, options.image_size, options.seed)
    batches = full_batches(decode_jpegs(jpegs), n, options.batch_size)
    tag = uuid.uuid4().hex[:10]
    with tempfile.TemporaryDirectory(prefix="inspector-bench-") as tmp:
        # Every torch step of the benchmark's own runs on a thread that ends with it: a thread
        # kept alive with an OpenMP team would slow the daemon's model (in_passing_thread).
        ckpt = in_passing_thread(lambda: write_checkpoint(Path(tmp), options, device, jpegs))
        # Model only before and after the daemon: their mean is the reference, so a machine
        # that speeds up or slows down during the run does not decide the ratio.
        before = in_passing_thread(lambda: _model_only(ckpt, device, options, batches))
        with contextlib.ExitStack() as stack:
            bootstrap = options.bootstrap_servers
            if bootstrap is None:
                bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
            config = daemon_config_for(options, device, bootstrap, tag, ckpt)
            kafka = config.kafka
            create_topics(
                bootstrap, {kafka.frames_topic: 1, kafka.results_topic: 1, kafka.dlq_topic: 1}
            )
            paced = None
            if options.rate is None:
                produce_s = _produce(bootstrap, kafka.frames_topic, jpegs)
                log.info("produced %d frames in %.1f s; starting the daemon", n, produce_s)
            else:
                # One probe frame first: its result shows the group joined and the model warm.
                produce_s = _produce(bootstrap, kafka.frames_topic, jpegs[:1])
                paced = _Paced(bootstrap, kafka.frames_topic, jpegs, options.rate)
            got = _stream(config, n + (paced is not None), options.timeout_s, paced)
        _release(device)  # the daemon's model
        after = in_passing_thread(lambda: _model_only(ckpt, device, options, batches))
    paced_fields: dict[str, Any] = {}
    if paced is not None:
        got, paced_fields = _paced_results(got, paced)
    results = len(got.stamps_ms)
    if len(set(got.stamps_ms)) < 2:
        raise InspectorError(
            f"e2e: {results} result(s) within one clock tick: too few to time a rate; "
            "use more --frames"
        )
    model_rate = (before.images_per_s + after.images_per_s) / 2
    e2e_rate = result_rate(got.stamps_ms)
    model_batch_ms = statistics.median(before.batch_seconds + after.batch_seconds) * 1e3
    result = base_fields(options, device, before.precision, n, command)
    result.update(
        {
            "images_per_s": e2e_rate,
            **latency_fields(got.latencies_ms, "frame"),
            "results": results,
            "dead_letters": got.dead_letters,
            "anomalous_results": sum(got.flagged),
            "model_only_images_per_s": model_rate,
            "model_only_before_after": [before.images_per_s, after.images_per_s],
            "e2e_ratio": e2e_rate / model_rate,
            # Inference alone, per batch: in the daemon (from the results) and model-only.
            # Their ratio says how much of a low e2e_ratio is the model running slower inside
            # the daemon (sharing the cores) rather than the pipeline leaving it idle.
            "daemon_inference_ms_p50": statistics.median(got.inference_ms),
            "model_only_batch_ms_p50": model_batch_ms,
            "broker": "external" if options.bootstrap_servers else "embedded",
            "decode_threads": decode_threads(),
            "decode_device": options.decode_device,
            "produce_s": produce_s,
            **paced_fields,
        }
    )
    return finish(result, before.gflop, device)


def _paced_results(got: _Collected, paced: _Paced) -> tuple[_Collected, dict[str, Any]]:
    """The paced frames' results (the probe's left out) and their latency fields.

    Produce-to-result latency: the frame's send time here to its result's record timestamp
    (the daemon's producer, same clock on one machine; another machine's clock skew would
    show in it).
    """
    kept = _Collected(dead_letters=got.dead_letters)
    waits = []
    rows = zip(
        got.stamps_ms, got.latencies_ms, got.offsets, got.flagged, got.inference_ms, strict=True
    )
    for stamp, latency, offset, flagged, inference in rows:
        if offset in paced.sent_ms:
            kept.stamps_ms.append(stamp)
            kept.latencies_ms.append(latency)
            kept.offsets.append(offset)
            kept.flagged.append(flagged)
            kept.inference_ms.append(inference)
            waits.append(max(0.0, stamp - paced.sent_ms[offset]))
    if not waits:
        raise InspectorError("e2e --rate: no paced frame came back; see the daemon's log")
    fields = latency_fields(waits, "frame")
    p50, p95, p99 = fields["p50_ms"], fields["p95_ms"], fields["p99_ms"]
    return kept, {
        "rate": paced.rate,
        "produce_to_result_p50_ms": p50,
        "produce_to_result_p95_ms": p95,
        "produce_to_result_p99_ms": p99,
    }
