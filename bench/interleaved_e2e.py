"""End to end vs model only, in alternating windows, so machine drift hits both sides alike.

``inspector bench --mode e2e`` times the model alone before and after the daemon: on a
machine whose speed swings within seconds (this project's 2-core VM: 2x) the phases, seconds
apart, can see different machines. Here one daemon (embedded broker, or
``--bootstrap-servers``) runs throughout; each window produces ``--batches-per-window``
batches of frames and times them through the daemon (slope of the results' timestamps), then
times the same number of batches on the model alone in a separate process (its own OpenMP
team: two teams in one process make libgomp sleep between ops). Prints one JSON line: the
windows' pairs and the ratio of the summed rates.

    .venv/bin/python bench/interleaved_e2e.py --precision bf16 --windows 6
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Any

import torch
from kafka import KafkaConsumer

from inspector.checkpoint import load_checkpoint
from inspector.model.device import resolve_device
from inspector.model.fastpath import in_passing_thread
from inspector.tools.benchmark.checkpoint import write_checkpoint
from inspector.tools.benchmark.e2e import DaemonThread, create_bench_topics, daemon_config_for
from inspector.tools.benchmark.model import make_worker
from inspector.tools.benchmark.options import (
    BenchOptions,
    decode_jpegs,
    full_batches,
    synthetic_jpegs,
)
from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section
from inspector.tools.benchmark.timing import measure_worker, throughput
from inspector.tools.benchmark.traffic import Collected, produce, result_rate, results_consumer
from inspector.tools.broker import EmbeddedBroker

log = logging.getLogger("interleaved_e2e")


def child(options_json: str, checkpoint: str, out: IO[str]) -> int:
    """The model-only side: ``ready``, then per ``K`` line a JSON list of K batch seconds."""
    options = BenchOptions(**json.loads(options_json))
    device = resolve_device(options.device)
    worker = make_worker(load_checkpoint(Path(checkpoint)).model, device, options)
    jpegs = synthetic_jpegs(options.n_frames, options.image_size, options.seed)
    batches = full_batches(decode_jpegs(jpegs), options.n_frames, options.batch_size)
    worker.warm_up()
    print("ready", file=out, flush=True)
    done = 0
    for line in sys.stdin:
        if not line.strip() or line.strip() == "quit":
            break
        count = int(line)
        chunk = [batches[(done + j) % len(batches)] for j in range(count)]
        seconds = measure_worker(worker, chunk, warmup=0)
        done += count
        print(json.dumps(seconds), file=out, flush=True)
    return 0


class ModelProcess:
    """The parent's handle on :func:`child`."""

    def __init__(self, options: BenchOptions, checkpoint: Path) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--child",
                json.dumps(dataclasses.asdict(options)),
                str(checkpoint),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        if self._line() != "ready":
            raise RuntimeError("the model-only process did not start (its log is above)")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def time(self, batches: int) -> list[float]:
        """Seconds of each of ``batches`` model-only batches, run now."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{batches}\n")
        self.proc.stdin.flush()
        return [float(s) for s in json.loads(self._line())]

    def close(self) -> None:
        """Stop the process."""
        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def _why(daemon: DaemonThread) -> str:
    """The daemon's readiness reasons and notes, for an error message."""
    said = [*daemon.daemon.readiness(), *daemon.daemon.readiness_notes()]
    return "; ".join(said) or "it says it is ready"


def _wait_ready(daemon: DaemonThread, timeout_s: float) -> None:
    """Wait until the daemon is ready (its source assigned), so no window times a group join."""
    deadline = time.monotonic() + timeout_s
    while daemon.daemon.readiness():
        if not daemon.alive():
            raise RuntimeError("the daemon stopped while starting")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon is not ready after {timeout_s:.0f} s: {_why(daemon)}")
        time.sleep(0.2)


