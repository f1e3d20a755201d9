"""Fit a checkpoint's thresholds and normalisation on held-out validation data: the maths.

``inspector train`` fits with it after training, ``inspector calibrate`` (:mod:`.calibrate`,
the command's workflow) on good images or scores of a served model.

Never on the test split: thresholds fitted on the data they are then judged on make every
reported figure optimistic (a default anomalib users trip over).
"""

from __future__ import annotations

import numpy as np

from inspector.errors import CalibrationError
from inspector.ml.config import CalibrationMode
from inspector.ml.metrics import best_f1
from inspector.model.calibration import Calibration
from inspector.model.drift import MIN_GOOD, reference_edges


def fit_calibration(
    scores: np.ndarray,
    labels: np.ndarray,
    maps: np.ndarray,
    masks: np.ndarray | None,
    *,
    mode: CalibrationMode,
    target_false_alarm_rate: float,
) -> Calibration:
    """Choose image and pixel thresholds and min/max ranges.

    Args:
        scores: Raw image scores of the validation images, shape ``(N,)``.
        labels: 0 good / 1 anomalous, shape ``(N,)``.
        maps: Raw anomaly maps, shape ``(N, H, W)``.
        masks: Ground-truth masks ``(N, H, W)`` bool for anomalous images (all False for good
            ones), or ``None`` when no masks exist.
        mode: ``f1`` needs anomalous images; ``good_only`` uses the good ones alone; ``auto``
            picks ``f1`` when anomalous images are present.
        target_false_alarm_rate: ``good_only``: fraction of good images allowed above the
            threshold (quantile ``1 - rate`` of good scores).

    Returns:
        The calibration.

    Raises:
        CalibrationError: No good images, or ``f1`` without anomalous images.
    """
    labels = labels.astype(int)
    n_good, n_bad = int((labels == 0).sum()), int((labels == 1).sum())
    good_scores = scores[labels == 0].tolist()
    if n_good == 0:
        raise CalibrationError("calibration needs at least one good validation image")
    if mode is CalibrationMode.AUTO:
        mode = CalibrationMode.F1 if n_bad else CalibrationMode.GOOD_ONLY
    if mode is CalibrationMode.F1:
        if n_bad == 0:
            raise CalibrationError(
                "calibration mode f1 needs labelled anomalous validation images "
                "(DATA/validation/<defect>/); use good_only or add some"
            )
        image_threshold = best_f1(labels, scores)[1]
        pixel_threshold = image_threshold
        if masks is not None and masks.any():
            pixel_threshold = best_f1(masks.reshape(-1), maps.reshape(-1))[1]
        far: float | None = None
    else:
        good = scores[labels == 0]
        image_threshold = float(np.quantile(good, 1.0 - target_false_alarm_rate))
        # The image score is the map's maximum, so a pixel threshold equal to the image one makes
        # "anomalous image" and "has at least one defect pixel" the same decision.
        pixel_threshold = image_threshold
        far = target_false_alarm_rate
    return Calibration(
        mode="f1" if mode is CalibrationMode.F1 else "good_only",
        image_threshold=image_threshold,
        image_min=float(scores.min()),
        image_max=float(scores.max()),
        pixel_threshold=pixel_threshold,
        pixel_min=float(maps.min()),
        pixel_max=float(maps.max()),
        target_false_alarm_rate=far,
        n_good=n_good,
        n_anomalous=n_bad,
        # The daemon's score-drift reference: where the good scores lay (too few: none).
        good_score_quintiles=(
            reference_edges(good_scores) if len(good_scores) >= MIN_GOOD else None
        ),
    )
