"""What a shadow model costs served frames: latency and results/s, shadow off vs on, alternating.

The real daemon, one process per window (``Daemon`` as ``inspector run`` runs it, the process
of ``bench/retention.py``: :mod:`inspector.tools.benchmark.retention_process`): the demo's two
cameras as directory sources of generated frames -> batcher -> worker -> post-processing -> the
JSON-lines sink; no broker, so broker noise stays out. The served model is the demo's size
(resnet18, 128 px, seeded random weights as with ``weights: none``) and the shadow is the same
checkpoint loaded a second time under the name ``shadow`` (a retrained candidate of the same
architecture costs the same), with its own image threshold so that the two sometimes disagree.
Both models are loaded in every window; only the recipe differs: ``"*"`` names
``shadow_model`` in the ``on`` windows and not in the ``off`` ones (both keep the demo's
``deadline_ms``; directory frames carry no capture time, so no deadline skips a shadow here).

Two rates, each in windows alternating off/on, then on/off in the next pair (so a machine that
drifts during a pair favours neither side): the demo's (each camera paced at the demo's
per-camera rate) and saturation (unpaced). Per window: served latency p50/p95 (each result's
``latency_ms.total``: from the frame's read, which for a directory source is its capture, to
its verdict), results/s and CPU per result over the span from the first read to the last result
(:func:`inspector.tools.benchmark.retention_figures.window_figures`), and how many results carry
the shadow's verdict (the rest had their shadow skipped so as not to delay served frames).

Prints one JSON object on stdout (medians per rate and condition, on/off ratios per figure and
per pair, the target: served latency p50 and p95 within 5 % at the demo's rate), writes it
indented to ``--json`` and its table to the generated ``bench/PERFORMANCE.md``.

    .venv/bin/python bench/shadow.py            # the full run, about 6 minutes on 2 cores
    .venv/bin/python bench/shadow.py --tiny --no-record   # a smoke run, under a minute or two
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from inspector.errors import InspectorError
from inspector.tools.benchmark.record import (
    add_record_arguments,
    markdown_table,
    run_facts,
    save_json,
    write_section,
)
from inspector.tools.benchmark.retention_figures import PACE_KEPT, RateName, window_figures
from inspector.tools.benchmark.retention_windows import (
    Prepared,
    Settings,
    demo_line,
    prepare,
    run_window_process,
    window_config,
)
from inspector.tools.demo.setup import DEMO_DEADLINE_MS

#: Where the JSON result goes by default: generated, beside the performance file.
DEFAULT_JSON = Path(__file__).resolve().with_name("results") / "shadow.json"
#: The shadow model's name in every window's ``models:``.
SHADOW = "shadow"
#: Most that served latency (p50 and p95) may change with a shadow on, at the demo's rate.
MAX_LATENCY_CHANGE = 0.05
TARGET = (
    "served latency p50 and p95 change by no more than 5 % with a shadow on, at the demo's rate"
)
#: The figures compared between shadow on and off.
COMPARED = ("latency_p50_ms", "latency_p95_ms", "results_per_s", "cpu_ms_per_result")
RATES: tuple[RateName, ...] = ("demo", "saturation")
#: ``--tiny``: one pair of the smallest windows on a 64 px model, for the test.
TINY = {"pairs": 1, "demo_frames": 8, "saturation_frames": 8, "image_size": 64}


def _arguments() -> argparse.Namespace:
    demo, daemon = demo_line()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4, help="off/on windows per rate")
    parser.add_argument("--demo-frames", type=int, default=200, help="frames per window, paced")
    parser.add_argument(
        "--saturation-frames", type=int, default=400, help="frames per window, unpaced"
    )
    parser.add_argument(
        "--image-size", type=int, default=demo.image_size, help="model input (default: the demo's)"
    )
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument(
        "--shadow-threshold",
        type=float,
        default=0.4,
        help="the shadow's image threshold (the served model keeps its own, 0.5): a lower one "
        "flags more, so the two disagree on some frames as a real candidate would",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="a smoke run: " + ", ".join(f"{k}={v}" for k, v in TINY.items()) + " (overrides)",
    )
    parser.add_argument("--work-dir", type=Path, help="default: a temporary folder")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=0)
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    if args.tiny:
        for key, value in TINY.items():
            setattr(args, key, value)
    if args.pairs < 1 or min(args.demo_frames, args.saturation_frames) < 2 * demo.cameras:
        parser.error("--pairs must be at least 1 and each window at least two frames a camera")
    if not 0 <= args.shadow_threshold <= 1:
        parser.error("--shadow-threshold is on the normalised 0..1 scale")
    args.demo = demo
    args.daemon = daemon
    return args


def shadow_window_config(
    settings: Settings,
    prepared: Prepared,
    rate: RateName,
    shadow: bool,
    folder: Path,
    shadow_threshold: float,
) -> dict[str, Any]:
    """One window's daemon configuration: the retention bench's with retention off, both models
    loaded, and the recipe naming the shadow only when ``shadow``."""
    config = window_config(settings, prepared, rate, False, folder)
    recipe: dict[str, Any] = {"deadline_ms": DEMO_DEADLINE_MS}
    if shadow:
        recipe |= {"shadow_model": SHADOW, "shadow_image_threshold": shadow_threshold}
    # Loaded in both conditions: the off windows hold the same memory, only the recipe differs.
    return {**config, "models": {SHADOW: str(prepared.checkpoint)}, "cameras": {"*": recipe}}


def run_window(
    settings: Settings, config: dict[str, Any], rate: RateName, shadow: bool, folder: Path
) -> dict[str, Any]:
    """One window in a process of its own: its figures and shadow counts.

    Raises:
        InspectorError: The process failed or ran too long, or a frame has no result.
    """
    frames = settings.frames(rate)
    ran = run_window_process(settings, config, rate, folder)
    lines, tail, process_s = ran.lines, ran.tail, ran.process_s
    messages = [json.loads(line) for line in lines]
    # Every frame once: as many results as frames, none twice (frame ids are the file names).
    if len(messages) != frames or len({m["frame_id"] for m in messages}) != frames:
        raise InspectorError(
            f"bench: the {rate} window delivered {len(lines)} results for {frames} frames; "
            f"its log ends:\n{tail}"
        )
    figures = window_figures(rate, shadow, lines, ran.out, process_s)
    verdicts = [m["shadow"] for m in messages if m.get("shadow") is not None]
    return {
        "rate": rate,
        "shadow": shadow,
        "frames": frames,
        "results": figures.results,
        "shadowed": len(verdicts),
        # A result without the block in an on window: its shadow was skipped (what
        # inspector_shadow_skipped_total counts), so as not to delay served frames.
        "skipped": len(messages) - len(verdicts) if shadow else 0,
        "disagreements": sum(
            m["shadow"]["is_anomalous"] != m["is_anomalous"]
            for m in messages
            if m.get("shadow") is not None
        ),
        "seconds": figures.seconds,
        "results_per_s": figures.results_per_s,
        "cpu_ms_per_result": figures.cpu_ms_per_result,
        "latency_p50_ms": figures.latency_p50_ms,
        "latency_p95_ms": figures.latency_p95_ms,
        "flagged_share": figures.flagged_share,
        "process_s": process_s,
    }


def summarise(windows: list[dict[str, Any]], rate: RateName, pairs: int) -> dict[str, Any]:
    """One rate's medians per condition, the on/off ratios (of medians and per pair), counts."""
    mine = [w for w in windows if w["rate"] == rate]
    by = {c: [w for w in mine if w["shadow"] == (c == "on")] for c in ("off", "on")}
    if len(by["off"]) != pairs or len(by["on"]) != pairs:
        raise InspectorError(f"bench: the {rate} rate needs {pairs} windows of each condition")
    medians = {
        c: {k: statistics.median(w[k] for w in ws) for k in COMPARED} for c, ws in by.items()
    }
    on = by["on"]
    shadowed = sum(w["shadowed"] for w in on)
    results_on = sum(w["results"] for w in on)
    return {
        "frames_per_window": mine[0]["frames"],
        "windows": mine,
        "median": medians,
        "ratio_on_off": {k: medians["on"][k] / medians["off"][k] for k in COMPARED},
        # Windows of the same pair: off and on in turn, seconds apart.
        "pair_ratios_on_off": {
            k: [b[k] / a[k] for a, b in zip(by["off"], by["on"], strict=True)] for k in COMPARED
        },
        "shadowed_share": shadowed / results_on,
        "skipped": sum(w["skipped"] for w in on),
        "disagreement_share": sum(w["disagreements"] for w in on) / shadowed if shadowed else None,
    }


