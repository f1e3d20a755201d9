"""anomalib's Reverse Distillation vs ours, same weights and frames, over a matrix of switches.

Runs one ``inspector bench --mode model --compare-anomalib`` process per configuration (a
fresh process each: no allocator or thread-pool state carries over), prints each JSON result
on its own line on stdout and a summary table on stderr.

    .venv/bin/python bench/side_by_side.py                      # wide_resnet50_2, 256 px, CPU
    .venv/bin/python bench/side_by_side.py --configs fp32 bf16 --frames 64 --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section
from inspector.tools.benchmark.sweep import format_table, run_isolated

#: Named configurations: our switches (anomalib always runs plain fp32, contiguous).
CONFIGS: dict[str, list[str]] = {
    "fp32-nchw": ["--precision", "fp32", "--no-channels-last"],
    "fp32": ["--precision", "fp32", "--channels-last"],
    "bf16": ["--precision", "bf16", "--channels-last"],
    "bf16-compile": ["--precision", "bf16", "--channels-last", "--compile"],
    "bf16-graphs": ["--precision", "bf16", "--channels-last", "--cuda-graphs"],
}


def run(args: argparse.Namespace, name: str) -> dict[str, Any]:
    flags = ["--mode", "model", "--compare-anomalib", "--backbone", args.backbone]
    flags += ["--image-size", str(args.image_size), "--batch-size", str(args.batch_size)]
    flags += ["--frames", str(args.frames), "--device", args.device]
    flags += ["--warmup", str(args.warmup), *CONFIGS[name]]
    return {"config": name, **run_isolated(flags, timeout_s=args.timeout, verbose=args.verbose)}


def table(results: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [
        ("config", "ours img/s", "anomalib img/s", "speedup", "max|diff|", "p50 ms", "rss MB")
    ]
    for r in results:
        if r.get("failed"):
            rows.append((r["config"], "failed", "", "", "", "", ""))
            continue
        rows.append(
            (
                r["config"],
                f"{r['images_per_s']:.2f}",
                f"{r['anomalib_images_per_s']:.2f}",
                f"{r['speedup']:.2f}x",
                f"{r['max_abs_diff']:.2e}",
                f"{r['p50_ms']:.1f}",
                f"{r['peak_rss_mb']:.0f}",
            )
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS)[:3])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per configuration")
    parser.add_argument("-v", "--verbose", action="store_true", help="pass each run's log on")
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    results = []
    for name in args.configs:
        result = run(args, name)
        results.append(result)
        print(json.dumps(result), flush=True)
    rows = table(results)
    print(format_table(rows), file=sys.stderr)
    if not args.no_record:
        write_section(
            args.record,
            "side_by_side",
            f"anomalib vs inspector, model only ({args.backbone}, {args.image_size} px, "
            f"batch {args.batch_size}, {args.device})",
            markdown_table(rows)
            + "\nanomalib runs plain fp32 with the same weights on the same frames in each run; "
            "max|diff| is the largest difference of the anomaly maps.\n",
        )
    return 1 if any(r.get("failed") for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
