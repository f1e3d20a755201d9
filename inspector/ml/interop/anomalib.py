"""Import Reverse Distillation models trained with anomalib 2.x.

anomalib checkpoints are pickles; this module reads them with ``torch.load(weights_only=True)``
only, so importing a file never runs code from it, and it never imports anomalib itself. The
weights are renamed to inspector's layout (``encoder.feature_extractor.X`` -> ``encoder.X``),
the OCBE's dead ``conv4``/``bn4`` are dropped, the backbone and OCBE width are inferred from
tensor shapes, and anomalib's post-processor thresholds become an imported calibration.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError

from inspector.checkpoint import CheckpointMeta, LoadedCheckpoint, save_checkpoint
from inspector.errors import CheckpointError, ConfigError
from inspector.ml.interop.lightning_file import (
    DEFAULT_SIZE,
    file_sha256,
    load_lightning_file,
    native_size,
    read_pre_processing,
)
from inspector.model import BACKBONES, ReverseDistillation
from inspector.model.calibration import Calibration
from inspector.model.config import AnomalyMapMode, ArchitectureConfig, Backbone
from inspector.model.encoder import UNUSED_PREFIXES
from inspector.model.preprocess import Preprocessing

_LIGHTNING_PREFIX = "model."
_POST_PREFIX = "post_processor."
_ANOMALIB_ENCODER = "encoder.feature_extractor."
# Defined by anomalib (and RD4AD) but never called in forward: 8.4 M dead parameters.
_DEAD_PREFIXES = ("bottleneck.conv4.", "bottleneck.bn4.")
_MODEL_PREFIXES = ("encoder.", "bottleneck.", "decoder.")
_LAYERS = ("layer1", "layer2", "layer3")
_THRESHOLDS = ("_image_threshold", "_pixel_threshold")
_RANGES = ("image_min", "image_max", "pixel_min", "pixel_max")


def convert_anomalib_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    *,
    image_size: int | tuple[int, int] = DEFAULT_SIZE,
    anomaly_map_mode: AnomalyMapMode = AnomalyMapMode.ADD,
) -> tuple[ArchitectureConfig, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Convert anomalib Reverse Distillation weights to inspector's layout.

    Args:
        state_dict: The ``state_dict`` of an anomalib Lightning checkpoint (keys
            ``model.encoder.feature_extractor.*``, ``model.bottleneck.*``, ``model.decoder.*``,
            ``post_processor.*``...) or of a bare ``ReverseDistillationModel`` (same keys
            without ``model.``). Keys of other components are ignored.
        image_size: Model input size; weights do not record it.
        anomaly_map_mode: How layer maps are combined; weights do not record it either.

    Returns:
        The inferred model config, the model tensors renamed for
        :class:`~inspector.model.ReverseDistillation` (``load_state_dict(strict=True)`` fits),
        and the post-processor buffers (``_image_threshold``, ``image_min``... as 0-d tensors;
        empty for a bare model).

    Raises:
        CheckpointError: The tensors are not a Reverse Distillation model of a supported
            backbone (the message lists missing, unexpected or mis-shaped keys).
        ConfigError: ``image_size`` is not a multiple of 32.
    """
    tensors, post = _split(state_dict)
    backbone = _infer_backbone(tensors)
    fields = {"backbone": backbone, "ocbe_width": _infer_ocbe_width(tensors, backbone)}
    try:
        config = ArchitectureConfig.model_validate(
            {**fields, "image_size": image_size, "anomaly_map_mode": anomaly_map_mode}
        )
    except ValidationError as exc:
        raise ConfigError(f"--image-size: {exc.errors()[0]['msg']}") from exc
    _check_layout(tensors, config)
    return config, tensors, post


def anomalib_calibration(
    post: Mapping[str, torch.Tensor], post_config: Mapping[str, Any] | None = None
) -> Calibration | None:
    """Turn anomalib's post-processor state into an ``imported`` calibration.

    anomalib labels a score anomalous when ``(x - thr) / (max - min) + 0.5 > 1 - sensitivity``;
    the imported threshold is the raw value where that flips, ``thr + (0.5 - s) * (max - min)``,
    so labels agree for any sensitivity (the default 0.5 leaves the threshold unchanged).

    Args:
        post: Post-processor buffers as returned by :func:`convert_anomalib_state_dict`.
        post_config: The checkpoint's ``anomalib_post_processor_config`` (sensitivities,
            threshold matching, normalisation switch), if any.

    Returns:
        The calibration, or ``None`` when the checkpoint holds no usable thresholds (never
        validated, normalisation disabled, or values missing).
    """
    cfg = post_config if isinstance(post_config, Mapping) else {}
    if not cfg.get("enable_normalization", True):
        # Without normalisation anomalib compares raw scores with 1 - sensitivity, which is
        # no calibration at all.
        return None
    raw: dict[str, float] = {}
    for key in _THRESHOLDS + _RANGES:
        value = post.get(key)
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            return None
        raw[key] = float(value)
    image_thr, pixel_thr = raw["_image_threshold"], raw["_pixel_threshold"]
    if cfg.get("enable_threshold_matching", True):
        # anomalib falls back to the other level's threshold when one was never fitted.
        image_thr, pixel_thr = (
            pixel_thr if math.isnan(image_thr) else image_thr,
            image_thr if math.isnan(pixel_thr) else pixel_thr,
        )
    if not all(math.isfinite(v) for v in (image_thr, pixel_thr, *(raw[k] for k in _RANGES))):
        return None
    fitted = {"image": image_thr, "pixel": pixel_thr}
    for level, threshold in fitted.items():
        s = cfg.get(f"{level}_sensitivity")
        s = float(s) if isinstance(s, int | float) else 0.5
        fitted[level] = threshold + (0.5 - s) * (raw[f"{level}_max"] - raw[f"{level}_min"])
    return Calibration.model_validate(
        {
            "mode": "imported",
            "image_threshold": fitted["image"],
            "pixel_threshold": fitted["pixel"],
            **{k: raw[k] for k in _RANGES},
        }
    )


