"""End-to-end mode: frames topic -> the real daemon -> results topic, over a real broker.

The embedded Tansu broker (or ``--bootstrap-servers``) gets fresh, uniquely named topics and
group. N JPEG frames are produced before the daemon starts; the daemon runs in a thread with
the benchmark's model switches; the rate is the slope of the results' count over their
record timestamps (set by the daemon's producer; see
:func:`inspector.tools.benchmark.traffic.result_rate`), so start-up, warm-up and the group join
are excluded. The model alone is timed on the same frames at the
same batch size, in the same process, before and after the daemon; ``e2e_ratio`` is relative
to their mean. The three load the checkpoint alike (:func:`inspector.backends.load_model`)
with one ``precision: auto`` cache: the model-only run before the daemon measures and caches
the choice (then times the chosen path), the daemon and the run after it read it, so all
three run the same precision and the daemon's start-up does not measure.

With ``rate`` the frames are offered at that rate instead, once a probe frame has come back
(the group has joined and the model is warm), and every frame's produce-to-result latency is
reported: what a frame sees at that load, without the queueing of a saturated run.

Latencies are named: ``daemon_p50_ms`` etc. (the same figures as ``p50_ms`` etc.) are the
daemon's own time per frame, ``capture_to_verdict_p50_ms`` etc. what a line sees, from the
frame's capture time (here: when it was produced) to its verdict. In a saturated run the
frames are produced before the daemon starts, so the latter includes its start-up.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from inspector.backends import load_model
from inspector.errors import InspectorError
from inspector.model.fastpath import in_passing_thread
from inspector.runtime.config import InspectorConfig, explicit_config
from inspector.runtime.daemon import Daemon
from inspector.tools.benchmark.checkpoint import write_checkpoint
from inspector.tools.benchmark.model import make_worker
from inspector.tools.benchmark.options import (
    BenchOptions,
    decode_jpegs,
    full_batches,
    synthetic_jpegs,
)
from inspector.tools.benchmark.report import (
    base_fields,
    finish,
    gflop_per_image,
    latency_fields,
    named_latency_fields,
)
from inspector.tools.benchmark.timing import Batch, measure_worker, throughput
from inspector.tools.benchmark.traffic import (
    Collected,
    Paced,
    paced_results,
    produce,
    result_rate,
    results_consumer,
)
from inspector.tools.broker import EMBEDDED_FETCH_MAX_WAIT_MS, EmbeddedBroker, create_topics

log = logging.getLogger(__name__)


def decode_threads() -> int:
    """Decode threads for the daemon: half the cores, 2 to 8 (OpenCV releases the GIL)."""
    return max(2, min(8, (os.cpu_count() or 2) // 2))


def daemon_config_for(
    options: BenchOptions,
    device: torch.device,
    bootstrap: str,
    tag: str,
    ckpt: Path,
    auto_cache_dir: Path | None = None,
) -> InspectorConfig:
    """The benchmark daemon's configuration: fresh topics and group named by ``tag``.

    ``auto_cache_dir``: the daemon's ``model.auto_cache_dir`` (``None``: its default).
    """
    cache = {} if auto_cache_dir is None else {"auto_cache_dir": str(auto_cache_dir)}
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
            }
            | cache,
            # Room for two full batches, so batch size, not the queue, bounds the batches.
            "batcher": {
                "max_batch_size": options.batch_size,
                "max_wait_ms": 20,
                "queue_size": max(64, 2 * options.batch_size),
            },
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )


def create_bench_topics(config: InspectorConfig) -> None:
    """The benchmark daemon's frames, results and dead-letter topics, one partition each."""
    kafka = config.kafka
    create_topics(
        kafka.bootstrap_servers,
        {kafka.frames_topic: 1, kafka.results_topic: 1, kafka.dlq_topic: 1},
    )


class DaemonThread:
    """A daemon running on a thread of its own; :meth:`stop` re-raises what it failed with."""

    def __init__(self, config: InspectorConfig, name: str = "bench-daemon") -> None:
        self.daemon = Daemon(config, registry=CollectorRegistry())
        self._failure: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.daemon.run()
        except BaseException as exc:  # re-raised by stop()
            self._failure.append(exc)

    def alive(self) -> bool:
        """Whether the daemon still runs."""
        return self._thread.is_alive()

    def stop(self) -> None:
        """Ask the daemon to exit, wait for it, and re-raise its failure if it failed."""
        self.daemon.request_exit()
        self._thread.join()
        if self._failure:
            raise self._failure[0]


