"""Evaluation plots as PNG files (matplotlib object API: no global pyplot state)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from inspector.imaging import draw_mask_outline, heatmap_overlay, write_png

#: ``(name, image_bgr (H, W, 3) uint8, map01 (H, W), gt_mask (H, W) bool | None, score, label)``
OverlayItem = tuple[str, np.ndarray, np.ndarray, np.ndarray | None, float, int]


def _save(fig: Figure, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=100)


def plot_roc(path: Path, labels: np.ndarray, scores: np.ndarray, title: str) -> None:
    """Image-level ROC curve with its AUC."""
    fpr, tpr, _ = roc_curve(labels, scores)
    fig = Figure(figsize=(5, 5), layout="tight")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(labels, scores):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    _save(fig, path)


def plot_score_histogram(
    path: Path, good_scores: np.ndarray, defect_scores: np.ndarray, threshold: float | None
) -> None:
    """Histograms of raw image scores for good and defective images, with the threshold."""
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.add_subplot()
    both = np.concatenate([good_scores, defect_scores])
    bins: int | list[float] = 10
    if both.size:
        bins = np.linspace(float(both.min()), float(both.max()) + 1e-9, 30).tolist()
    ax.hist(good_scores, bins=bins, alpha=0.6, label=f"good ({len(good_scores)})")
    ax.hist(defect_scores, bins=bins, alpha=0.6, label=f"defective ({len(defect_scores)})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4f}")
    ax.set(xlabel="raw image score", ylabel="images", title="score distribution")
    ax.legend()
    _save(fig, path)


def save_worst_overlays(out_dir: Path, items: Sequence[OverlayItem], k: int) -> list[Path]:
    """Heat-map overlays of the ``k`` worst cases of each kind.

    Worst are defective images with the lowest scores (near-misses or misses) and good images
    with the highest scores (near or actual false alarms).

    Returns:
        Paths written, defective first.
    """
    bad = sorted((it for it in items if it[5] == 1), key=lambda it: it[4])[:k]
    good = sorted((it for it in items if it[5] == 0), key=lambda it: -it[4])[:k]
    paths = []
    for kind, chosen in (("defective", bad), ("good", good)):
        for rank, (name, image, heat, mask, score, _) in enumerate(chosen):
            picture = heatmap_overlay(image, heat)
            if mask is not None and mask.any():
                picture = draw_mask_outline(picture, mask, (255, 255, 255))
            path = out_dir / f"{kind}_{rank:02d}_{name}_{score:.4f}.png"
            write_png(path, picture)
            paths.append(path)
    return paths