def import_anomalib(
    src: Path,
    out: Path,
    *,
    image_size: int | tuple[int, int] | None = None,
    anomaly_map_mode: AnomalyMapMode | None = None,
    name: str | None = None,
    strict_preprocessing: bool = True,
) -> LoadedCheckpoint:
    """Convert an anomalib checkpoint (Lightning ``.ckpt`` or bare state dict) to ours.

    Args:
        src: anomalib file, read with ``torch.load(weights_only=True)``.
        out: inspector checkpoint to write (atomically).
        image_size: Input size; default: the checkpoint pre-processor's resize, else its
            ``input_size`` hyper-parameter, else 256.
        anomaly_map_mode: Default: the checkpoint's ``anomaly_map_mode``, else ADD.
        name: Model name stored in the checkpoint; default: ``src``'s stem.
        strict_preprocessing: Refuse checkpoints whose pre-processing inspector cannot
            reproduce exactly (crops, other interpolation, non-ImageNet normalisation); when
            ``False`` they are imported and the differences recorded in ``meta.training``.

    Returns:
        The imported model (eval mode, CPU) with its metadata and the new file's SHA-256.

    Raises:
        CheckpointError: ``src`` is missing, unreadable, needs code to unpickle, or is not a
            supported Reverse Distillation model; or ``out`` cannot be written.
        ConfigError: The image size is not a multiple of 32.
    """
    obj = load_lightning_file(src)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{src} holds a {type(obj).__name__}, not a state dict or Lightning checkpoint"
        )
    lightning = isinstance(obj.get("state_dict"), Mapping)
    ckpt: Mapping[str, Any] = obj if lightning else {"state_dict": obj}
    hparams = ckpt.get("hyper_parameters")
    hparams = hparams if isinstance(hparams, Mapping) else {}
    _check_hparams(src, hparams)
    pre = read_pre_processing(ckpt.get("anomalib_pre_processor_config"))
    if pre.problems and strict_preprocessing:
        raise CheckpointError(
            f"{src}: inspector cannot reproduce this checkpoint's pre-processing "
            f"({'; '.join(pre.problems)}), so its scores would drift; retrain with a plain "
            "Resize + ImageNet Normalize, or import with strict_preprocessing=False"
        )
    native, size_source = native_size(pre, ckpt)
    size, size_source = (native, size_source) if image_size is None else (image_size, "argument")
    mode = anomaly_map_mode or AnomalyMapMode(str(hparams.get("anomaly_map_mode", "add")))
    config, tensors, post = convert_anomalib_state_dict(
        ckpt["state_dict"], image_size=size, anomaly_map_mode=mode
    )
    if "backbone" in hparams and str(hparams["backbone"]) != config.backbone:
        raise CheckpointError(
            f"{src}: hyper_parameters say backbone {hparams['backbone']!r} but the tensors are "
            f"a {config.backbone}; the file is inconsistent"
        )
    model = ReverseDistillation(config)
    model.load_state_dict(tensors, strict=True)
    model.eval()

    calibration = anomalib_calibration(post, ckpt.get("anomalib_post_processor_config"))
    # Thresholds were fitted on maps at anomalib's size and mode; others shift every score.
    fitted_mode = str(hparams.get("anomaly_map_mode", mode))
    if native != config.image_size or fitted_mode != mode.value:
        calibration = None
    training: dict[str, Any] = {
        "imported_from": "anomalib",
        "source_file": src.name,
        "source_sha256": file_sha256(src),
        "source_format": "lightning" if lightning else "state_dict",
        "image_size_from": size_source,
        "calibration_imported": calibration is not None,
    }
    for key in ("epoch", "global_step", "pytorch-lightning_version"):
        if isinstance(ckpt.get(key), int | str):
            training[key.replace("-", "_")] = ckpt[key]
    if pre.problems:
        training["preprocessing_mismatches"] = pre.problems
    meta = CheckpointMeta(
        name=name or src.stem,
        model=config,
        calibration=calibration,
        preprocessing=Preprocessing.model_validate({"mean": pre.mean, "std": pre.std}),
        training=training,
    )
    sha = save_checkpoint(out, model, meta)
    return LoadedCheckpoint(model, meta, sha, out)


