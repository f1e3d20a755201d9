from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import ndimage

from inspector.errors import ConfigError, InspectorError
from inspector.ml.metrics import (
    EvalReport,
    best_f1,
    f1_at,
    image_auroc,
    pixel_aupro,
    pixel_auroc,
)


def _brute_force_aupro(
    masks: np.ndarray, maps: np.ndarray, limit: float = 0.3, n_thresholds: int | None = None
) -> float:
    """The MVTec definition evaluated threshold by threshold (slow, obviously right).

    With ``n_thresholds`` None every distinct score is a threshold (exact); otherwise that many
    evenly spaced thresholds approximate the curve, as in older AU-PRO implementations.
    """
    regions = []
    for mask, amap in zip(masks, maps, strict=True):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(amap, labelled == i) for i in range(1, n + 1)]
    normal = maps[~masks]
    if n_thresholds is None:
        thresholds = np.unique(maps)[::-1]
    else:
        thresholds = np.linspace(maps.max(), maps.min(), n_thresholds)
    points = [(0.0, 0.0)]
    for t in thresholds:
        fpr = float((normal >= t).mean())
        pro = float(np.mean([(amap[r] >= t).mean() for amap, r in regions]))
        points.append((fpr, pro))
    fpr, pro = np.array(points).T
    keep = fpr <= limit
    x, y = fpr[keep], pro[keep]
    if x[-1] < limit:
        i = int(keep.sum())
        y_lim = pro[i - 1] + (pro[i] - pro[i - 1]) * (limit - fpr[i - 1]) / (fpr[i] - fpr[i - 1])
        x, y = np.r_[x, limit], np.r_[y, y_lim]
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2) / limit)


def _random_case(seed: int, decimals: int | None = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 2:6, 3:9] = True
    masks[1, 10:14, 10:12] = True
    masks[1, 1:3, 1:3] = True
    maps = rng.random((3, 16, 16)) + 0.6 * masks * rng.random((3, 16, 16))
    # Rounding creates ties, which must be handled.
    return masks, maps if decimals is None else np.round(maps, decimals)


# --- AUROC -----------------------------------------------------------------------------------


def test_image_auroc_perfect_inverted_and_random() -> None:
    labels = np.array([0, 0, 1, 1])
    assert image_auroc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert image_auroc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    rng = np.random.default_rng(1)
    many = rng.integers(0, 2, 4000)
    assert image_auroc(many, rng.random(4000)) == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize("labels", [np.zeros(3), np.ones(3), np.zeros(0)])
def test_image_auroc_is_nan_with_one_class(labels: np.ndarray) -> None:
    assert math.isnan(image_auroc(labels, np.linspace(0, 1, labels.size)))


def test_auroc_rejects_bad_inputs() -> None:
    with pytest.raises(InspectorError, match="differ"):
        image_auroc(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(InspectorError, match="1 of 2 image scores are NaN"):
        image_auroc(np.array([0, 1]), np.array([0.1, np.nan]))
    with pytest.raises(InspectorError, match="differ"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5)))


def test_pixel_auroc_perfect_inverted_random_and_degenerate() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 32, 32)) > 0.8
    assert pixel_auroc(masks, masks.astype(np.float32)) == 1.0
    assert pixel_auroc(masks.astype(np.uint8), 1.0 - masks) == 0.0
    assert pixel_auroc(masks, rng.random((4, 32, 32))) == pytest.approx(0.5, abs=0.05)
    assert math.isnan(pixel_auroc(np.zeros((2, 4, 4), bool), rng.random((2, 4, 4))))
    assert math.isnan(pixel_auroc(np.ones((2, 4, 4), bool), rng.random((2, 4, 4))))


# --- AU-PRO ----------------------------------------------------------------------------------


