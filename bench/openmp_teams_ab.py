"""What a second OpenMP team costs the model: model-only with and without one alive beside it.

torch's OpenMP runtime (libgomp) gives every thread that runs a parallel op a team of workers
for as long as that thread lives; once the teams hold more threads than there are cores, they
sleep between ops instead of spinning. This alternates, in one process, model-only phases
alone and with a second thread alive that once ran a parallel op, and prints each pair
(images/s and the process's context switches/s) and the median ratio as one JSON line.
Why the daemon sets its model up on passing threads (``in_passing_thread``).

    .venv/bin/python bench/openmp_teams_ab.py --precision bf16 --pairs 4
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry

from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.model.fastpath import RuntimeOptions
from inspector.runtime.metrics import Metrics
from inspector.runtime.worker import ModelWorker
from inspector.tools.benchmark.options import decode_jpegs, synthetic_jpegs
from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section


def _context_switches() -> int:
    total = 0
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if "ctxt_switches" in line:
                    total += int(line.split()[1])
        except OSError:  # a thread that just ended
            continue
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--batches", type=int, default=4, help="timed batches per phase")
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = ReverseDistillation(
        ArchitectureConfig(backbone=args.backbone, image_size=args.image_size)
    )
    worker = ModelWorker(
        model,
        torch.device("cpu"),
        Metrics(CollectorRegistry()),
        runtime=RuntimeOptions(precision=args.precision),
        max_batch_size=args.batch_size,
    )
    frames = decode_jpegs(synthetic_jpegs(args.batch_size, args.image_size, 0))
    worker.warm_up()

    def phase() -> tuple[float, float]:
        switches, started = _context_switches(), time.perf_counter()
        for _ in range(args.batches):
            worker.score(frames)
        seconds = time.perf_counter() - started
        rate = args.batches * args.batch_size / seconds
        return rate, (_context_switches() - switches) / seconds

    stop = threading.Event()

    def second_team() -> None:
        torch.ones(1 << 22).add_(1)  # one parallel op: this thread now keeps a team
        stop.wait()

    pairs = []
    for _ in range(args.pairs):
        alone = phase()
        stop.clear()
        other = threading.Thread(target=second_team)
        other.start()
        time.sleep(0.5)
        beside = phase()
        stop.set()
        other.join()
        time.sleep(0.5)  # the team ends with its thread
        pairs.append((alone, beside))
        print(
            f"alone {alone[0]:6.2f} images/s {alone[1]:6.0f} switches/s | second team "
            f"{beside[0]:6.2f} images/s {beside[1]:6.0f} switches/s",
            file=sys.stderr,
        )
    result = {
        "backbone": args.backbone,
        "precision": args.precision,
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "pairs": [
            {
                "alone_images_per_s": round(a[0], 3),
                "alone_switches_per_s": round(a[1]),
                "second_team_images_per_s": round(b[0], 3),
                "second_team_switches_per_s": round(b[1]),
            }
            for a, b in pairs
        ],
        "median_ratio": statistics.median(b[0] / a[0] for a, b in pairs),
        "command": ["python", *sys.argv],
    }
    print(json.dumps(result))
    if not args.no_record:
        rows = [("pair", "alone images/s", "switches/s", "second team images/s", "switches/s")]
        rows += [
            (str(n), f"{a[0]:.2f}", f"{a[1]:.0f}", f"{b[0]:.2f}", f"{b[1]:.0f}")
            for n, (a, b) in enumerate(pairs, 1)
        ]
        write_section(
            args.record,
            "openmp_teams_ab",
            f"A second OpenMP team beside the model ({args.backbone}, batch {args.batch_size}, "
            f"{args.precision}, CPU)",
            markdown_table(rows)
            + f"\nMedian images/s with a second team / alone: {result['median_ratio']:.2f}.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