def _stream(
    config: InspectorConfig, n_frames: int, timeout_s: float, paced: Paced | None = None
) -> Collected:
    """Run the daemon in a thread until every frame has a result or a dead letter.

    With ``paced``, ``paced`` starts offering its frames once the first of ``n_frames`` (the
    probe, produced beforehand) has come back.
    """
    got = Collected()
    deadline = time.monotonic() + timeout_s
    # Undone in reverse, each step even if one before it failed: paced producer, daemon
    # (re-raising its failure), consumer.
    with contextlib.ExitStack() as stack:
        consumer = results_consumer(config.kafka)
        stack.callback(consumer.close, autocommit=False)
        daemon = DaemonThread(config)
        stack.callback(daemon.stop)
        if paced is not None:
            stack.callback(paced.join)
            stack.callback(paced.stop.set)
        while got.accounted < n_frames:
            if not daemon.alive() or time.monotonic() > deadline:
                break
            got.poll(consumer, config.kafka.dlq_topic)
            if paced is not None and paced.thread is None and got.accounted:
                paced.start()
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
    ckpt: Path,
    device: torch.device,
    options: BenchOptions,
    batches: Sequence[Batch],
    auto_cache_dir: Path,
) -> _ModelOnly:
    """The worker alone on ``batches``: images/s, seconds per batch, GFLOP, precision.

    Loaded as the daemon loads it, with its ``auto`` cache: ``auto`` is measured (or read)
    before the timed batches, which run the chosen path alone.
    """
    loaded = load_model(
        ckpt,
        "torch",
        device,
        options.runtime,
        batch_size=options.batch_size,
        auto_cache_dir=auto_cache_dir,
    )
    if loaded.auto is not None:
        log.info(
            "precision auto: %s (%s%s)",
            loaded.auto.precision,
            loaded.auto.reason,
            "; cached" if loaded.auto.cached else "",
        )
    assert loaded.model is not None  # the torch backend
    worker = make_worker(loaded.engine, device, options, preprocessing=loaded.meta.preprocessing)
    gflop = gflop_per_image(loaded.model.to(device), device)
    seconds = measure_worker(worker, batches, options.warmup)
    precision = worker.fast.precision
    del worker, loaded
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
        # One precision auto cache for the three runs (the checkpoint is new: measured once).
        cache = Path(tmp) / "auto-precision"
        # Model only before and after the daemon: their mean is the reference, so a machine
        # that speeds up or slows down during the run does not decide the ratio.
        before = in_passing_thread(lambda: _model_only(ckpt, device, options, batches, cache))
        with contextlib.ExitStack() as stack:
            bootstrap = options.bootstrap_servers
            if bootstrap is None:
                bootstrap = stack.enter_context(EmbeddedBroker()).bootstrap
            config = daemon_config_for(options, device, bootstrap, tag, ckpt, cache)
            kafka = config.kafka
            create_bench_topics(config)
            paced = None
            if options.rate is None:
                produce_s = produce(bootstrap, kafka.frames_topic, jpegs)
                log.info("produced %d frames in %.1f s; starting the daemon", n, produce_s)
            else:
                # One probe frame first: its result shows the group joined and the model warm.
                produce_s = produce(bootstrap, kafka.frames_topic, jpegs[:1])
                paced = Paced(bootstrap, kafka.frames_topic, jpegs, options.rate)
            got = _stream(config, n + (paced is not None), options.timeout_s, paced)
        _release(device)  # the daemon's model
        after = in_passing_thread(lambda: _model_only(ckpt, device, options, batches, cache))
    paced_fields: dict[str, Any] = {}
    if paced is not None:
        got, paced_fields = paced_results(got, paced)
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
            **named_latency_fields("daemon", got.latencies_ms),
            **named_latency_fields("capture_to_verdict", got.capture_to_verdict_ms()),
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