def run_bench(settings: Settings, shadow_threshold: float) -> dict[str, Any]:
    """Prepare, run every window (per pair and rate: off/on, or on/off in odd pairs), summarise."""
    t0 = time.monotonic()
    prepared = prepare(settings)
    windows: list[dict[str, Any]] = []
    plan = [
        (rate, on)
        for p in range(settings.pairs)
        for rate in RATES
        for on in ((False, True) if p % 2 == 0 else (True, False))
    ]
    for n, (rate, on) in enumerate(plan, 1):
        folder = settings.work / "windows" / f"{n:02d}-{rate}-{'on' if on else 'off'}"
        config = shadow_window_config(settings, prepared, rate, on, folder, shadow_threshold)
        w = run_window(settings, config, rate, on, folder)
        windows.append(w)
        print(
            f"window {n}/{len(plan)}: {rate:10s} shadow {'on ' if on else 'off'}  "
            f"{w['results_per_s']:6.2f} results/s  p50 {w['latency_p50_ms']:5.0f} ms  "
            f"p95 {w['latency_p95_ms']:5.0f} ms  shadowed {w['shadowed']}/{w['results']}",
            file=sys.stderr,
        )
    rates: dict[str, Any] = {}
    for rate in RATES:
        figures = summarise(windows, rate, settings.pairs)
        offered = settings.fps_per_camera * settings.cameras if rate == "demo" else None
        rates[rate] = {
            "fps_per_camera": settings.fps_per_camera if rate == "demo" else None,
            "offered_results_per_s": offered,
            "kept_pace": None
            if offered is None
            else figures["median"]["off"]["results_per_s"] >= PACE_KEPT * offered,
            **figures,
        }
    ratio = rates["demo"]["ratio_on_off"]
    change = {k: ratio[k] - 1 for k in ("latency_p50_ms", "latency_p95_ms")}
    target = {
        "text": TARGET,
        "max_change": MAX_LATENCY_CHANGE,
        "latency_change": change,
        "met": all(abs(c) <= MAX_LATENCY_CHANGE for c in change.values()),
    }
    return {"rates": rates, "target": target, "wall_s": time.monotonic() - t0}


