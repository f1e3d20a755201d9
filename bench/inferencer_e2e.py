"""Our daemon end to end beside anomalib's ``OpenVINOInferencer`` loop, and its peak memory.

Runs ``inspector bench --mode model --compare anomalib-openvino-inferencer`` in a fresh
process (see :mod:`inspector.tools.benchmark.e2e_peers`), prints its JSON result on stdout,
a table on stderr, and records the table in ``bench/PERFORMANCE.md``.

    .venv/bin/python bench/inferencer_e2e.py                  # wide_resnet50_2, 256 px, 48 files
    .venv/bin/python bench/inferencer_e2e.py --backbone resnet18 --frames 96 --no-record
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from inspector.tools.benchmark.e2e_peers import GROUP
from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section
from inspector.tools.benchmark.sweep import format_table, run_isolated


def table(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """One row per process: what it ran, its rate over the files and its peak memory."""
    rows: list[tuple[str, ...]] = [("run", "serves", "images/s", "peak RSS MB", "RSS at end MB")]
    for name, run in result["runs"].items():
        serves = f"{run['backend']} {run['precision']}" if run["kind"] == "daemon" else "int8"
        rate, peak, end = (run[k] for k in ("images_per_s", "peak_rss_mb", "rss_at_end_mb"))
        rows.append((name, serves, f"{rate:.2f}", f"{peak:.0f}", f"{end:.0f}"))
    return rows


def summary(result: dict[str, Any]) -> str:
    """The two figures the comparison is for, from the same run."""
    e2e, memory = result["end_to_end"], result["memory"]
    peak = memory["peak_rss_mb"]
    return (
        f"ours / {GROUP} images/s: {e2e['ratio']:.2f}x ({e2e['target']}); "
        f"daemon peak RSS int8 {peak['ours-int8']:.0f} MB, fp32 {peak['ours-fp32']:.0f} MB "
        f"(int8/fp32 {memory['int8_vs_fp32']:.2f})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="wide_resnet50_2")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--frames", type=int, default=48, help="image files both sides read")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for the whole run")
    parser.add_argument("-v", "--verbose", action="store_true", help="pass the run's log on")
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    flags = ["--mode", "model", "--compare", GROUP, "--device", "cpu"]
    flags += ["--backbone", args.backbone, "--image-size", str(args.image_size)]
    flags += ["--batch-size", str(args.batch_size), "--frames", str(args.frames)]
    flags += ["--warmup", str(args.warmup)]
    result = run_isolated(flags, timeout_s=args.timeout, verbose=args.verbose)
    print(json.dumps(result), flush=True)
    if result.get("failed"):
        return 1
    rows = table(result)
    print(format_table(rows), file=sys.stderr)
    print(summary(result), file=sys.stderr)
    if not args.no_record:
        write_section(
            args.record,
            "inferencer_e2e",
            f"Our daemon vs anomalib's OpenVINOInferencer loop, end to end ({args.backbone}, "
            f"{args.image_size} px, batch {args.batch_size}, {args.frames} files, CPU)",
            markdown_table(rows)
            + f"\n{summary(result)}.\n\nSame weights and the same JPEG files; each side its own "
            "int8 model (ours: `inspector quantize`, served by `precision: auto`; anomalib's: "
            "`to_openvino` with `INT8_PTQ`). Each run is a process of its own; images/s over "
            "the files after loading and warm-up; peak RSS over its whole life, RSS at end once "
            "its frames were done, the model still loaded.\n",
            command=["python", "bench/inferencer_e2e.py", *sys.argv[1:]],
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