def test_aupro_perfect_inverted_and_half_covered() -> None:
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 6:9, 6:9] = True
    assert pixel_aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    assert pixel_aupro(masks, 1.0 - masks) == 0.0
    # One region lights up before any normal pixel (PRO 0.5 at FPR 0), the other only together
    # with all of them (PRO 1 at FPR 1); the curve is linear in between, 0.65 at FPR 0.3.
    maps = np.zeros((2, 10, 10))
    maps[0][masks[0]] = 1.0
    assert pixel_aupro(masks, maps) == pytest.approx((0.5 + 0.65) / 2, abs=1e-9)
    # Over the whole FPR range the same curve has area 0.5 + 0.5 * 0.5 = 0.75.
    assert pixel_aupro(masks, maps, fpr_limit=1.0) == pytest.approx(0.75, abs=1e-9)


def test_aupro_averages_regions_not_pixels() -> None:
    # A 1-pixel region found and a 25-pixel region missed weigh the same: PRO 0.5 at FPR 0.
    masks = np.zeros((1, 20, 20), bool)
    masks[0, 1, 1] = True
    masks[0, 10:15, 10:15] = True
    maps = np.zeros((1, 20, 20))
    maps[0, 1, 1] = 1.0
    assert pixel_aupro(masks, maps) == pytest.approx((0.5 + 0.65) / 2, abs=1e-9)


def test_aupro_regions_are_eight_connected() -> None:
    # Two 2x2 squares touching at a corner form ONE region: finding one square is PRO 0.5.
    masks = np.zeros((1, 10, 10), bool)
    masks[0, 2:4, 2:4] = True
    masks[0, 4:6, 4:6] = True
    maps = np.zeros((1, 10, 10))
    maps[0, 2:4, 2:4] = 1.0
    one_region = pixel_aupro(masks, maps)
    assert one_region == pytest.approx((0.5 + 0.65) / 2, abs=1e-9)
    assert one_region == pytest.approx(_brute_force_aupro(masks, maps), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_aupro_matches_brute_force_definition(seed: int) -> None:
    masks, maps = _random_case(seed)
    assert pixel_aupro(masks, maps) == pytest.approx(_brute_force_aupro(masks, maps), abs=1e-9)
    continuous = _random_case(seed, decimals=None)
    assert pixel_aupro(*continuous) == pytest.approx(_brute_force_aupro(*continuous), abs=1e-9)


@pytest.mark.parametrize("limit", [0.05, 0.3, 1.0])
def test_aupro_close_to_a_200_threshold_sweep(limit: float) -> None:
    masks, maps = _random_case(5, decimals=None)
    sweep = _brute_force_aupro(masks, maps, limit, n_thresholds=200)
    assert pixel_aupro(masks, maps, limit) == pytest.approx(sweep, abs=1e-2)


def test_aupro_accepts_integer_maps() -> None:
    masks, maps = _random_case(4)
    as_uint8 = (maps * 100).round().astype(np.uint8)
    assert pixel_aupro(masks, as_uint8) == pytest.approx(pixel_aupro(masks, maps), abs=1e-12)


def test_aupro_undefined_without_regions_or_normal_pixels() -> None:
    assert math.isnan(pixel_aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))))
    assert math.isnan(pixel_aupro(np.ones((1, 4, 4), bool), np.zeros((1, 4, 4))))


def test_aupro_rejects_bad_inputs() -> None:
    masks, maps = _random_case(0)
    for limit in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="fpr_limit"):
            pixel_aupro(masks, maps, fpr_limit=limit)
    with pytest.raises(InspectorError, match=r"\(N, H, W\)"):
        pixel_aupro(masks[0], maps[0])
    with pytest.raises(InspectorError, match="differ"):
        pixel_aupro(masks, maps[:, :8])
    maps[0, 0, 0] = np.inf
    with pytest.raises(InspectorError, match="infinite"):
        pixel_aupro(masks, maps)