def _table(rates: dict[str, Any]) -> str:
    rows = [
        ("rate", "shadow", "latency p50 ms", "p95 ms", "results/s", "CPU ms/result", "shadowed")
    ]
    for rate, figures in rates.items():
        for condition in ("off", "on"):
            med = figures["median"][condition]
            shadowed = f"{figures['shadowed_share']:.0%}" if condition == "on" else "-"
            rows.append(
                (
                    rate,
                    condition,
                    f"{med['latency_p50_ms']:.0f}",
                    f"{med['latency_p95_ms']:.0f}",
                    f"{med['results_per_s']:.2f}",
                    f"{med['cpu_ms_per_result']:.1f}",
                    shadowed,
                )
            )
    return markdown_table(rows)


def _verdicts(rates: dict[str, Any], target: dict[str, Any]) -> str:
    change = target["latency_change"]
    lines = [
        f"- demo: served latency p50 {change['latency_p50_ms']:+.1%}, p95 "
        f"{change['latency_p95_ms']:+.1%} with the shadow on (target within "
        f"{target['max_change']:.0%}: {'met' if target['met'] else 'NOT met'})"
    ]
    for rate, figures in rates.items():
        ratios = figures["pair_ratios_on_off"]
        lines.append(
            f"- {rate}: results/s on/off {figures['ratio_on_off']['results_per_s']:.3f} "
            f"(per pair {', '.join(f'{r:.3f}' for r in ratios['results_per_s'])}); latency "
            f"p50 on/off per pair {', '.join(f'{r:.3f}' for r in ratios['latency_p50_ms'])}; "
            f"shadow verdicts on {figures['shadowed_share']:.0%} of the results "
            f"({figures['skipped']} skipped)"
        )
    if rates["demo"]["kept_pace"] is False:
        lines.append(
            "  (this machine did not keep the demo's rate even with the shadow off: the demo "
            "rate's windows were saturated)"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    args = _arguments()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="inspector-shadow-") as tmp:
        settings = Settings(
            pairs=args.pairs,
            demo_frames=args.demo_frames,
            saturation_frames=args.saturation_frames,
            cameras=args.demo.cameras,
            fps_per_camera=args.demo.fps / args.demo.cameras,
            image_size=args.image_size,
            frame_size=args.demo.frame_size,
            precision=args.precision,
            daemon=args.daemon,
            work=(args.work_dir or Path(tmp)) / "shadow-bench",
            seed=args.seed,
        )
        measured = run_bench(settings, args.shadow_threshold)
    shown = {
        k: v
        for k, v in dataclasses.asdict(settings).items()
        if k not in ("work", "daemon", "good_sample_rate", "max_bytes", "image_format")
    }
    result: dict[str, Any] = {
        "benchmark": "shadow",
        "settings": {
            **shown,
            "shadow_image_threshold": args.shadow_threshold,
            "deadline_ms": DEMO_DEADLINE_MS,
            "batcher": args.daemon["batcher"],
            "warmup_batches": args.daemon["warmup_batches"],
            "weights": "seeded random (as weights: none); the shadow: the same checkpoint",
            "frames": "generated metal parts (every fourth with a scratch), JPEG files",
            "order": "per pair and rate: off then on in even pairs, on then off in odd ones",
        },
        **measured,
        **run_facts(),
    }
    print(json.dumps(result))
    if not args.no_record:
        shown_json = save_json(args.json, result)
        write_section(
            args.record,
            "shadow",
            "Shadow model off vs on through the daemon, alternating windows "
            f"(resnet18, {settings.image_size} px, {settings.precision}, cpu)",
            f"Each window is one daemon process: the demo's {settings.cameras} cameras as "
            "directory sources of generated frames, JSON-lines sink, no retention; the served "
            "model and a shadow (the same checkpoint loaded again, image threshold "
            f"{args.shadow_threshold:g}) loaded in every window, named as the recipe's "
            f"`shadow_model` in the `on` windows. {settings.pairs} pair(s) of windows per rate "
            "(off/on, then on/off); medians per condition. `demo`: each camera at "
            f"{settings.fps_per_camera:g} frames/s (the demo's rate); `saturation`: unpaced. "
            "Latency: `latency_ms.total`, from the frame's read to its verdict; shadowed: the "
            "share of results carrying the shadow's verdict (the rest were skipped so as not to "
            "delay served frames).\n\n"
            + _table(measured["rates"])
            + f"\nTarget: {TARGET}.\n\n"
            + _verdicts(measured["rates"], measured["target"])
            + f"\nThe whole result (every window): `{shown_json}`.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
