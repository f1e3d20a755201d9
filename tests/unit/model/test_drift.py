"""The population stability index of raw scores against the calibration's quintiles."""

from __future__ import annotations

import math

import numpy as np
import pytest

from inspector.model.drift import BINS, MIN_GOOD, population_stability, reference_edges


def _psi_by_numpy(reference: np.ndarray, recent: np.ndarray) -> float:
    """The textbook computation, independently: numpy quantiles, digitize, the PSI sum."""
    edges = np.quantile(reference, np.arange(1, BINS) / BINS)
    counts = np.bincount(np.digitize(recent, edges), minlength=BINS)
    actual = np.maximum(counts / len(recent), 1e-4)
    return float(np.sum((actual - 1 / BINS) * np.log(actual * BINS)))


def test_edges_are_the_quantiles_numpy_computes() -> None:
    scores = np.random.default_rng(0).gamma(2.0, 0.1, 500)
    expected = np.quantile(scores, np.arange(1, BINS) / BINS)
    assert reference_edges(scores.tolist()) == pytest.approx(expected.tolist())


@pytest.mark.parametrize("shift", [0.0, 0.02, 0.1, -0.05])
def test_the_index_matches_the_textbook_computation(shift: float) -> None:
    rng = np.random.default_rng(1)
    reference = rng.gamma(2.0, 0.1, 400)
    recent = rng.gamma(2.0, 0.1, 300) + shift
    edges = reference_edges(reference.tolist())
    assert population_stability(edges, recent.tolist()) == pytest.approx(
        _psi_by_numpy(reference, recent), rel=1e-9
    )


def test_same_distribution_is_stable_and_a_shift_is_not() -> None:
    rng = np.random.default_rng(2)
    edges = reference_edges(rng.normal(0.3, 0.02, 1000).tolist())
    same = population_stability(edges, rng.normal(0.3, 0.02, 500).tolist())
    darker = population_stability(edges, rng.normal(0.33, 0.02, 500).tolist())
    assert same < 0.1 < 0.25 < darker


def test_no_finite_score_gives_zero_and_non_finite_ones_are_ignored() -> None:
    edges = reference_edges([i / 100 for i in range(100)])
    assert population_stability(edges, []) == 0.0
    clean = population_stability(edges, [0.05, 0.5, 0.95])
    assert population_stability(edges, [0.05, math.nan, 0.5, math.inf, 0.95]) == clean


def test_too_few_or_non_finite_good_scores_are_refused() -> None:
    with pytest.raises(ValueError, match=f"at least {MIN_GOOD}"):
        reference_edges([0.1] * (MIN_GOOD - 1))
    with pytest.raises(ValueError, match="not finite"):
        reference_edges([0.1] * MIN_GOOD + [math.nan])
