"""Per-camera score drift: the gauge a lighting change raises (``inspector_score_drift``)."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from inspector.model.drift import population_stability, reference_edges
from inspector.runtime.drift import EVERY, MIN_FRAMES, WINDOW, ScoreDrift


def _drift() -> tuple[ScoreDrift, CollectorRegistry]:
    registry = CollectorRegistry()
    return ScoreDrift(Gauge("inspector_score_drift", "", ["camera"], registry=registry)), registry


def _sample(registry: CollectorRegistry, camera: str) -> float | None:
    return registry.get_sample_value("inspector_score_drift", {"camera": camera})


def test_no_figure_before_enough_frames_then_the_window_against_the_reference() -> None:
    rng = np.random.default_rng(0)
    edges = reference_edges(rng.normal(0.3, 0.02, 500).tolist())
    drift, registry = _drift()
    scores = rng.normal(0.3, 0.02, MIN_FRAMES + 2 * WINDOW).tolist()
    values = [drift.observe("a", "m1", edges, s) for s in scores]
    assert values[: MIN_FRAMES - 1] == [None] * (MIN_FRAMES - 1)
    assert _sample(registry, "a") is not None
    # The figure is the index of the last WINDOW scores at the last multiple of EVERY.
    last = len(scores) - len(scores) % EVERY
    expected = population_stability(edges, scores[last - WINDOW : last])
    assert values[-1] == _sample(registry, "a") == expected
    assert expected < 0.1


def test_darker_frames_raise_the_figure_past_the_alert_level_within_one_window() -> None:
    rng = np.random.default_rng(1)
    edges = reference_edges(rng.normal(0.3, 0.02, 500).tolist())
    drift, registry = _drift()
    for s in rng.normal(0.3, 0.02, 200):
        drift.observe("a", "m1", edges, float(s))
    before = _sample(registry, "a")
    assert before is not None and before < 0.25
    for s in rng.normal(0.36, 0.02, WINDOW):
        drift.observe("a", "m1", edges, float(s))
    after = _sample(registry, "a")
    assert after is not None and after > 0.25


def test_a_new_model_starts_again_and_one_without_a_reference_has_no_figure() -> None:
    edges = reference_edges([i / 100 for i in range(100)])
    drift, registry = _drift()
    for i in range(MIN_FRAMES):
        drift.observe("a", "m1", edges, (i % 100) / 100)
        drift.observe("b", "m1", edges, (i % 100) / 100)
    assert _sample(registry, "a") is not None and _sample(registry, "b") is not None
    assert drift.observe("a", "m2", edges, 0.5) is None
    assert _sample(registry, "a") is None  # the old model's figure is gone, not kept stale
    assert drift.observe("b", "old", None, 0.5) is None
    assert _sample(registry, "b") is None
    assert drift.value("a") is None and drift.value("b") is None
