"""The high-resolution line: frame sizes, small defects with exact full-frame masks, caching."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.errors import ConfigError
from inspector.tools.synth import DEFECT_KINDS
from inspector.tools.synth.highres import (
    PARAMS_FILE,
    add_small_defect,
    ensure_highres_line,
    generate_highres_line,
    render_frame,
)

# Small frames keep the test fast; the code paths are those of 1024 x 768.
W, H, PATCH = 200, 136, 64
SMALL = {"width": W, "height": H, "n_train": 2, "n_test_good": 1, "n_test_per_defect": 1}


def _read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return np.asarray(image)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))}


def test_layout_sizes_and_full_frame_masks(tmp_path: Path) -> None:
    summary = generate_highres_line(tmp_path, seed=4, patch=PATCH, **SMALL)
    assert (summary.width, summary.height, summary.n_train) == (W, H, 2)
    assert summary.n_test_defect == {kind: 1 for kind in DEFECT_KINDS}
    names = set(_files(tmp_path))
    expected = {"train/good/000.png", "train/good/001.png", "test/good/000.png"}
    expected |= {f"test/{k}/000.png" for k in DEFECT_KINDS}
    expected |= {f"ground_truth/{k}/000_mask.png" for k in DEFECT_KINDS}
    assert names == expected
    for name in names:
        image = _read(tmp_path / name)
        assert image.shape == ((H, W) if "_mask" in name else (H, W, 3)), name
    params = json.loads((tmp_path / PARAMS_FILE).read_text())
    assert (params["width"], params["height"], params["patch"], params["seed"]) == (W, H, PATCH, 4)


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_the_mask_is_exactly_where_pixels_changed(tmp_path: Path, kind: str) -> None:
    generate_highres_line(tmp_path, seed=4, patch=PATCH, **SMALL)
    bad = _read(tmp_path / "test" / kind / "000.png")
    mask = _read(tmp_path / "ground_truth" / kind / "000_mask.png")
    # The file's own stream, as documented: [seed, 100 + 2 + kind index, i].
    rng = np.random.default_rng([4, 102 + DEFECT_KINDS.index(kind), 0])
    good = render_frame(rng, W, H)
    inside = mask > 0
    assert set(np.unique(mask)) == {0, 255}
    changed = np.abs(bad.astype(np.int16) - good.astype(np.int16)).max(axis=2) > 0
    assert not changed[~inside].any()  # nothing outside the mask changed
    assert changed[inside].mean() > 0.9  # and (nearly) every mask pixel did
    ys, xs = np.nonzero(inside)
    # A small defect, within one patch-sized square of the frame.
    assert np.ptp(ys) < PATCH and np.ptp(xs) < PATCH
    assert inside.sum() < 0.05 * W * H


def test_add_small_defect_paints_inside_its_square_only() -> None:
    frame = render_frame(np.random.default_rng(0), W, H)
    before = frame.copy()
    bad, mask, (x, y) = add_small_defect(np.random.default_rng(1), frame, "spot", PATCH)
    np.testing.assert_array_equal(frame, before)  # the input is not modified
    outside = np.ones((H, W), bool)
    outside[y : y + PATCH, x : x + PATCH] = False
    assert not mask[outside].any()
    assert np.array_equal(bad[mask == 0], frame[mask == 0])
    assert mask.any()


def test_same_seed_same_files_other_seed_differs(tmp_path: Path) -> None:
    a = _files(generate_highres_line(tmp_path / "a", seed=1, patch=PATCH, **SMALL).root)
    b = _files(generate_highres_line(tmp_path / "b", seed=1, patch=PATCH, **SMALL).root)
    c = _files(generate_highres_line(tmp_path / "c", seed=2, patch=PATCH, **SMALL).root)
    assert a == b
    assert all(a[name] != c[name] for name in a)


def test_generated_once_then_reused_until_the_parameters_change(tmp_path: Path) -> None:
    _, generated = ensure_highres_line(tmp_path, patch=PATCH, **SMALL)
    assert generated
    stamp = (tmp_path / "train" / "good" / "000.png").stat().st_mtime_ns
    summary, generated = ensure_highres_line(tmp_path, patch=PATCH, **SMALL)
    assert not generated and summary.width == W
    assert (tmp_path / "train" / "good" / "000.png").stat().st_mtime_ns == stamp
    _, generated = ensure_highres_line(tmp_path, patch=PATCH, **SMALL | {"width": W + 32})
    assert generated
    assert _read(tmp_path / "train" / "good" / "000.png").shape == (H, W + 32, 3)


def test_rejects_nonsense(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="patch"):
        generate_highres_line(tmp_path, width=64, height=48, patch=96)
    with pytest.raises(ConfigError, match="n_train"):
        generate_highres_line(tmp_path, n_train=1)
