"""Detection quality without ImageNet weights: training variants and anomalib, 3 seeds.

Datasets: the synthetic line the demo runs (``metal``, 128 px, five defect kinds) and the
held-out real-photograph set (scikit-image's brick, grass and gravel photographs; training
crops from the top of each photograph, test crops with painted defects from the bottom; see
:mod:`inspector.tools.synth.textures`). For each dataset, case and seed one model is trained
(resnet18, 128 px, 10 epochs, Adam 0.005, batch 16, no pretrained weights) and its test images
scored (:mod:`inspector.tools.benchmark.detection`). One JSON line per run on stdout; the
tables (mean and standard deviation over the seeds) replace the README's section between
``<!-- detection:begin -->`` and ``<!-- detection:end -->``; training times, which depend on
the machine, go to the generated ``bench/PERFORMANCE.md``.

    .venv/bin/python bench/detection.py                   # everything (about 20 min on 2 cores)
    .venv/bin/python bench/detection.py --datasets brick --cases ours,anomalib --seeds 0
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from inspector.tools.benchmark.detection import CASES, EPOCHS, run_case
from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section
from inspector.tools.synth.dataset import generate_dataset
from inspector.tools.synth.textures import TEXTURES, generate_texture_dataset

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- detection:begin -->", "<!-- detection:end -->"
SYNTHETIC = ("metal",)
METRICS = (
    ("image_auroc", "image AUROC"),
    ("pixel_auroc", "pixel AUROC"),
    ("pixel_aupro", "AU-PRO"),
)


def _dataset(cache: Path, name: str) -> Path:
    root = cache / name
    if not (root / "test").is_dir():
        if name in TEXTURES:
            generate_texture_dataset(root, name)
        else:
            generate_dataset(
                root, category=name, image_size=128, n_train=80, n_test_good=30,
                n_test_per_defect=10,
            )  # fmt: skip
    return root


def _cell(values: list[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.fmean(finite):.3f} ± {sd:.3f}"


def tables(runs: list[dict[str, Any]], cases: list[str]) -> str:
    """Markdown: one table per metric, rows dataset x kind, a column per case."""
    by: dict[tuple[str, str, str, str], list[float]] = defaultdict(list)
    rows_seen: dict[tuple[str, str], None] = {}
    for run in runs:
        for kind, figures in run["metrics"].items():
            rows_seen[(run["dataset"], kind)] = None
            for metric, value in figures.items():
                by[(run["dataset"], kind, run["case"], metric)].append(value)
    # Mean over the real photographs: the figure the issue compares with anomalib.
    real = [d for d in dict.fromkeys(r["dataset"] for r in runs) if d in TEXTURES]
    parts = []
    for metric, title in METRICS:
        rows = [["dataset", "defect", *cases]]
        for dataset, kind in rows_seen:
            rows.append([dataset, kind, *(_cell(by[(dataset, kind, c, metric)]) for c in cases)])
        if len(real) > 1:
            rows.append(
                ["photographs", "all (mean)"]
                + [
                    _cell(
                        [
                            statistics.fmean(by[(d, "all", c, metric)])
                            for d in real
                            if by[(d, "all", c, metric)]
                        ]
                    )
                    for c in cases
                ]
            )
        parts.append(f"**{title}** (mean ± sd over seeds)\n\n{markdown_table(rows)}")
    return "\n\n".join(parts)


def _seconds_table(runs: list[dict[str, Any]], cases: list[str]) -> str:
    by: dict[tuple[str, str], list[float]] = defaultdict(list)
    for run in runs:
        by[(run["dataset"], run["case"])].append(run["train_seconds"])
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    rows = [["dataset", *cases]]
    # The fastest of the seeds: the figure least disturbed by whatever else ran meanwhile.
    rows += [[d, *(f"{min(by[(d, c)]):.1f}" for c in cases)] for d in datasets]
    return markdown_table(rows)


def _write_readme(body: str, command: list[str]) -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        sys.exit(f"README.md lacks the {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    section = f"{BEGIN}\n{body}\n\n`{' '.join(command)}`\n{END}"
    readme.write_text(head + section + tail, encoding="utf-8")
    print(f"README.md section {BEGIN} updated", file=sys.stderr)


def main() -> None:
    """Run the matrix; print a JSON line per run; write the README and performance sections."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--datasets", default=",".join(SYNTHETIC + TEXTURES))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--cache", type=Path, default=ROOT / "runs" / "detection-data")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md as it is")
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    cases = args.cases.split(",")
    unknown = sorted(set(cases) - set(CASES))
    if unknown:
        parser.error(f"unknown case(s) {unknown}; choose from {list(CASES)}")
    runs = []
    for name in args.datasets.split(","):
        data = _dataset(args.cache, name)
        for case in cases:
            for seed in (int(s) for s in args.seeds.split(",")):
                metrics, seconds = run_case(case, data, seed, epochs=args.epochs)
                run = {"dataset": name, "case": case, "seed": seed, "epochs": args.epochs}
                run |= {"train_seconds": round(seconds, 2), "metrics": metrics}
                print(json.dumps(run), flush=True)
                runs.append(run)
    command = ["python", "bench/detection.py", *sys.argv[1:]]
    if not args.no_readme:
        _write_readme(tables(runs, cases), command)
    if not args.no_record:
        write_section(
            args.record,
            "detection",
            "Detection benchmark: training time per model (s, fastest of the seeds)",
            _seconds_table(runs, cases)
            + "\n\nresnet18, 128 px, 10 epochs, CPU; the project's times include calibration.",
            command=command,
        )


if __name__ == "__main__":
    main()
