from __future__ import annotations

import numpy as np
import pytest

from inspector.errors import CalibrationError
from inspector.ml.calibration_fit import fit_calibration
from inspector.ml.config import CalibrationMode


def _maps(scores: np.ndarray) -> np.ndarray:
    maps = np.zeros((len(scores), 8, 8), np.float32)
    maps[:, 3, 3] = scores
    return maps


def test_f1_threshold_separates_classes_and_maps_to_half() -> None:
    scores = np.array([0.1, 0.2, 0.25, 0.3, 0.8, 0.9, 0.95])
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    cal = fit_calibration(
        scores, labels, _maps(scores), None, mode=CalibrationMode.AUTO, target_false_alarm_rate=0.01
    )
    assert cal.mode == "f1"
    assert 0.3 <= cal.image_threshold < 0.8
    normalised = cal.normalise_image(__import__("torch").tensor(scores)).numpy()
    assert ((normalised > 0.5) == labels.astype(bool)).all()
    assert cal.n_good == 4 and cal.n_anomalous == 3


def test_good_only_threshold_is_quantile_of_good_scores() -> None:
    rng = np.random.default_rng(0)
    scores = rng.normal(1.0, 0.1, 1000)
    labels = np.zeros(1000, int)
    cal = fit_calibration(
        scores, labels, _maps(scores), None, mode=CalibrationMode.AUTO, target_false_alarm_rate=0.05
    )
    assert cal.mode == "good_only"
    assert cal.target_false_alarm_rate == 0.05
    flagged = (scores > cal.image_threshold).mean()
    assert flagged == pytest.approx(0.05, abs=0.002)
    # Image and pixel decisions agree: the image score is the map's max.
    assert cal.pixel_threshold == cal.image_threshold


def test_f1_with_masks_fits_pixel_threshold_on_pixels() -> None:
    scores = np.array([0.2, 0.3, 0.9, 1.0])
    labels = np.array([0, 0, 1, 1])
    maps = np.full((4, 8, 8), 0.1, np.float32)
    masks = np.zeros((4, 8, 8), bool)
    maps[2:, :2, :2] = 0.7
    masks[2:, :2, :2] = True
    cal = fit_calibration(
        scores, labels, maps, masks, mode=CalibrationMode.F1, target_false_alarm_rate=0.01
    )
    assert 0.1 <= cal.pixel_threshold < 0.7
    assert cal.pixel_min == pytest.approx(0.1) and cal.pixel_max == pytest.approx(0.7)


def test_f1_without_anomalous_images_is_an_error() -> None:
    scores = np.array([0.1, 0.2])
    with pytest.raises(CalibrationError, match="validation"):
        fit_calibration(
            scores,
            np.zeros(2),
            _maps(scores),
            None,
            mode=CalibrationMode.F1,
            target_false_alarm_rate=0.01,
        )


def test_no_good_images_is_an_error() -> None:
    scores = np.array([0.9])
    with pytest.raises(CalibrationError, match="good"):
        fit_calibration(
            scores,
            np.ones(1),
            _maps(scores),
            None,
            mode=CalibrationMode.AUTO,
            target_false_alarm_rate=0.01,
        )