@settings(max_examples=40, deadline=None)
@given(
    masks=hnp.arrays(bool, (2, 6, 7)),
    maps=hnp.arrays(np.float64, (2, 6, 7), elements=st.floats(0, 1, width=16)),
)
def test_aupro_in_unit_range_and_invariant_to_monotone_transform(
    masks: np.ndarray, maps: np.ndarray
) -> None:
    value = pixel_aupro(masks, maps)
    if not masks.any() or masks.all():
        assert math.isnan(value)
        return
    assert 0.0 <= value <= 1.0
    assert pixel_aupro(masks, np.exp(3 * maps) + 7) == pytest.approx(value, abs=1e-9)
    assert value == pytest.approx(_brute_force_aupro(masks, maps), abs=1e-9)


# --- F1 --------------------------------------------------------------------------------------


def test_f1_at_is_strictly_greater() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.5, 0.7, 0.9])
    assert f1_at(labels, scores, 0.55) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    # At 0.5 the defect scored exactly 0.5 is not flagged: 2 TP, 1 FP, 1 FN.
    assert f1_at(labels, scores, 0.5) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1_at(labels, scores, 0.0) == pytest.approx(2 * 3 / (2 * 3 + 2))
    assert f1_at(labels, scores, 1.0) == 0.0
    assert f1_at(labels, scores, float("nan")) == 0.0
    assert f1_at(np.zeros(3), np.array([0.1, 0.2, 0.3]), 0.0) == 0.0


def test_best_f1_threshold_reproduces_it_with_strict_decisions() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.5, 0.7, 0.9])
    f1, threshold = best_f1(labels, scores)
    assert f1 == pytest.approx(2 * 3 / (2 * 3 + 1))  # flag 0.5 and up: 3 TP, 1 FP
    assert threshold == pytest.approx(0.3)  # midway between 0.1 and 0.5
    assert f1_at(labels, scores, threshold) == f1


def test_best_f1_edge_cases() -> None:
    f1, threshold = best_f1(np.ones(3), np.array([0.2, 0.4, 0.3]))
    assert f1 == 1.0 and threshold < 0.2
    assert f1_at(np.ones(3), np.array([0.2, 0.4, 0.3]), threshold) == 1.0
    assert all(math.isnan(v) for v in best_f1(np.zeros(3), np.array([0.2, 0.4, 0.3])))
    # Adjacent floats have no midpoint; the threshold must still separate them.
    low = 1.0
    high = float(np.nextafter(low, 2.0))
    f1, threshold = best_f1(np.array([0, 1]), np.array([low, high]))
    assert f1 == 1.0 and f1_at(np.array([0, 1]), np.array([low, high]), threshold) == 1.0


@settings(max_examples=40, deadline=None)
@given(
    labels=hnp.arrays(np.int64, st.integers(2, 30), elements=st.integers(0, 1)),
    data=st.data(),
)
def test_best_f1_is_the_best_over_all_thresholds(labels: np.ndarray, data: st.DataObject) -> None:
    scores = data.draw(
        hnp.arrays(np.float64, labels.shape, elements=st.floats(0, 1, width=16)), label="scores"
    )
    f1, threshold = best_f1(labels, scores)
    if not labels.any():
        assert math.isnan(f1) and math.isnan(threshold)
        return
    candidates = np.r_[np.unique(scores), -1.0]
    assert f1 == pytest.approx(max(f1_at(labels, scores, t) for t in candidates))
    assert f1_at(labels, scores, threshold) == pytest.approx(f1)


# --- report ----------------------------------------------------------------------------------


def test_eval_report_json_dict_and_frozen() -> None:
    report = EvalReport(
        image_auroc=0.9,
        pixel_auroc=0.95,
        pixel_aupro=float("nan"),
        image_f1=0.8,
        n_images=10,
        n_anomalous=4,
    )
    as_json = report.to_json_dict()
    assert as_json == {
        "image_auroc": 0.9,
        "pixel_auroc": 0.95,
        "pixel_aupro": as_json["pixel_aupro"],
        "image_f1": 0.8,
        "n_images": 10,
        "n_anomalous": 4,
    }
    assert math.isnan(float(as_json["pixel_aupro"]))
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.n_images = 3  # type: ignore[misc]
