from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from inspector.training.evaluation import best_f1, f1_at, image_auroc, pixel_aupro, pixel_auroc


def _brute_force_aupro(masks: np.ndarray, maps: np.ndarray, limit: float = 0.3) -> float:
    """The MVTec definition evaluated threshold by threshold (slow, obviously right)."""
    regions = []
    for mask, amap in zip(masks, maps, strict=True):
        labelled, n = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(amap, labelled == i) for i in range(1, n + 1)]
    normal = maps[~masks]
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
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


def _random_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = np.zeros((3, 16, 16), bool)
    masks[0, 2:6, 3:9] = True
    masks[1, 10:14, 10:12] = True
    masks[1, 1:3, 1:3] = True
    maps = rng.random((3, 16, 16)) + 0.6 * masks * rng.random((3, 16, 16))
    return masks, np.round(maps, 2)  # rounding creates ties, which must be handled


def test_image_auroc_perfect_inverted_and_degenerate() -> None:
    labels = np.array([0, 0, 1, 1])
    assert image_auroc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert image_auroc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert np.isnan(image_auroc(np.zeros(3), np.array([0.1, 0.2, 0.3])))


def test_pixel_auroc_random_is_near_half() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((4, 32, 32)) > 0.8
    assert pixel_auroc(masks, rng.random((4, 32, 32))) == pytest.approx(0.5, abs=0.05)


def test_aupro_perfect_and_half_covered() -> None:
    masks = np.zeros((2, 10, 10), bool)
    masks[0, 1:3, 1:3] = True
    masks[1, 6:9, 6:9] = True
    assert pixel_aupro(masks, masks.astype(float)) == pytest.approx(1.0)
    # One region lights up before any normal pixel (PRO 0.5 at FPR 0), the other only together
    # with all of them (PRO 1 at FPR 1); the curve is linear in between, 0.65 at FPR 0.3.
    maps = np.zeros((2, 10, 10))
    maps[0][masks[0]] = 1.0
    assert pixel_aupro(masks, maps) == pytest.approx((0.5 + 0.65) / 2, abs=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aupro_matches_brute_force_definition(seed: int) -> None:
    masks, maps = _random_case(seed)
    assert pixel_aupro(masks, maps) == pytest.approx(_brute_force_aupro(masks, maps), abs=1e-9)


def test_aupro_undefined_without_regions() -> None:
    assert np.isnan(pixel_aupro(np.zeros((1, 4, 4), bool), np.zeros((1, 4, 4))))


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_aupro_in_unit_range_and_invariant_to_monotone_transform(seed: int) -> None:
    masks, maps = _random_case(seed)
    value = pixel_aupro(masks, maps)
    assert 0.0 <= value <= 1.0
    assert pixel_aupro(masks, np.exp(3 * maps) + 7) == pytest.approx(value, abs=1e-9)


def test_f1_helpers() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.6, 0.5, 0.7, 0.9])
    f1, threshold = best_f1(labels, scores)
    assert f1 == pytest.approx(f1_at(labels, scores, np.nextafter(threshold, -1)))
    assert f1_at(labels, scores, 0.55) == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1_at(labels, scores, 1.0) == 0.0
