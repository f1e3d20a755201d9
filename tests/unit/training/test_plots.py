from __future__ import annotations

from pathlib import Path

import numpy as np

from inspector.training.plots import plot_roc, plot_score_histogram, save_worst_overlays

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_roc_and_histogram_are_real_pngs(tmp_path: Path) -> None:
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.3, 0.2, 0.8, 0.4])
    plot_roc(tmp_path / "roc.png", labels, scores, "t")
    plot_score_histogram(tmp_path / "h.png", scores[:3], scores[3:], 0.35)
    for name in ("roc.png", "h.png"):
        data = (tmp_path / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_worst_overlays_pick_misses_and_false_alarms(tmp_path: Path) -> None:
    image = np.zeros((16, 16, 3), np.uint8)
    heat = np.zeros((16, 16), np.float32)
    mask = np.zeros((16, 16), bool)
    mask[4:8, 4:8] = True
    items = [
        ("good_low", image, heat, None, 0.1, 0),
        ("good_high", image, heat, None, 0.9, 0),
        ("bad_low", image, heat, mask, 0.2, 1),
        ("bad_high", image, heat, mask, 0.95, 1),
    ]
    paths = save_worst_overlays(tmp_path, items, k=1)
    names = [p.name for p in paths]
    assert len(names) == 2
    assert "bad_low" in names[0] and "good_high" in names[1]
    assert all(p.read_bytes().startswith(PNG_MAGIC) for p in paths)
