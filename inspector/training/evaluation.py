"""Evaluation metrics: image/pixel AUROC, the standard AU-PRO, F1.

ROC and precision-recall curves come from scikit-learn; AU-PRO follows the MVTec AD reference
(Bergmann et al., IJCV 2021): regions are the 8-connected components of the ground truth, the
PRO curve averages the per-region overlap over all regions of all images, the FPR is over all
normal pixels, and the area up to ``fpr_limit`` is divided by ``fpr_limit``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

_EIGHT = np.ones((3, 3), dtype=int)


@dataclass(frozen=True)
class EvalReport:
    """Figures of one evaluation run (fractions 0..1; ``nan`` where undefined).

    Attributes:
        image_auroc: Image-level ROC AUC.
        pixel_auroc: Pixel-level ROC AUC.
        pixel_aupro: Normalised area under the PRO curve up to FPR 0.3.
        image_f1: F1 of the image decisions at the deployed threshold.
        n_images: Images evaluated.
        n_anomalous: Of those, anomalous.
    """

    image_auroc: float
    pixel_auroc: float
    pixel_aupro: float
    image_f1: float
    n_images: int
    n_anomalous: int

    def to_json_dict(self) -> dict[str, float | int]:
        """The figures as a JSON-ready dict."""
        return asdict(self)


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of image scores ``(N,)`` against labels ``(N,)``; ``nan`` with one class only."""
    labels = np.asarray(labels).astype(int)
    if labels.min(initial=0) == labels.max(initial=0):
        return float("nan")
    return float(roc_auc_score(labels, scores))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """ROC AUC of every pixel of ``maps`` ``(N, H, W)`` against ``masks`` ``(N, H, W)``."""
    return image_auroc(np.asarray(masks).reshape(-1) > 0, np.asarray(maps).reshape(-1))


def pixel_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Standard AU-PRO: normalised area under the per-region-overlap curve up to ``fpr_limit``.

    Args:
        masks: Ground truth ``(N, H, W)``, non-zero = anomalous.
        maps: Anomaly maps ``(N, H, W)``, higher = more anomalous.
        fpr_limit: Upper FPR bound of the integration (0.3 in MVTec AD).

    Returns:
        AU-PRO in 0..1 (1 for a perfect detector); ``nan`` without anomalous regions or without
        normal pixels.
    """
    masks = np.asarray(masks) > 0
    scores = np.asarray(maps, dtype=np.float64).reshape(-1)
    region = np.zeros(masks.shape, dtype=np.int64)
    n_regions = 0
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=_EIGHT)
        region[i] = np.where(labelled > 0, labelled + n_regions, 0)
        n_regions += count
    flat = region.reshape(-1)
    n_normal = int((flat == 0).sum())
    if n_regions == 0 or n_normal == 0:
        return float("nan")
    sizes = np.bincount(flat, minlength=n_regions + 1).astype(np.float64)
    # Each pixel's contribution to the curves when the threshold passes below its score.
    fpr_step = np.where(flat == 0, 1.0 / n_normal, 0.0)
    pro_step = np.where(flat > 0, 1.0 / (sizes[flat] * n_regions), 0.0)
    order = np.argsort(-scores, kind="stable")
    sorted_scores = scores[order]
    fpr = np.cumsum(fpr_step[order])
    pro = np.cumsum(pro_step[order])
    # Pixels with equal scores cross any threshold together: keep the last of each tie.
    last = np.r_[np.flatnonzero(np.diff(sorted_scores)), len(sorted_scores) - 1]
    fpr = np.r_[0.0, fpr[last]]
    pro = np.r_[0.0, pro[last]]
    keep = fpr <= fpr_limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < fpr_limit and keep.sum() < len(fpr):
        nxt = int(keep.sum())
        x0, x1, y0, y1 = fpr[nxt - 1], fpr[nxt], pro[nxt - 1], pro[nxt]
        y_lim = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x, y = np.r_[x, fpr_limit], np.r_[y, y_lim]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return min(max(area / fpr_limit, 0.0), 1.0)


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """Best F1 over all thresholds and the threshold reaching it (positive: ``score >= t``)."""
    precision, recall, thresholds = precision_recall_curve(np.asarray(labels).astype(int), scores)
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 of the decisions ``score > threshold`` against labels."""
    labels = np.asarray(labels).astype(bool)
    predicted = np.asarray(scores) > threshold
    tp = int((predicted & labels).sum())
    fp = int((predicted & ~labels).sum())
    fn = int((~predicted & labels).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