def _collect(
    daemon: DaemonThread,
    consumer: KafkaConsumer,
    got: Collected,
    until: int,
    dlq: str,
    timeout_s: float,
) -> None:
    deadline = time.monotonic() + timeout_s
    while got.accounted < until:
        if not daemon.alive():  # why it stopped is re-raised by its stop() on the way out
            raise RuntimeError("the daemon stopped before every frame came back")
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"only {got.accounted} of {until} frames came back within {timeout_s:.0f} s; "
                f"the daemon: {_why(daemon)}"
            )
        got.poll(consumer, dlq)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        out = sys.stdout
        sys.stdout = sys.stderr  # stdout carries the protocol only
        return child(sys.argv[2], sys.argv[3], out)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--windows", type=int, default=6)
    parser.add_argument("--batches-per-window", type=int, default=4)
    parser.add_argument("--bootstrap-servers", help="a broker of yours instead of the embedded one")
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="longest wait for one window's frames, s"
    )
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    per_window = args.batches_per_window * args.batch_size
    options = BenchOptions(
        mode="e2e",
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=args.batch_size,
        frames=per_window,
        precision=args.precision,
        device=args.device,
        bootstrap_servers=args.bootstrap_servers,
    )
    options.validate()
    device = resolve_device(args.device)
    jpegs = synthetic_jpegs(per_window, args.image_size, options.seed)
    pairs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="inspector-il-")))
        ckpt = in_passing_thread(lambda: write_checkpoint(tmp, options, device, jpegs))
        model = ModelProcess(options, ckpt)
        stack.callback(model.close)
        bootstrap = args.bootstrap_servers or stack.enter_context(EmbeddedBroker()).bootstrap
        config = daemon_config_for(options, device, bootstrap, uuid.uuid4().hex[:10], ckpt)
        create_bench_topics(config)
        daemon = DaemonThread(config, name="il-daemon")
        stack.callback(daemon.stop)
        consumer = results_consumer(config.kafka)
        stack.callback(consumer.close)
        got = Collected()
        _wait_ready(daemon, args.timeout)
        # One window first, untimed: group join, first fetches, the daemon's first batches.
        for window in range(args.windows + 1):
            start = len(got.stamps_ms)
            produce(bootstrap, config.kafka.frames_topic, jpegs)
            until = (window + 1) * per_window
            _collect(daemon, consumer, got, until, config.kafka.dlq_topic, args.timeout)
            e2e = result_rate(got.stamps_ms[start:])
            model_rate = throughput(model.time(args.batches_per_window), args.batch_size)
            if window:
                pairs.append(
                    {
                        "e2e_images_per_s": round(e2e, 3),
                        "model_only_images_per_s": round(model_rate, 3),
                    }
                )
                print(
                    f"window {window}: e2e {e2e:6.2f}  model only {model_rate:6.2f} images/s",
                    file=sys.stderr,
                )
    e2e_mean = statistics.fmean(p["e2e_images_per_s"] for p in pairs)
    model_mean = statistics.fmean(p["model_only_images_per_s"] for p in pairs)
    result = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "windows": pairs,
        "e2e_images_per_s": e2e_mean,
        "model_only_images_per_s": model_mean,
        "e2e_ratio": e2e_mean / model_mean,
        "median_window_ratio": statistics.median(
            p["e2e_images_per_s"] / p["model_only_images_per_s"] for p in pairs
        ),
        "dead_letters": got.dead_letters,
        "command": ["python", *sys.argv],
    }
    print(json.dumps(result))
    if not args.no_record:
        rows = [("window", "e2e images/s", "model only images/s", "ratio")]
        rows += [
            (
                str(n),
                f"{p['e2e_images_per_s']:.2f}",
                f"{p['model_only_images_per_s']:.2f}",
                f"{p['e2e_images_per_s'] / p['model_only_images_per_s']:.2f}",
            )
            for n, p in enumerate(pairs, 1)
        ]
        write_section(
            args.record,
            "interleaved_e2e",
            f"End to end over Kafka vs model only, alternating windows ({args.backbone}, "
            f"{args.image_size} px, batch {args.batch_size}, {args.precision}, {device})",
            markdown_table(rows)
            + f"\nMean e2e/model-only ratio {result['e2e_ratio']:.2f}, median window ratio "
            f"{result['median_window_ratio']:.2f}.\n",
            device=device,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
