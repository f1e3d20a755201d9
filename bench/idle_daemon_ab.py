"""Does a running daemon slow the model down? Model-only with and without an idle daemon.

The e2e benchmark times the daemon and, before and after it, the model alone; on a small or
shared machine those phases are seconds apart and the machine's speed drifts between them.
This script alternates, in one process, short model-only phases without and with an idle
daemon (embedded broker, group joined, no frames) running beside them, so drift hits both
sides alike, and reports each pair and the median ratio as one JSON line on stdout. A ratio
near 1 says the daemon's own threads cost the model nothing; below 1, the cores they take.

    .venv/bin/python bench/idle_daemon_ab.py --precision bf16 --pairs 5
    .venv/bin/python bench/idle_daemon_ab.py --fetch-max-wait-ms 500   # Kafka's default
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

from inspector.checkpoint import load_checkpoint
from inspector.tools.benchmark.checkpoint import write_checkpoint
from inspector.tools.benchmark.e2e import DaemonThread, create_bench_topics, daemon_config_for
from inspector.tools.benchmark.model import make_worker
from inspector.tools.benchmark.options import BenchOptions, decode_jpegs, synthetic_jpegs
from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section
from inspector.tools.broker import EmbeddedBroker


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--pairs", type=int, default=5, help="quiet/idle-daemon phase pairs")
    parser.add_argument("--batches", type=int, default=4, help="timed batches per phase")
    parser.add_argument("--settle-s", type=float, default=8.0, help="daemon start to timing")
    parser.add_argument("--fetch-max-wait-ms", type=int, help="the daemon's source setting")
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    options = BenchOptions(
        mode="e2e",
        backbone=args.backbone,
        image_size=args.image_size,
        batch_size=args.batch_size,
        frames=2 * args.batch_size,
        precision=args.precision,
        device="cpu",
    )
    device = torch.device("cpu")
    jpegs = synthetic_jpegs(2 * args.batch_size, args.image_size, options.seed)
    frames = decode_jpegs(jpegs)[: args.batch_size]
    with tempfile.TemporaryDirectory(prefix="inspector-ab-") as tmp, EmbeddedBroker() as broker:
        ckpt = write_checkpoint(Path(tmp), options, device, jpegs)
        worker = make_worker(load_checkpoint(ckpt).model, device, options)
        worker.warm_up()

        def phase() -> float:
            started = time.perf_counter()
            for _ in range(args.batches):
                worker.score(frames)
            return float(args.batches * args.batch_size / (time.perf_counter() - started))

        daemon_config = daemon_config_for(
            options, device, broker.bootstrap, uuid.uuid4().hex[:10], ckpt
        )
        (source,) = daemon_config.sources
        if args.fetch_max_wait_ms is not None:
            source = source.model_copy(update={"fetch_max_wait_ms": args.fetch_max_wait_ms})
            daemon_config = daemon_config.model_copy(update={"sources": (source,)})
        create_bench_topics(daemon_config)
        pairs = []
        for _ in range(args.pairs):
            quiet = phase()
            daemon = DaemonThread(daemon_config, name="ab-daemon")
            time.sleep(args.settle_s)
            beside = phase()
            daemon.stop()
            pairs.append((quiet, beside))
            print(f"quiet {quiet:6.2f}  beside an idle daemon {beside:6.2f}", file=sys.stderr)
    result = {
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "precision": args.precision,
        "fetch_max_wait_ms": getattr(source, "fetch_max_wait_ms", None),
        "threads": torch.get_num_threads(),
        "pairs_images_per_s": [[round(q, 3), round(b, 3)] for q, b in pairs],
        "median_ratio": statistics.median(b / q for q, b in pairs),
        "command": ["python", *sys.argv],
    }
    print(json.dumps(result))
    if not args.no_record:
        rows = [("pair", "quiet images/s", "beside an idle daemon images/s", "ratio")]
        rows += [
            (str(n), f"{q:.2f}", f"{b:.2f}", f"{b / q:.2f}") for n, (q, b) in enumerate(pairs, 1)
        ]
        write_section(
            args.record,
            "idle_daemon_ab",
            f"Model only, quiet vs beside an idle daemon ({args.backbone}, batch "
            f"{args.batch_size}, {args.precision}, CPU)",
            markdown_table(rows) + f"\nMedian ratio {result['median_ratio']:.2f}.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
