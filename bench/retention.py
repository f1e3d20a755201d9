"""What retention costs the daemon: results/s with retention on vs off, in alternating windows.

The real daemon, one process per window (``Daemon`` as ``inspector run`` runs it): the demo's
two cameras as directory sources of generated frames -> batcher -> worker -> post-processing
-> the JSON-lines sink, plus the retention sink in the windows with retention on. A small model
(resnet18, 128 px, seeded random weights as with ``weights: none``) whose thresholds flag about
a quarter of the frames; retention keeps every flagged frame and 1 % of the good ones (the
demo's ``retention:`` section). Two rates, each in windows alternating off, on, off, on: the
demo's (each camera paced at the demo's per-camera rate) and saturation (unpaced). See
:mod:`inspector.tools.benchmark.retention_windows` for how each figure is taken.

Prints one JSON object on stdout (medians per rate and condition, the on/off ratios, the cost
and the targets: under 5 % of results/s at the demo's rate, under 10 % at saturation), writes
it indented to ``--json`` and its table to the generated ``bench/PERFORMANCE.md``.

    .venv/bin/python bench/retention.py                       # the full run, a few minutes
    .venv/bin/python bench/retention.py --pairs 1 --demo-frames 40 --saturation-frames 80
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from inspector.tools.benchmark.record import (
    add_record_arguments,
    markdown_table,
    run_facts,
    save_json,
    write_section,
)
from inspector.tools.benchmark.retention_figures import MAX_COST, TARGET, Window
from inspector.tools.benchmark.retention_windows import Settings, demo_line, run_bench

#: Where the JSON result goes by default: generated, beside the performance file.
DEFAULT_JSON = Path(__file__).resolve().with_name("results") / "retention.json"


def _arguments() -> argparse.Namespace:
    demo, daemon = demo_line()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4, help="off/on windows per rate")
    parser.add_argument("--demo-frames", type=int, default=200, help="frames per window, paced")
    parser.add_argument(
        "--saturation-frames", type=int, default=400, help="frames per window, unpaced"
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=daemon["retention"]["max_bytes"],
        help="retention.max_bytes (default: the demo's, %(default)s); a small bound makes "
        "every retained frame evict an old one, as on a line whose folder is full",
    )
    parser.add_argument("--image-format", default="png", choices=["png", "jpeg"])
    parser.add_argument(
        "--work-dir",
        type=Path,
        help="where frames and retention folders go (default: a temporary folder); put it on "
        "the disk the daemon would retain to",
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0)
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    if args.pairs < 1 or min(args.demo_frames, args.saturation_frames) < 2 * demo.cameras:
        parser.error("--pairs must be at least 1 and each window at least two frames a camera")
    args.demo = demo
    args.daemon = daemon
    return args


def _table(rates: dict[str, Any]) -> str:
    rows = [
        (
            "rate",
            "retention",
            "results/s",
            "CPU ms/result",
            "writer CPU ms/result",
            "latency p50 ms",
            "p95 ms",
            "flagged",
            "retained",
        )
    ]
    for rate, figures in rates.items():
        for condition in ("off", "on"):
            med = figures["median"][condition]
            windows = [w for w in figures["windows"] if w["retention"] == (condition == "on")]
            writer = statistics.median(w["writer_cpu_ms_per_result"] for w in windows)
            retained = sum(sum(w["retained"].values()) for w in windows) / len(windows)
            rows.append(
                (
                    rate,
                    condition,
                    f"{med['results_per_s']:.2f}",
                    f"{med['cpu_ms_per_result']:.1f}",
                    f"{writer:.1f}",
                    f"{med['latency_p50_ms']:.0f}",
                    f"{med['latency_p95_ms']:.0f}",
                    f"{figures['flagged_share']:.0%}",
                    f"{retained:.0f}",
                )
            )
    return markdown_table(rows)


def _verdicts(rates: dict[str, Any]) -> str:
    lines = []
    for rate, figures in rates.items():
        target = figures["target"]
        lines.append(
            f"- {rate}: cost {figures['cost']:+.1%} of results/s (target under "
            f"{target['max_cost']:.0%}: {'met' if target['met'] else 'NOT met'}); CPU per "
            f"result {figures['cpu_cost']:+.1%}; results/s on/off per pair "
            + ", ".join(f"{r:.3f}" for r in figures["pair_ratios_results_per_s"])
        )
        if figures["kept_pace"] is False:
            lines.append(
                f"  (this machine did not keep the demo's {figures['offered_results_per_s']:g} "
                "results/s even with retention off: the demo rate's windows were saturated)"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    args = _arguments()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    def progress(n: int, total: int, w: Window) -> None:
        print(
            f"window {n}/{total}: {w.rate:10s} retention {'on ' if w.retention else 'off'}  "
            f"{w.results_per_s:6.2f} results/s  {w.cpu_ms_per_result:6.1f} CPU ms/result  "
            f"p50 {w.latency_p50_ms:5.0f} ms  flagged {w.flagged_share:.0%}  "
            f"retained {sum(w.retained.values()):.0f}",
            file=sys.stderr,
        )

    with tempfile.TemporaryDirectory(prefix="inspector-retention-") as tmp:
        settings = Settings(
            pairs=args.pairs,
            demo_frames=args.demo_frames,
            saturation_frames=args.saturation_frames,
            cameras=args.demo.cameras,
            fps_per_camera=args.demo.fps / args.demo.cameras,
            image_size=args.demo.image_size,
            frame_size=args.demo.frame_size,
            precision=args.precision,
            good_sample_rate=args.daemon["retention"]["good_sample_rate"],
            max_bytes=args.max_bytes,
            image_format=args.image_format,
            daemon=args.daemon,
            work=(args.work_dir or Path(tmp)) / "retention-bench",
            seed=args.seed,
        )
        measured = run_bench(settings, progress)
    shown = {k: v for k, v in dataclasses.asdict(settings).items() if k not in ("work", "daemon")}
    result: dict[str, Any] = {
        "benchmark": "retention",
        "settings": {
            **shown,
            "batcher": args.daemon["batcher"],
            "warmup_batches": args.daemon["warmup_batches"],
            "weights": "seeded random (as weights: none)",
            "frames": "generated 256 px metal parts (every fourth with a scratch), JPEG files",
        },
        "rates": measured["rates"],
        "targets": {
            "text": TARGET,
            **{rate: measured["rates"][rate]["target"] for rate in MAX_COST},
        },
        "all_targets_met": all(measured["rates"][rate]["target"]["met"] for rate in MAX_COST),
        "wall_s": measured["wall_s"],
        **run_facts(),
    }
    print(json.dumps(result))
    if not args.no_record:
        shown_json = save_json(args.json, result)
        write_section(
            args.record,
            "retention",
            "Retention on vs off through the daemon, alternating windows "
            f"(resnet18, {settings.image_size} px, {settings.precision}, cpu)",
            "Each window is one daemon process: the demo's "
            f"{settings.cameras} cameras as directory sources of generated frames, "
            "JSON-lines sink, and the retention sink in the `on` windows "
            f"(good_sample_rate {settings.good_sample_rate:g}, max_bytes "
            f"{settings.max_bytes}, {settings.image_format}); {settings.pairs} pair(s) of "
            "windows per rate, off then on; medians per condition. `demo`: each camera at "
            f"{settings.fps_per_camera:g} frames/s (the demo's rate); `saturation`: unpaced. "
            "CPU: the daemon process's over each window's span, per result; writer: the "
            "retention writer thread's.\n\n"
            + _table(measured["rates"])
            + f"\nTarget: {TARGET}.\n\n"
            + _verdicts(measured["rates"])
            + f"\nThe whole result (every window): `{shown_json}`.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
