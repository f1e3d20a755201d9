"""``inspector eval``: a checkpoint's figures on the test split, with optional plots.

The workflow: load, score, report; the figures themselves are :mod:`.metrics`'.

Thresholds come from the checkpoint (fitted on validation data); the test split is only ever
measured, never fitted on.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspector.backends import LoadedModel
from inspector.checkpoint import LoadedCheckpoint
from inspector.errors import DatasetError
from inspector.ml.data import labelled_items, load_items
from inspector.ml.metrics import (
    EvalReport,
    best_f1,
    f1_at,
    image_auroc,
    pixel_aupro,
    pixel_auroc,
)
from inspector.ml.trainer import score_images

log = logging.getLogger(__name__)


def evaluate(
    checkpoint: LoadedCheckpoint | LoadedModel,
    data_root: Path,
    *,
    json_path: Path | None = None,
    plots_dir: Path | None = None,
    batch_size: int = 8,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Score ``data_root/test`` and compute image/pixel metrics.

    Args:
        checkpoint: A loaded checkpoint, or a model loaded for a backend (an export runs on
            its engine).
        data_root: MVTec-style folder with ``test/<class>`` and ``ground_truth``.
        json_path: Also write the metrics as JSON here.
        plots_dir: Write ROC curve, score histogram and worst-case overlays here.
        batch_size: Images per forward pass.
        device: Where to run (default CPU).

    Returns:
        ``image_auroc``, ``pixel_auroc``, ``pixel_aupro``, ``image_f1`` (fractions 0..1, F1 at
        the checkpoint's threshold), counts, ``image_f1_best`` (oracle F1, for reference only),
        and the threshold used.

    Raises:
        DatasetError: No test images.
    """
    items = labelled_items(data_root, "test")
    if not items:
        raise DatasetError(f"no test images under {data_root / 'test'} (MVTec layout expected)")
    size = checkpoint.meta.model.image_size
    loaded = load_items(items, size, with_masks=True)
    if not loaded.items:
        raise DatasetError(f"none of the {len(items)} test images under {data_root} could be read")
    model = checkpoint.engine if isinstance(checkpoint, LoadedModel) else checkpoint.model
    scores, maps = score_images(
        model,
        loaded.images,
        batch_size=batch_size,
        device=device or torch.device("cpu"),
        preprocessing=checkpoint.meta.preprocessing,
    )
    labels = np.array([it.label for it in loaded.items])
    masks = loaded.masks.numpy() if loaded.masks is not None else np.zeros(maps.shape, bool)
    cal = checkpoint.meta.calibration
    threshold = cal.image_threshold if cal is not None else float("nan")
    report = EvalReport(
        image_auroc=image_auroc(labels, scores),
        pixel_auroc=pixel_auroc(masks, maps) if masks.any() else float("nan"),
        pixel_aupro=pixel_aupro(masks, maps) if masks.any() else float("nan"),
        image_f1=f1_at(labels, scores, threshold) if cal is not None else float("nan"),
        n_images=len(labels),
        n_anomalous=int(labels.sum()),
    )
    result: dict[str, Any] = dict(report.to_json_dict())
    result["image_f1_best"] = best_f1(labels, scores)[0] if labels.any() else float("nan")
    result["image_threshold_raw"] = threshold
    result["n_skipped"] = len(loaded.skipped)
    result["checkpoint_sha256"] = checkpoint.sha256
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(json_safe(result), indent=2, sort_keys=True) + "\n")
    if plots_dir is not None:
        _plots(plots_dir, loaded.images, loaded.items, labels, scores, maps, masks, checkpoint)
    return result


def json_safe(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with NaN figures as ``None`` (JSON null)."""
    # Undefined figures (no defective images...) are NaN, which JSON cannot represent: null.
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in result.items()}


def _plots(
    out: Path,
    images: torch.Tensor,
    items: list[Any],
    labels: np.ndarray,
    scores: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray,
    checkpoint: LoadedCheckpoint | LoadedModel,
) -> None:
    from inspector.ml.plots import plot_roc, plot_score_histogram, save_worst_overlays

    out.mkdir(parents=True, exist_ok=True)
    cal = checkpoint.meta.calibration
    if labels.any() and not labels.all():
        plot_roc(out / "roc.png", labels, scores, f"{checkpoint.meta.name}: image ROC")
    plot_score_histogram(
        out / "scores.png",
        scores[labels == 0],
        scores[labels == 1],
        cal.image_threshold if cal is not None else None,
    )
    if cal is not None:
        heat = cal.normalise_pixel_array(maps)
    else:  # uncalibrated: stretch to 0..1 so the overlay still shows where the model looks
        heat = (maps - maps.min()) / max(float(maps.max() - maps.min()), 1e-12)
    bgr = (images.permute(0, 2, 3, 1).numpy()[..., ::-1] * 255).round().astype(np.uint8)
    entries = [
        (
            f"{it.defect}_{it.path.stem}",
            np.ascontiguousarray(bgr[i]),
            heat[i],
            masks[i] if labels[i] else None,
            float(scores[i]),
            int(labels[i]),
        )
        for i, it in enumerate(items)
    ]
    save_worst_overlays(out / "worst", entries, k=8)
    log.info("plots written to %s", out)
