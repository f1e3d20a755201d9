"""Evaluation metrics: image/pixel AUROC, the standard AU-PRO, F1.

The maths only: ``inspector eval``'s workflow, which scores a test split, is :mod:`.evaluate`.

ROC and precision-recall curves come from scikit-learn; AU-PRO follows the MVTec AD reference
script ``compute_pro`` (Bergmann et al., "The MVTec Anomaly Detection Dataset", IJCV 2021):
regions are the 8-connected components of the ground truth, the PRO curve averages the
per-region overlap over all regions of all images, the FPR is over all normal pixels of all
images, and the area up to ``fpr_limit`` is divided by ``fpr_limit``.

Metrics that a data set cannot define (AUROC with one class only, AU-PRO without defects) are
``nan`` rather than an exception, so one evaluation reports whatever it can.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from inspector.errors import ConfigError, InspectorError

#: 8-connectivity: diagonal neighbours belong to the same defect region.
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
        """The figures as a flat dict, keyed by the attribute names.

        Returns:
            ``image_auroc``, ``pixel_auroc``, ``pixel_aupro``, ``image_f1`` (floats, possibly
            ``nan``), ``n_images`` and ``n_anomalous`` (ints).
        """
        return asdict(self)


def _finite_scores(scores: np.ndarray, what: str) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        # A diverged model yields NaN; ranking metrics on it would be meaningless.
        raise InspectorError(f"{bad} of {values.size} {what} are NaN or infinite")
    return values


def _binary_pair(
    labels: np.ndarray, scores: np.ndarray, what: str
) -> tuple[np.ndarray, np.ndarray]:
    """Validate and flatten labels and scores to bool ``(M,)`` and float64 ``(M,)``."""
    truth = np.asarray(labels)
    values = np.asarray(scores)
    if truth.shape != values.shape:
        raise InspectorError(f"{what}: labels {truth.shape} and scores {values.shape} differ")
    return truth.reshape(-1) > 0, _finite_scores(values.reshape(-1), what)


def image_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of image scores.

    Args:
        labels: ``(N,)``, 1 (non-zero) = anomalous, 0 = good.
        scores: ``(N,)``, higher = more anomalous.

    Returns:
        The AUC in 0..1; ``nan`` when only one class is present (or ``N`` is 0), where the ROC
        curve is undefined.

    Raises:
        InspectorError: Shapes differ or a score is NaN or infinite.
    """
    truth, values = _binary_pair(labels, scores, "image scores")
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, values))


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float:
    """ROC AUC over every pixel of every image.

    Args:
        masks: Ground truth ``(N, H, W)``, bool or 0/1, set = anomalous.
        maps: Anomaly maps ``(N, H, W)``, higher = more anomalous.

    Returns:
        The AUC in 0..1; ``nan`` without anomalous or without normal pixels.

    Raises:
        InspectorError: Shapes differ or a map value is NaN or infinite.
    """
    truth, values = _binary_pair(masks, maps, "pixel scores")
    if truth.all() or not truth.any():
        return float("nan")
    return float(roc_auc_score(truth, values))


def _label_regions(masks: np.ndarray) -> tuple[np.ndarray, int]:
    """Number the 8-connected ground-truth regions of all images consecutively.

    Returns:
        int32 ``(N, H, W)`` region ids (0 = normal, 1..R across all images) and ``R``.
    """
    region = np.zeros(masks.shape, dtype=np.int32)
    n_regions = 0
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=_EIGHT)
        np.add(labelled, n_regions, out=region[i], where=labelled > 0, casting="unsafe")
        n_regions += int(count)
    return region, n_regions


