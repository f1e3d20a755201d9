"""Commands that turn a model into another form: ``import-anomalib``, ``export``, ``quantize``.

An anomalib checkpoint in, an ONNX or OpenVINO graph out, or an int8 variant added; the
int8 paths share their calibration and accuracy-guard flags (:func:`_int8_flags`). Bodies
import their workflow (:mod:`inspector.ml`) only when the command runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from inspector.cli.options import Subparsers, positive
from inspector.errors import ConfigError


def add_import(sub: Subparsers) -> None:
    """``inspector import-anomalib SRC --out FILE``."""
    p = sub.add_parser("import-anomalib", help="convert an anomalib ReverseDistillation checkpoint")
    p.add_argument("src", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--image-size", type=int, help="input size (default: from the checkpoint, else 256)"
    )
    p.add_argument("--name")
    p.set_defaults(handler=_cmd_import)


def add_export(sub: Subparsers) -> None:
    """``inspector export --checkpoint FILE --out DIR --format onnx|openvino [--int8 ...]``."""
    p = sub.add_parser(
        "export", help="write a checkpoint as an ONNX or OpenVINO graph (fp32 or int8)"
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="export folder to write")
    p.add_argument("--format", choices=["onnx", "openvino"], required=True)
    p.add_argument("--int8", action="store_true", help="quantize (NNCF), guarded against fp32")
    _int8_flags(p, required=False)
    p.set_defaults(handler=_cmd_export)


def add_quantize(sub: Subparsers) -> None:
    """``inspector quantize --checkpoint FILE --good DIR --out FILE``."""
    p = sub.add_parser(
        "quantize", help="add a guarded int8 variant to a checkpoint (served by precision auto)"
    )
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="checkpoint to write (atomically)")
    _int8_flags(p, required=True)
    p.set_defaults(handler=_cmd_quantize)


def _int8_flags(p: argparse.ArgumentParser, *, required: bool) -> None:
    """The calibration and guard flags of int8 quantization (export --int8, quantize)."""
    p.add_argument(
        "--good", type=Path, metavar="DIR", required=required,
        help="good images to calibrate on (a seeded quarter is held out for the guard)",
    )  # fmt: skip
    p.add_argument(
        "--eval", type=Path, metavar="DIR", help="MVTec-layout test split the guard also scores"
    )
    p.add_argument("--calibration-images", type=positive, default=64)
    p.add_argument(
        "--tolerance", type=float, default=0.01, help="largest accepted AUROC/AU-PRO drop"
    )
    p.add_argument("--seed", type=int, default=0)


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
