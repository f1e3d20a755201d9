"""Reading anomalib's Lightning checkpoint files without running code from them.

``torch.load(weights_only=True)`` only; anomalib's own enum classes are mapped to plain
strings. The pre-processing spec anomalib stores is translated into inspector's terms so an
import can refuse transforms that inspector would not reproduce.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inspector.errors import CheckpointError
from inspector.model.preprocess import IMAGENET_MEAN, IMAGENET_STD

DEFAULT_SIZE = 256


class _ForeignEnumValue(str):
    """Plain-``str`` stand-in that anomalib enums in ``hyper_parameters`` unpickle into."""

    __slots__ = ()


def load_lightning_file(src: Path) -> object:
    """``torch.load`` a checkpoint with ``weights_only=True``; anomalib enums become ``str``.

    Raises:
        CheckpointError: Missing, unreadable, or holding objects that need code.
    """
    # Corrupt files make torch.load raise almost anything (RuntimeError from the zip reader,
    # UnpicklingError, EOFError, ValueError...), so every failure is reported as unreadable.
    if not src.is_file():
        raise CheckpointError(f"anomalib checkpoint {src} does not exist or is not a file")
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first: Exception = exc
    except Exception as exc:
        raise CheckpointError(f"{src} is not a readable torch checkpoint: {exc}") from exc
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(src)
    except Exception:
        unsafe = []
    foreign = [n for n in unsafe if n.startswith("anomalib.")]
    others = [n for n in unsafe if not n.startswith("anomalib.")]
    if others or not foreign:
        raise CheckpointError(
            f"{src} needs code to unpickle ({', '.join(others) or first}); inspector only loads "
            "tensors and plain data (weights_only=True). Re-save it without objects, e.g. "
            "torch.save(lightning_module.state_dict(), 'rd.pt'), and import that"
        ) from first
    # Only anomalib's own names are mapped, and to a plain str: its 2.7 checkpoints store the
    # anomaly-map mode enum in hyper_parameters, nothing else that needs a class.
    with torch.serialization.safe_globals([(_ForeignEnumValue, n) for n in foreign]):
        try:
            return torch.load(src, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(
                f"{src} holds objects other than anomalib's enums ({', '.join(foreign)}); "
                "re-save its state_dict with torch.save and import that"
            ) from exc


@dataclass
class PreProcessingSpec:
    """What an anomalib pre-processor spec amounts to, in inspector's terms."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    problems: list[str] = field(default_factory=list)


def read_pre_processing(config: object) -> PreProcessingSpec:
    """Translate anomalib's stored pre-processor spec; ``problems`` lists what differs."""
    # anomalib 2.7 stores the transform as {"class_path", "init_args"} plain data, typically
    # Compose([Resize(size, bilinear, antialias=True), Normalize(ImageNet)]).
    result = PreProcessingSpec()
    spec = config.get("transform") if isinstance(config, Mapping) else None
    if spec is None:
        return result  # bare weights, or a pre-processor anomalib could not persist
    stack, normalised = [spec], False
    while stack:
        item = stack.pop(0)
        item = item if isinstance(item, Mapping) else {"class_path": repr(item)}
        path, args = str(item.get("class_path")), item.get("init_args")
        args, kind = args if isinstance(args, Mapping) else {}, path.rsplit(".", 1)[-1]
        if kind == "Compose":
            stack = [*args.get("transforms", []), *stack]
        elif kind == "Resize" and result.size is None:
            size = args.get("size")
            if isinstance(size, list | tuple) and len(size) == 2:
                result.size = (int(size[0]), int(size[1]))
            else:  # an int resizes the shorter side, keeping the aspect ratio
                result.problems.append(f"Resize(size={size!r})")
            interpolation = str(args.get("interpolation", "bilinear")).lower()
            if "bilinear" not in interpolation or args.get("antialias") is False:
                result.problems.append(f"{interpolation} resize, antialias={args.get('antialias')}")
        elif kind == "Normalize" and not normalised:
            normalised = True
            mean = tuple(float(v) for v in args.get("mean", ()))
            std = tuple(float(v) for v in args.get("std", ()))
            if len(mean) == len(std) == 3:
                result.mean, result.std = mean, std
            ref = (*IMAGENET_MEAN, *IMAGENET_STD)
            if len(mean + std) != 6 or any(
                abs(a - b) > 1e-6 for a, b in zip(mean + std, ref, strict=False)
            ):
                result.problems.append(f"Normalize(mean={list(mean)}, std={list(std)})")
        else:
            result.problems.append(f"transform {path}")
    if not normalised:
        result.mean, result.std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
        result.problems.append("no Normalize")
    return result


def native_size(pre: PreProcessingSpec, ckpt: Mapping[str, Any]) -> tuple[tuple[int, int], str]:
    """The model's input size and where it was found (pre_processor, hyper-parameters, default)."""
    if pre.size is not None:
        return pre.size, "pre_processor"
    # anomalib 1.x stored input_size among the model's hyper-parameters; datamodules may
    # record image_size.
    for label in ("hyper_parameters", "datamodule_hyper_parameters"):
        params = ckpt.get(label)
        for key in ("input_size", "image_size"):
            value = params.get(key) if isinstance(params, Mapping) else None
            if isinstance(value, int):
                return (value, value), label
            if isinstance(value, list | tuple) and len(value) == 2:
                return (int(value[0]), int(value[1])), label
    return (DEFAULT_SIZE, DEFAULT_SIZE), "default"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
