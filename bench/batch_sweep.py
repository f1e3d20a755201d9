"""Batch-size tuning: model-only throughput and latency per batch size, and which one to run.

Runs ``inspector bench --mode model`` once per batch size (a fresh process each), prints each
JSON result on its own line on stdout, then one JSON line with the recommendation
(``recommended_batch_size``: the smallest batch size within ``--tolerance`` of the best
throughput whose p95 batch latency fits ``--latency-budget-ms``), and a table on stderr.
Put the recommendation in ``batcher.max_batch_size``; a frame then waits at most
``batcher.max_wait_ms`` for its batch to fill plus about the p95 batch latency.

    .venv/bin/python bench/batch_sweep.py --precision bf16             # wide_resnet50_2, CPU
    .venv/bin/python bench/batch_sweep.py --device cuda --batch-sizes 8 16 32 64 128 256
"""

from __future__ import annotations

import argparse
import json
import sys

from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section
from inspector.tools.benchmark.sweep import format_table, recommend_batch_size, run_isolated


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "auto"])
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batches", type=int, default=4, help="timed batches per batch size")
    parser.add_argument("--min-frames", type=int, default=16, help="timed frames at least")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.05, help="throughput given up")
    parser.add_argument("--latency-budget-ms", type=float, help="largest p95 batch latency")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per batch size")
    parser.add_argument("-v", "--verbose", action="store_true", help="pass each run's log on")
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    results = []
    for batch in args.batch_sizes:
        flags = ["--mode", "model", "--backbone", args.backbone]
        flags += ["--image-size", str(args.image_size), "--precision", args.precision]
        flags += ["--device", args.device, "--batch-size", str(batch)]
        flags += ["--frames", str(max(args.min_frames, args.batches * batch))]
        flags += ["--warmup", str(args.warmup)]
        result = run_isolated(flags, timeout_s=args.timeout, verbose=args.verbose)
        results.append({"batch_size": batch, **result})
        print(json.dumps(results[-1]), flush=True)
    choice = recommend_batch_size(
        results, tolerance=args.tolerance, latency_budget_ms=args.latency_budget_ms
    )
    print(json.dumps(choice.as_json()), flush=True)
    rows = [("batch", "img/s", "p50 ms", "p95 ms", "ms/image", "rss MB", "GPU MB")]
    for r in results:
        if r.get("failed"):
            rows.append((str(r["batch_size"]), "failed", "", "", "", "", ""))
            continue
        gpu = r["peak_gpu_mb"]
        rows.append(
            (
                str(r["batch_size"]),
                f"{r['images_per_s']:.2f}",
                f"{r['p50_ms']:.1f}",
                f"{r['p95_ms']:.1f}",
                f"{1000 / r['images_per_s']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
                "-" if gpu is None else f"{gpu:.0f}",
            )
        )
    print(format_table(rows), file=sys.stderr)
    print(f"recommended batch size: {choice.batch_size} ({choice.reason})", file=sys.stderr)
    if not args.no_record:
        write_section(
            args.record,
            f"batch_sweep-{args.device}-{args.precision}",
            f"Batch size sweep, model only ({args.backbone}, {args.image_size} px, "
            f"{args.precision}, {args.device})",
            markdown_table(rows)
            + f"\nRecommended `batcher.max_batch_size`: {choice.batch_size} ({choice.reason}).\n",
        )
    return 1 if any(r.get("failed") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