def _split(
    state_dict: Mapping[str, torch.Tensor],
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    lightning = any(k.startswith(_LIGHTNING_PREFIX) for k in state_dict)
    tensors: dict[str, torch.Tensor] = {}
    post: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_POST_PREFIX):
            post[key.removeprefix(_POST_PREFIX)] = value
            continue
        if lightning:
            if not key.startswith(_LIGHTNING_PREFIX):
                continue  # pre-processor, evaluator... state
            key = key.removeprefix(_LIGHTNING_PREFIX)
        if not key.startswith(_MODEL_PREFIXES) or key.startswith(_DEAD_PREFIXES):
            continue
        if key.startswith(_ANOMALIB_ENCODER):
            key = "encoder." + key.removeprefix(_ANOMALIB_ENCODER)
            if key.removeprefix("encoder.").startswith(UNUSED_PREFIXES):
                continue  # a timm extractor that kept layer4: never used by RD
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"state dict entry {key!r} is a {type(value).__name__}")
        tensors[key] = value
    return tensors, post


def _block_count(tensors: Mapping[str, torch.Tensor], stage: str) -> int:
    pattern = re.compile(rf"{re.escape(stage)}\.(\d+)\.")
    return len({m.group(1) for k in tensors if (m := pattern.match(k))})


def _infer_backbone(tensors: Mapping[str, torch.Tensor]) -> Backbone:
    if "encoder.conv1.weight" not in tensors:
        raise CheckpointError(
            "no encoder weights (encoder.feature_extractor.conv1.weight): not an anomalib "
            "Reverse Distillation checkpoint"
        )
    blocks = tuple(_block_count(tensors, f"encoder.layer{i}") for i in (1, 2, 3))
    bottleneck = "encoder.layer1.0.conv3.weight" in tensors
    if not bottleneck:
        basic: dict[tuple[int, ...], Backbone] = {(2, 2, 2): "resnet18", (3, 4, 6): "resnet34"}
        if blocks in basic:
            return basic[blocks]
    elif blocks == (3, 4, 6) and "encoder.layer1.0.conv1.weight" in tensors:
        # ResNet-50 and its wide twin differ only in inner width (64 vs 128 channels).
        wide: dict[int, Backbone] = {64: "resnet50", 128: "wide_resnet50_2"}
        width = tensors["encoder.layer1.0.conv1.weight"].shape[0]
        if width in wide:
            return wide[width]
    kind = "Bottleneck" if bottleneck else "BasicBlock"
    raise CheckpointError(
        f"unsupported encoder: {kind} ResNet with {blocks} blocks in layers 1-3; inspector "
        f"supports {', '.join(BACKBONES)}"
    )


def _infer_ocbe_width(tensors: Mapping[str, torch.Tensor], backbone: Backbone) -> str | int:
    spec = BACKBONES[backbone]
    first = tensors.get("bottleneck.bn_layer.0.conv1.weight")
    if first is None or not spec.bottleneck_block:
        return "anomalib"  # BasicBlock OCBEs have a fixed width; missing keys reported later
    # Bottleneck blocks of 512 planes have 512 * width_per_group / 64 inner channels.
    channels = first.shape[0]
    if channels % 8:
        raise CheckpointError(f"OCBE inner width {channels} is not a multiple of 8")
    per_group = channels // 8
    if per_group == 64:
        return "anomalib"
    return "official" if per_group == spec.decoder_width_per_group else per_group


def _check_layout(tensors: Mapping[str, torch.Tensor], config: ArchitectureConfig) -> None:
    # A meta-device model costs no memory or init time and gives every expected key and shape.
    with torch.device("meta"):
        expected = {k: v.shape for k, v in ReverseDistillation(config).state_dict().items()}
    missing = sorted(expected.keys() - tensors.keys())
    unexpected = sorted(tensors.keys() - expected.keys())
    shapes = [
        f"{k} {tuple(tensors[k].shape)} != {tuple(expected[k])}"
        for k in sorted(expected.keys() & tensors.keys())
        if tensors[k].shape != expected[k]
    ]
    found = {"missing": missing, "unexpected": unexpected, "mis-shaped": shapes}
    parts = [f"{label} {len(v)} (e.g. {', '.join(v[:3])})" for label, v in found.items() if v]
    if parts:
        raise CheckpointError(
            f"weights do not fit a {config.backbone} Reverse Distillation model "
            f"(OCBE width {config.ocbe_width}): {'; '.join(parts)}"
        )


def _check_hparams(src: Path, hparams: Mapping[str, Any]) -> None:
    layers = hparams.get("layers")
    if layers is not None and tuple(str(x) for x in layers) != _LAYERS:
        raise CheckpointError(
            f"{src} was trained on encoder layers {list(layers)}; only layer1-3 are supported"
        )
    mode = hparams.get("anomaly_map_mode")
    if mode is not None and str(mode) not in {m.value for m in AnomalyMapMode}:
        raise CheckpointError(f"{src}: unknown anomaly_map_mode {mode!r}")
