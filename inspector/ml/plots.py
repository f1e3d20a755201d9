"""Evaluation plots as PNG files.

Uses matplotlib's object API with the Agg canvas: no pyplot global state, no GUI backend, safe
in threads and in headless CI.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from inspector.errors import InspectorError
from inspector.imaging import draw_mask_outline, heatmap_overlay, write_png
from inspector.ml.metrics import image_auroc

#: ``(name, image_bgr uint8 (H, W, 3), map01 (h, w), gt_mask bool (H, W) | None, score, label)``
OverlayItem = tuple[str, np.ndarray, np.ndarray, np.ndarray | None, float, int]

_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")


def _save(fig: Figure, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        FigureCanvasAgg(fig)  # attaches the Agg canvas: no backend lookup, no GUI
        fig.savefig(path, format="png")
    except OSError as exc:
        raise InspectorError(f"cannot write plot {path}: {exc.strerror or exc}") from exc


def plot_roc(path: Path, labels: np.ndarray, scores: np.ndarray, title: str) -> None:
    """Write the image-level ROC curve with its AUC as a PNG.

    With only one class there is no curve; the plot then says so instead of failing.

    Args:
        path: Destination PNG (parent folders are created).
        labels: ``(N,)``, 1 = anomalous, 0 = good.
        scores: ``(N,)``, higher = more anomalous.
        title: Plot title.

    Raises:
        InspectorError: The file cannot be written, or the inputs are invalid (see
            :func:`~inspector.ml.metrics.image_auroc`).
    """
    auc = image_auroc(labels, scores)
    fig = Figure(figsize=(5, 5), layout="tight")
    ax = fig.add_subplot()
    if np.isnan(auc):
        ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center")
    else:
        fpr, tpr, _ = roc_curve(np.asarray(labels) > 0, scores)
        ax.plot(fpr, tpr, label=f"AUROC {auc:.3f}")
        ax.legend(loc="lower right")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title=title,
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    _save(fig, path)


def plot_score_histogram(
    path: Path, good_scores: np.ndarray, defect_scores: np.ndarray, threshold: float | None
) -> None:
    """Write overlaid histograms of good and defective image scores, with the threshold.

    Args:
        path: Destination PNG (parent folders are created).
        good_scores: ``(G,)`` raw scores of good images (may be empty).
        defect_scores: ``(D,)`` raw scores of defective images (may be empty).
        threshold: The image threshold in the same units, drawn as a dashed line; None for none.

    Raises:
        InspectorError: The file cannot be written.
    """
    good = np.asarray(good_scores, dtype=np.float64).reshape(-1)
    bad = np.asarray(defect_scores, dtype=np.float64).reshape(-1)
    good, bad = good[np.isfinite(good)], bad[np.isfinite(bad)]
    both = np.concatenate([good, bad])
    # Shared bin edges so the two histograms are comparable bar by bar.
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    bins = np.linspace(lo, hi, 31).tolist()
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.add_subplot()
    ax.hist(good, bins=bins, alpha=0.6, color="tab:green", label=f"good ({good.size})")
    ax.hist(bad, bins=bins, alpha=0.6, color="tab:red", label=f"defective ({bad.size})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set(xlabel="raw image score", ylabel="images", title="score distribution")
    ax.legend()
    _save(fig, path)


def worst_items(items: Sequence[OverlayItem], k: int) -> tuple[list[int], list[int]]:
    """Pick the ``k`` worst cases of each kind.

    Worst are defective images with the lowest scores (misses or near-misses) and good images
    with the highest scores (false or near-false alarms).

    Args:
        items: The candidates.
        k: How many of each kind (0 or less picks none).

    Returns:
        Indices into ``items``: defective ones by ascending score, good ones by descending score.
    """
    k = max(k, 0)
    bad = sorted((i for i, it in enumerate(items) if it[5]), key=lambda i: items[i][4])
    good = sorted((i for i, it in enumerate(items) if not it[5]), key=lambda i: -items[i][4])
    return bad[:k], good[:k]


def save_worst_overlays(out_dir: Path, items: Sequence[OverlayItem], k: int) -> list[Path]:
    """Write heat-map overlays of the ``k`` worst cases of each kind (see :func:`worst_items`).

    Each PNG is the image with the map as a JET overlay and, where given, the ground-truth
    outline in white. Files are named ``<kind>_<rank>_<name>_<score>.png`` with ``kind``
    ``defective`` or ``good``; unsafe characters of ``name`` become ``_``.

    Args:
        out_dir: Destination folder (created).
        items: ``(name, image_bgr, map01, gt_mask | None, score, label)`` per image; the map may
            have any resolution (it is resized to the image).
        k: How many of each kind.

    Returns:
        Paths written, defective first, each kind worst first.

    Raises:
        InspectorError: A file cannot be written.
    """
    bad, good = worst_items(items, k)
    paths = []
    for kind, chosen in (("defective", bad), ("good", good)):
        for rank, index in enumerate(chosen):
            name, image, heat, mask, score, _ = items[index]
            picture = heatmap_overlay(image, heat)
            if mask is not None and np.any(mask):
                picture = draw_mask_outline(picture, mask, (255, 255, 255))
            safe = _UNSAFE_IN_NAME.sub("_", name).strip("._") or "image"
            path = out_dir / f"{kind}_{rank:02d}_{safe}_{score:.4g}.png"
            write_png(path, picture)
            paths.append(path)
    return paths
