"""Commands around the daemon: ``synth``, ``demo``, ``simulate`` and ``bench``.

Their bodies live in :mod:`inspector.tools`, imported only when the command runs: ``demo``,
``simulate`` and ``bench`` need extras that the daemon's install lacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from inspector.cli.options import Subparsers, flags, from_field, positive
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import ModelConfig
from inspector.tools.synth.surfaces import CATEGORIES


def add_synth(sub: Subparsers) -> None:
    """``inspector synth --out DIR``: a synthetic MVTec-layout line."""
    p = sub.add_parser("synth", help="write a synthetic MVTec-layout dataset")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--category", default="metal", choices=CATEGORIES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-test-good", type=int, default=20)
    p.add_argument("--n-test-per-defect", type=int, default=6)
    p.set_defaults(handler=_cmd_synth)


def add_demo(sub: Subparsers) -> None:
    """``inspector demo``: its flags are the fields of ``DemoOptions``."""
    p = sub.add_parser(
        "demo", help="the whole line on an embedded broker with a live view (Ctrl+C stops)"
    )
    p.add_argument("--frames", type=positive, help="stop after N frames (default: Ctrl+C)")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="cached data/model")
    p.add_argument("--fps", type=float, default=10.0, help="frames/s over all cameras (0: max)")
    p.add_argument("--cameras", type=positive, default=2)
    p.add_argument("--defect-rate", type=float, default=0.2)
    p.add_argument("--bad-every", type=int, default=25, help="every N-th frame corrupt (0: off)")
    p.add_argument("--epochs", type=positive, default=60, help="training epochs of the demo model")
    p.add_argument("--port", type=int, default=9108, help="daemon HTTP port (free one if taken)")
    p.add_argument("--device", **from_field(ModelConfig, "device"))
    p.add_argument("--checkpoint", type=Path, help="use this model instead of the demo one")
    p.add_argument(
        "--bootstrap-servers", help="use this Kafka instead of the embedded broker (fresh topics)"
    )
    p.add_argument(
        "--plain",
        dest="live",
        action="store_const",
        const=False,
        help="log lines instead of the live view (default: live view on a terminal)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--no-hires",
        dest="hires",
        action="store_false",
        help="without the high-resolution camera (1024x768, inspected in 128 px tiles)",
    )
    p.set_defaults(handler=_cmd_demo)


def add_simulate(sub: Subparsers) -> None:
    """``inspector simulate``: broker and topic default to the daemon's environment."""
    p = sub.add_parser("simulate", help="publish a simulated camera line to the frames topic")
    p.add_argument(
        "--bootstrap-servers",
        default=os.environ.get("INSPECTOR_KAFKA__BOOTSTRAP_SERVERS", "localhost:9092"),
    )
    p.add_argument(
        "--topic", default=os.environ.get("INSPECTOR_KAFKA__FRAMES_TOPIC", "inspector.frames")
    )
    p.add_argument(
        "--data", type=Path, default=Path("runs/line"), help="synthetic line (made if absent)"
    )
    p.add_argument("--image-size", type=int, default=256, help="frame size when generating")
    p.add_argument("--fps", type=float, default=5.0, help="frames/s over all cameras (0: max)")
    p.add_argument("--cameras", type=positive, default=2)
    p.add_argument("--frames", type=positive, help="stop after N frames (default: forever)")
    p.add_argument("--defect-rate", type=float, default=0.2)
    p.add_argument("--bad-every", type=int, default=0, help="every N-th frame corrupt (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_simulate)


def add_bench(sub: Subparsers) -> None:
    """``inspector bench``: its flags are the fields of ``BenchOptions`` (``argv()`` mirrors)."""
    p = sub.add_parser(
        "bench", help="throughput and latency, model only or end to end; one JSON object"
    )
    p.add_argument("--mode", default="model", choices=["model", "e2e"])
    p.add_argument("--backbone", **from_field(ArchitectureConfig, "backbone"))
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=positive, default=8)
    p.add_argument("--frames", type=positive, help="frames timed (default 64 model, 128 e2e)")
    p.add_argument("--device", **from_field(ModelConfig, "device"))
    p.add_argument("--precision", **from_field(ModelConfig, "precision"))
    p.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=True, help="NHWC layout"
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the forward pass")
    p.add_argument("--cuda-graphs", action="store_true", help="capture and replay (CUDA only)")
    p.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    p.add_argument(
        "--compare-anomalib",
        action="store_true",
        help="model mode: also run anomalib's model with the same weights and inputs",
    )
    p.add_argument(
        "--compare",
        type=lambda text: tuple(g.strip() for g in text.split(",") if g.strip()),
        metavar="GROUPS",
        help="model mode: peer paths beside ours, same weights and inputs; a comma list of "
        "anomalib (eager), openvino, onnxruntime (each side's exports, anomalib's by its own "
        "export code)",
    )
    p.add_argument(
        "--bootstrap-servers", help="e2e: this broker instead of the embedded one (fresh topics)"
    )
    p.add_argument(
        "--decode-device", default="cpu", choices=["cpu", "cuda"], help="e2e: JPEG decoding"
    )
    p.add_argument("--rate", type=float, help="e2e: offer frames/s and report latency at that load")
    p.add_argument("--seed", type=int, default=0, help="random weights and synthetic frames")
    p.add_argument("--json", type=Path, help="also write the result here")
    p.set_defaults(handler=_cmd_bench)


def _cmd_synth(args: argparse.Namespace) -> int:
    from inspector.tools.synth import generate_dataset

    summary = generate_dataset(
        args.out,
        category=args.category,
        seed=args.seed,
        image_size=args.image_size,
        n_train=args.n_train,
        n_test_good=args.n_test_good,
        n_test_per_defect=args.n_test_per_defect,
    )
    n_defect = sum(summary.n_test_defect.values())
    print(
        f"wrote {summary.n_train} train, {summary.n_test_good} good and {n_defect} defective "
        f"test images ({summary.category}, {summary.image_size} px) to {summary.root}"
    )
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from inspector.tools.demo.runner import run_demo
    from inspector.tools.demo.setup import DemoOptions

    opts = DemoOptions(**flags(args, DemoOptions.__dataclass_fields__))
    summary = run_demo(opts)
    overlays = sorted(summary.overlays.rglob("*.png")) if summary.overlays.is_dir() else []
    print(f"sent {summary.sent} frames: {summary.tally.summary()}")
    print(f"results: {summary.results_file}")
    print(f"overlays of the {len(overlays)} flagged frames: {summary.overlays}")
    print(f"logs: {args.workdir / 'demo.log'} (daemon), {args.workdir / 'broker.log'} (broker)")
    print(f"metrics were at {summary.metrics_url} while it ran")
    return 0


def _cmd_simulate(args: argparse.Namespace) -> int:
    from inspector.tools.demo.simulator import simulate

    simulate(
        args.bootstrap_servers,
        args.topic,
        args.data,
        image_size=args.image_size,
        cameras=args.cameras,
        fps=args.fps,
        frames=args.frames,
        defect_rate=args.defect_rate,
        bad_every=args.bad_every,
        seed=args.seed,
    )
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from inspector.tools.benchmark import BenchOptions, run_benchmark

    options = BenchOptions(**flags(args, BenchOptions.__dataclass_fields__))
    # stdout carries the one JSON object only: anything a library prints goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = run_benchmark(options, options.argv())
    text = json.dumps(result, allow_nan=False)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(text, flush=True)
    return 0
