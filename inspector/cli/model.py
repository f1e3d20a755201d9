"""The model workflow's commands: ``train``, ``eval``, ``predict`` and ``calibrate``.

Train a model, check it on the test split, score images with it, re-fit its thresholds; the
commands that convert a model (import-anomalib, export, quantize) are :mod:`.conversion`'s.
Each body imports its workflow (:mod:`inspector.ml`) only when the command runs: training and
evaluation need the ``train`` extra, which ``inspector run`` does not. Flags that set a
configuration field take their choices and defaults from that field (:func:`from_field`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from inspector.cli.options import (
    AUTO_CACHE_HELP,
    BACKEND_HELP,
    Subparsers,
    flags,
    from_field,
    positive,
)
from inspector.errors import InspectorError
from inspector.ml.config import TrainConfig
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import ModelConfig


def add_train(sub: Subparsers) -> None:
    """``inspector train --data DIR --out FILE``: architecture, training and region flags."""
    p = sub.add_parser("train", help="train, calibrate and write one checkpoint")
    p.add_argument(
        "--data", type=Path, required=True, help="MVTec-style folder or folder of good images"
    )
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    _architecture_flags(p)
    _training_flags(p)
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


def _architecture_flags(p: argparse.ArgumentParser) -> None:
    """Train's flags that build the ``ArchitectureConfig`` (and where its weights come from)."""
    p.add_argument("--backbone", **from_field(ArchitectureConfig, "backbone"))
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
    p.add_argument("--anomaly-map-mode", **from_field(ArchitectureConfig, "anomaly_map_mode"))


def _training_flags(p: argparse.ArgumentParser) -> None:
    """Train's flags that set ``TrainConfig`` fields; one not given keeps the field's default."""

    def field(name: str) -> dict[str, Any]:
        return from_field(TrainConfig, name, with_default=False)

    p.add_argument("--epochs", type=int, **field("epochs"))
    p.add_argument("--batch-size", type=int, **field("batch_size"))
    p.add_argument("--lr", dest="learning_rate", type=float, **field("learning_rate"))
    p.add_argument("--patience", type=int, **field("patience"))
    p.add_argument("--val-fraction", type=float, **field("val_fraction"))
    p.add_argument("--calibration", **field("calibration"))
    p.add_argument(
        "--false-alarm-rate",
        dest="target_false_alarm_rate",
        type=float,
        **field("target_false_alarm_rate"),
    )
    p.add_argument("--device", **field("device"))
    p.add_argument("--seed", type=int)
    p.add_argument("--encoder-init", **field("encoder_init"))
    p.add_argument(
        "--adapt-batchnorm",
        action="store_const",
        const=True,
        help="with --weights none: batch-norm statistics of the random encoder from the data",
    )
    p.add_argument(
        "--augment-flips", action="store_const", const=True, help="random flips of good images"
    )


def add_eval(sub: Subparsers) -> None:
    """``inspector eval --checkpoint FILE --data DIR``."""
    p = sub.add_parser("eval", help="AUROC, AU-PRO and F1 on the test split")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--json", type=Path, help="also write the metrics here")
    p.add_argument("--plots", type=Path, help="write ROC, histogram and overlay PNGs here")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", **from_field(ModelConfig, "device"))
    p.add_argument("--backend", **from_field(ModelConfig, "backend"), help=BACKEND_HELP)
    p.set_defaults(handler=_cmd_eval)


def add_predict(sub: Subparsers) -> None:
    """``inspector predict --checkpoint FILE --out DIR IMAGE_OR_DIR...``."""
    p = sub.add_parser("predict", help="score image files or folders")
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--save-maps", action="store_true", help="write raw maps as maps/<stem>.npy")
    p.add_argument("--no-overlays", action="store_true")
    p.add_argument("--image-threshold", type=float, help="override, normalised 0..1")
    p.add_argument("--pixel-threshold", type=float, help="override, normalised 0..1")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", **from_field(ModelConfig, "device"))
    p.add_argument("--precision", **from_field(ModelConfig, "precision"))
    p.add_argument("--backend", **from_field(ModelConfig, "backend"), help=BACKEND_HELP)
    p.add_argument("--auto-cache-dir", type=Path, metavar="DIR", help=AUTO_CACHE_HELP)
    p.add_argument("inputs", type=Path, nargs="+", metavar="IMAGE_OR_DIR")
    p.set_defaults(handler=_cmd_predict)


def add_calibrate(sub: Subparsers) -> None:
    """``inspector calibrate``: its flags are the fields of ``RecalibrateConfig``."""
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
    p.add_argument("--batch-size", type=positive, default=8)
    p.add_argument("--device", **from_field(ModelConfig, "device"))
    p.add_argument("--precision", **from_field(ModelConfig, "precision"))
    p.add_argument("--backend", **from_field(ModelConfig, "backend"), help=BACKEND_HELP)
    p.add_argument("--auto-cache-dir", type=Path, metavar="DIR", help=AUTO_CACHE_HELP)
    p.add_argument("--json", type=Path, help="also write the report here")
    p.set_defaults(handler=_cmd_calibrate)


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


def _width(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def _cmd_train(args: argparse.Namespace) -> int:
    from inspector.ml.trainer import train

    model_cfg = ArchitectureConfig(**flags(args, ArchitectureConfig.model_fields))
    if args.tile is not None:
        args.tiling = {"tile": args.tile} | ({"overlap": args.overlap} if args.overlap else {})
    train_cfg = TrainConfig(**flags(args, TrainConfig.model_fields))
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


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from inspector.ml.calibrate import RecalibrateConfig, recalibrate

    config = RecalibrateConfig(**flags(args, RecalibrateConfig.model_fields))
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
