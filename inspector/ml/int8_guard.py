"""The int8 accuracy guard: an int8 graph against its fp32 source on held-out images.

Held out means never seen by calibration: the good images given to ``inspector export --int8``
are shuffled once (seeded), a quarter is held out and the rest fits the activation ranges; an
``--eval`` dataset's test split (defects with masks) is held out as a whole. The guard refuses
an int8 model whose image AUROC, pixel AUROC or AU-PRO falls more than the tolerance below
fp32's (int8 exports are known to lose pixel accuracy; the maps are the product here), and
states the largest map difference either way.

Thresholds are re-fitted to the int8 model: the checkpoint's were fitted on fp32 scores, and a
quantized network shifts the score scale. A least-squares line from fp32 to int8 scores (image
scores for the image threshold and range, map values for the pixel ones) on the held-out images
carries each fitted value over, so the calibration keeps its meaning (its false-alarm rate or
F1 choice) in the int8 model's units.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from inspector.checkpoint import CheckpointMeta, QuantizationReport
from inspector.errors import ConfigError, DatasetError, InspectorError
from inspector.ml.data import labelled_items, load_items, training_items
from inspector.ml.metrics import image_auroc, pixel_aupro, pixel_auroc
from inspector.model.calibration import Calibration
from inspector.model.engine import Engine
from inspector.model.preprocess import normalise

#: Fewest good images: enough for a calibration set and a held-out quarter.
MIN_GOOD = 8


class QuantizationRefusedError(InspectorError):
    """The int8 model lost more accuracy than the guard accepts (nothing was written)."""


@dataclass(frozen=True)
class Int8Settings:
    """How to calibrate and check an int8 model (``export --int8``, ``quantize``).

    Attributes:
        good: Good images (a folder, or an MVTec root's ``train/good``) to calibrate on; a
            seeded quarter is held out for the guard.
        eval_root: An MVTec-layout folder whose ``test`` split (defects with masks) the guard
            also scores.
        calibration_images: At most this many good images fit the activation ranges.
        tolerance: The largest accepted drop of image AUROC, pixel AUROC or AU-PRO.
        seed: The shuffle that picks calibration and held-out images.
    """

    good: Path | None
    eval_root: Path | None = None
    calibration_images: int = 64
    tolerance: float = 0.01
    seed: int = 0


@dataclass(frozen=True)
class GuardData:
    """Model inputs for quantization and the guard.

    Attributes:
        calibration: Normalised good images ``(n, 3, H, W)`` that fit activation ranges.
        held_out: Normalised images ``(m, 3, H, W)`` the guard compares on.
        labels: ``(m,)`` 0 good / 1 anomalous.
        masks: ``(m, H, W)`` bool ground truth (all False for good images).
        calibration_rgb: The calibration images as uint8 RGB ``(n, 3, H, W)``.
        held_out_good_rgb: The held-out good images (not ``--eval``'s) as uint8 RGB.
    """

    calibration: torch.Tensor
    held_out: torch.Tensor
    labels: np.ndarray
    masks: np.ndarray
    calibration_rgb: torch.Tensor
    held_out_good_rgb: torch.Tensor


def guard_data(settings: Int8Settings, meta: CheckpointMeta) -> GuardData:
    """Load, split and normalise the images for quantization and its guard.

    Raises:
        ConfigError: No ``--good`` folder, or fewer than :data:`MIN_GOOD` readable images in it.
    """
    good, eval_root = settings.good, settings.eval_root
    if good is None:
        raise ConfigError("--int8 needs --good DIR: good images to calibrate and check int8 on")
    size = meta.model.image_size
    try:
        items = training_items(good)
    except DatasetError as exc:
        raise ConfigError(f"--good {good}: {exc}") from exc
    loaded = load_items(items, size)
    if len(loaded.items) < MIN_GOOD:
        raise ConfigError(
            f"--good {good}: {len(loaded.items)} readable images, at least {MIN_GOOD} are needed "
            "(a quarter is held out to check the int8 model)"
        )
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(loaded.items), generator=generator)
    n_held = max(2, len(order) // 4)
    held, cal = order[:n_held], order[n_held:][: settings.calibration_images]
    # uint8 first, as a camera delivers them and as a checkpoint stores them (inspector
    # quantize): the int8 model is calibrated and checked on exactly what can be stored.
    rgb = (loaded.images * 255).round().to(torch.uint8)
    images = normalise(rgb.float() / 255, meta.preprocessing)
    held_out = images[held]
    labels = np.zeros(len(held), int)
    masks = np.zeros((len(held), *size), bool)
    if eval_root is not None:
        test = labelled_items(eval_root, "test")
        if not test:
            raise ConfigError(f"--eval {eval_root}: no images under test/ (MVTec layout expected)")
        extra = load_items(test, size, with_masks=True)
        held_out = torch.cat([held_out, normalise(extra.images, meta.preprocessing)])
        labels = np.concatenate([labels, [it.label for it in extra.items]])
        assert extra.masks is not None
        masks = np.concatenate([masks, extra.masks.numpy()])
    return GuardData(images[cal], held_out, labels, masks, rgb[cal], rgb[held])


def score(
    engine: Engine, images: torch.Tensor, batch_size: int = 8
) -> tuple[np.ndarray, np.ndarray]:
    """Raw scores ``(N,)`` and maps ``(N, H, W)`` of normalised images, float32 numpy."""
    scores, maps = [], []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            out = engine(images[start : start + batch_size].to(engine.device))
            scores.append(out.pred_score.float().cpu().numpy())
            maps.append(out.anomaly_map[:, 0].float().cpu().numpy())
    return np.concatenate(scores), np.concatenate(maps)


def run_guard(
    fp32: Engine,
    int8: Engine,
    data: GuardData,
    meta: CheckpointMeta,
    *,
    method: str,
    tolerance: float,
) -> tuple[QuantizationReport, Calibration | None]:
    """Compare ``int8`` with ``fp32`` on the held-out images; re-fit the calibration.

    Returns:
        The report and the re-fitted calibration (``None`` if the checkpoint had none).

    Raises:
        QuantizationRefusedError: A metric fell by more than ``tolerance``.
    """
    s32, m32 = score(fp32, data.held_out)
    s8, m8 = score(int8, data.held_out)
    metrics: dict[str, dict[str, float]] = {}
    if 0 < data.labels.sum() < len(data.labels):
        metrics["image_auroc"] = {
            "fp32": image_auroc(data.labels, s32),
            "int8": image_auroc(data.labels, s8),
        }
    if data.masks.any():
        metrics["pixel_auroc"] = {
            "fp32": pixel_auroc(data.masks, m32),
            "int8": pixel_auroc(data.masks, m8),
        }
        metrics["aupro"] = {
            "fp32": pixel_aupro(data.masks, m32),
            "int8": pixel_aupro(data.masks, m8),
        }
    report = QuantizationReport(
        method=method,
        calibration_images=len(data.calibration),
        held_out_images=len(data.held_out),
        max_map_difference=float(np.abs(m32 - m8).max()),
        score_correlation=_correlation(s32, s8),
        metrics=metrics,
        tolerance=tolerance,
    )
    failed = [
        f"{name} {v['int8']:.4f} against {v['fp32']:.4f} in fp32"
        for name, v in metrics.items()
        if v["int8"] < v["fp32"] - tolerance
    ]
    if failed:
        raise QuantizationRefusedError(
            f"the int8 model lost accuracy on {len(data.held_out)} held-out images: "
            f"{'; '.join(failed)} (tolerance {tolerance}); nothing was written. Export fp32, "
            "or give --good more (and more varied) good images"
        )
    return report, _refit(meta.calibration, (s32, s8), (m32, m8))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _line(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y = a x + b`` (identity when ``x`` does not vary)."""
    if x.std() == 0:
        return 1.0, float((y - x).mean())
    a, b = np.polyfit(x.astype(np.float64), y.astype(np.float64), 1)
    return float(a), float(b)


def _refit(
    calibration: Calibration | None,
    scores: tuple[np.ndarray, np.ndarray],
    maps: tuple[np.ndarray, np.ndarray],
) -> Calibration | None:
    if calibration is None:
        return None
    ia, ib = _line(*scores)
    # A strided sample of map values: a line through millions of pixels costs seconds.
    m32, m8 = (m.reshape(-1) for m in maps)
    step = max(1, m32.size // 200_000)
    pa, pb = _line(m32[::step], m8[::step])
    return calibration.model_copy(
        update={
            "image_threshold": ia * calibration.image_threshold + ib,
            "image_min": ia * calibration.image_min + ib,
            "image_max": ia * calibration.image_max + ib,
            "pixel_threshold": pa * calibration.pixel_threshold + pb,
            "pixel_min": pa * calibration.pixel_min + pb,
            "pixel_max": pa * calibration.pixel_max + pb,
        }
    )
