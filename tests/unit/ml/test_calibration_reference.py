"""Calibration keeps the good scores' quintiles: the reference of the daemon's score drift."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from inspector.ml.calibration_fit import fit_calibration
from inspector.ml.config import CalibrationMode
from inspector.model.calibration import Calibration
from inspector.model.drift import BINS, MIN_GOOD


def _fit(scores: np.ndarray, labels: np.ndarray) -> Calibration:
    maps = np.zeros((len(scores), 4, 4), np.float32)
    maps[:, 1, 1] = scores
    return fit_calibration(
        scores, labels, maps, None, mode=CalibrationMode.AUTO, target_false_alarm_rate=0.05
    )


def test_the_quintiles_are_those_of_the_good_scores_only() -> None:
    rng = np.random.default_rng(3)
    good = rng.gamma(2.0, 0.1, 80)
    scores = np.concatenate([good, rng.uniform(2, 3, 10)])
    labels = np.array([0] * 80 + [1] * 10)
    cal = _fit(scores, labels)
    expected = np.quantile(good, np.arange(1, BINS) / BINS)
    assert cal.good_score_quintiles == pytest.approx(expected.tolist())


def test_too_few_good_images_give_no_reference() -> None:
    scores = np.linspace(0.1, 0.5, MIN_GOOD - 1)
    assert _fit(scores, np.zeros(len(scores), int)).good_score_quintiles is None


def test_a_stored_reference_round_trips_and_a_bad_one_is_refused() -> None:
    cal = _fit(np.linspace(0.1, 0.5, 60), np.zeros(60, int))
    again = Calibration.model_validate_json(cal.model_dump_json())
    assert again.good_score_quintiles == cal.good_score_quintiles
    fields = cal.model_dump()
    for bad in ([0.1, 0.2], [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, float("nan"), 0.4]):
        with pytest.raises(ValidationError, match="quintiles"):
            Calibration.model_validate({**fields, "good_score_quintiles": bad})
