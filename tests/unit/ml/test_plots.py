from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.errors import InspectorError
from inspector.ml.plots import (
    OverlayItem,
    plot_roc,
    plot_score_histogram,
    save_worst_overlays,
    worst_items,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path, min_bytes: int = 5000) -> np.ndarray:
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > min_bytes
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return image


def test_roc_and_histogram_are_real_pngs(tmp_path: Path) -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.3, 0.2, 0.8, 0.4])
    plot_roc(tmp_path / "nested" / "roc.png", labels, scores, "t")
    plot_score_histogram(tmp_path / "h.png", scores[:3], scores[3:], 0.35)
    roc = _assert_png(tmp_path / "nested" / "roc.png")
    assert roc.shape[:2] == (500, 500)  # 5 x 5 inches at 100 dpi
    assert _assert_png(tmp_path / "h.png").std() > 5  # something was drawn


def test_roc_with_one_class_still_writes_a_plot(tmp_path: Path) -> None:
    plot_roc(tmp_path / "roc.png", np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), "all good")
    _assert_png(tmp_path / "roc.png")


@pytest.mark.parametrize(
    ("good", "bad", "threshold"),
    [
        (np.array([0.5, 0.5]), np.array([]), None),  # one class, all equal
        (np.array([]), np.array([]), 0.2),  # nothing at all
        (np.array([0.1, np.nan, 0.2]), np.array([np.inf, 3.0]), float("nan")),
    ],
)
def test_histogram_degenerate_inputs(
    tmp_path: Path, good: np.ndarray, bad: np.ndarray, threshold: float | None
) -> None:
    plot_score_histogram(tmp_path / "h.png", good, bad, threshold)
    _assert_png(tmp_path / "h.png")


def test_unwritable_plot_path_raises(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(InspectorError, match="cannot write plot"):
        plot_roc(tmp_path / "file" / "roc.png", np.array([0, 1]), np.array([0.1, 0.9]), "t")


def _items(mask_shape: tuple[int, int] = (32, 32)) -> list[OverlayItem]:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    heat = np.zeros((8, 8), np.float32)  # model resolution: smaller than the image
    heat[2:4, 2:4] = 1.0
    mask = np.zeros(mask_shape, bool)
    mask[mask_shape[0] // 4 : mask_shape[0] // 2, mask_shape[1] // 4 : mask_shape[1] // 2] = True
    return [
        ("good_low", image, heat, None, 0.1, 0),
        ("good_high", image, heat, None, 0.9, 0),
        ("good_mid", image, heat, None, 0.5, 0),
        ("bad_low", image, heat, mask, 0.2, 1),
        ("bad_high", image, heat, mask, 0.95, 1),
        ("bad_mid", image, heat, mask, 0.6, 1),
    ]


def test_worst_items_are_missed_defects_and_false_alarms() -> None:
    items = _items()
    bad, good = worst_items(items, 2)
    assert [items[i][0] for i in bad] == ["bad_low", "bad_mid"]
    assert [items[i][0] for i in good] == ["good_high", "good_mid"]
    assert worst_items(items, 0) == ([], [])
    assert worst_items(items, -3) == ([], [])
    bad, good = worst_items(items, 10)
    assert len(bad) == 3 and len(good) == 3


def test_save_worst_overlays_writes_them_in_order(tmp_path: Path) -> None:
    paths = save_worst_overlays(tmp_path / "worst", _items(), k=1)
    names = [p.name for p in paths]
    assert names == ["defective_00_bad_low_0.2.png", "good_00_good_high_0.9.png"]
    for path in paths:
        assert path.parent == tmp_path / "worst"
        assert _assert_png(path, min_bytes=500).shape == (32, 32, 3)
    # The ground-truth outline is white on the defective overlay, absent on the good one.
    defective = _assert_png(paths[0], min_bytes=500)
    good = _assert_png(paths[1], min_bytes=500)
    assert (defective == 255).all(axis=2).any()
    assert not (good == 255).all(axis=2).any()
    assert save_worst_overlays(tmp_path / "none", _items(), k=0) == []


def test_save_worst_overlays_handles_odd_names_and_mask_sizes(tmp_path: Path) -> None:
    items = _items(mask_shape=(16, 16))
    items[3] = ("scratch/001 ü.png", *items[3][1:])
    paths = save_worst_overlays(tmp_path, items, k=1)
    assert paths[0].name == "defective_00_scratch_001_.png_0.2.png"
    assert all(p.parent == tmp_path and p.is_file() for p in paths)