def _trapezoid_to(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area under ``y(x)`` from ``x[0]`` to ``limit`` (``x`` ascending, ends >= limit).

    The curve is interpolated linearly at ``limit`` as in the MVTec reference.
    """
    n_in = int(np.searchsorted(x, limit, side="right"))
    xs, ys = x[:n_in], y[:n_in]
    if xs[-1] < limit:
        x0, x1, y0, y1 = x[n_in - 1], x[n_in], y[n_in - 1], y[n_in]
        xs = np.r_[xs, limit]
        ys = np.r_[ys, y0 + (y1 - y0) * (limit - x0) / (x1 - x0)]
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


def pixel_aupro(masks: np.ndarray, maps: np.ndarray, fpr_limit: float = 0.3) -> float:
    """Standard AU-PRO: normalised area under the per-region-overlap curve up to ``fpr_limit``.

    One sort of all pixels replaces a sweep over thresholds: lowering the threshold past a
    pixel adds ``1 / n_normal`` to the FPR if it is normal, or ``1 / (region size * R)`` to the
    mean per-region overlap if it belongs to one of the ``R`` regions; equal scores pass the
    threshold together. Memory is a few dozen bytes per pixel (about 0.2 GB for 100 x 256 x 256).

    Args:
        masks: Ground truth ``(N, H, W)``, bool or 0/1, set = anomalous.
        maps: Anomaly maps ``(N, H, W)``, higher = more anomalous.
        fpr_limit: Upper FPR bound of the integration, in (0, 1] (0.3 in MVTec AD).

    Returns:
        AU-PRO in 0..1 (1 for a perfect detector); ``nan`` without anomalous regions or without
        normal pixels.

    Raises:
        ConfigError: ``fpr_limit`` is outside (0, 1].
        InspectorError: Shapes differ, are not ``(N, H, W)``, or a map value is NaN or infinite.
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ConfigError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    truth = np.asarray(masks) > 0
    if truth.ndim != 3:
        raise InspectorError(f"AU-PRO needs masks and maps shaped (N, H, W), got {truth.shape}")
    _, scores = _binary_pair(truth, maps, "pixel scores")
    region, n_regions = _label_regions(truth)
    flat = region.reshape(-1)
    n_normal = int(np.count_nonzero(flat == 0))
    if n_regions == 0 or n_normal == 0:
        return float("nan")

    order = np.argsort(scores, kind="stable")[::-1]
    sorted_scores = scores[order]
    # Index of the last pixel of each run of equal scores: the curve's points.
    last = np.flatnonzero(sorted_scores[1:] != sorted_scores[:-1])
    last = np.r_[last, scores.size - 1]
    del sorted_scores
    sorted_region = flat[order]
    del order

    fpr = np.cumsum(sorted_region == 0, dtype=np.int64)[last] / n_normal
    sizes = np.bincount(flat, minlength=n_regions + 1).astype(np.float64)
    step = np.zeros(n_regions + 1)
    step[1:] = 1.0 / (sizes[1:] * n_regions)
    pro_steps = step[sorted_region]
    del sorted_region
    pro = np.cumsum(pro_steps, out=pro_steps)[last]

    area = _trapezoid_to(np.r_[0.0, fpr], np.r_[0.0, pro], fpr_limit)
    # Rounding in the cumulative sums may overshoot by ~1e-16.
    return min(max(area / fpr_limit, 0.0), 1.0)


def best_f1(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The best F1 over all thresholds and a threshold reaching it.

    The threshold follows the same convention as :func:`f1_at` and the daemon (anomalous when
    ``score > threshold``) and lies midway between the two scores it separates, so it does not
    sit exactly on a score of the data it was fitted on.

    Args:
        labels: ``(N,)``, 1 (non-zero) = anomalous, 0 = good.
        scores: ``(N,)``, higher = more anomalous.

    Returns:
        ``(f1, threshold)`` with ``f1_at(labels, scores, threshold) == f1``; ``(nan, nan)``
        without anomalous images, where F1 is undefined.

    Raises:
        InspectorError: Shapes differ or a score is NaN or infinite.
    """
    truth, values = _binary_pair(labels, scores, "image scores")
    if not truth.any():
        return float("nan"), float("nan")
    precision, recall, thresholds = precision_recall_curve(truth, values)
    # The last precision/recall pair has no threshold (recall 0 by convention).
    f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
    best = int(np.argmax(f1))
    lowest_positive = float(thresholds[best])  # scikit-learn predicts ``score >= this``
    below = values[values < lowest_positive]
    if below.size == 0:
        return float(f1[best]), float(np.nextafter(lowest_positive, -np.inf))
    highest_negative = float(below.max())
    threshold = highest_negative / 2 + lowest_positive / 2
    if not highest_negative <= threshold < lowest_positive:  # adjacent floats: no midpoint
        threshold = highest_negative
    return float(f1[best]), threshold


def f1_at(labels: np.ndarray, scores: np.ndarray, threshold: float) -> float:
    """F1 of the decisions ``score > threshold`` (strictly, as the daemon decides).

    Args:
        labels: ``(N,)``, 1 (non-zero) = anomalous, 0 = good.
        scores: ``(N,)``, higher = more anomalous.
        threshold: Decision threshold in the units of ``scores``.

    Returns:
        F1 in 0..1; 0.0 when nothing is both anomalous and predicted so (also with no anomalous
        images, or a NaN threshold, which predicts nothing).

    Raises:
        InspectorError: Shapes differ or a score is NaN or infinite.
    """
    truth, values = _binary_pair(labels, scores, "image scores")
    predicted = values > threshold
    tp = int(np.count_nonzero(predicted & truth))
    fp = int(np.count_nonzero(predicted & ~truth))
    fn = int(np.count_nonzero(~predicted & truth))
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)
