from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.errors import ConfigError
from inspector.tools.synth import (
    CATEGORIES,
    DEFECT_KINDS,
    add_defect,
    generate_dataset,
    render_good,
)

SIZE = 64


def _read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    assert image is not None, path
    return np.asarray(image)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_and_counts(tmp_path: Path) -> None:
    summary = generate_dataset(
        tmp_path,
        category="tile",
        seed=3,
        image_size=SIZE,
        n_train=4,
        n_test_good=2,
        n_test_per_defect=2,
        defect_kinds=("scratch", "stain"),
    )
    assert summary.root == tmp_path
    assert (summary.category, summary.image_size) == ("tile", SIZE)
    assert (summary.n_train, summary.n_test_good) == (4, 2)
    assert summary.n_test_defect == {"scratch": 2, "stain": 2}
    assert sorted(p.name for p in (tmp_path / "train" / "good").iterdir()) == [
        "000.png",
        "001.png",
        "002.png",
        "003.png",
    ]
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["good", "scratch", "stain"]
    assert len(list((tmp_path / "test" / "good").glob("*.png"))) == 2
    for kind in ("scratch", "stain"):
        images = sorted(p.stem for p in (tmp_path / "test" / kind).glob("*.png"))
        masks = sorted(p.stem for p in (tmp_path / "ground_truth" / kind).glob("*.png"))
        assert images == ["000", "001"]
        assert masks == [f"{stem}_mask" for stem in images]
        for stem in images:
            image = _read(tmp_path / "test" / kind / f"{stem}.png")
            mask = _read(tmp_path / "ground_truth" / kind / f"{stem}_mask.png")
            assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
            assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8
            assert set(np.unique(mask)) == {0, 255}
    params = json.loads((tmp_path / "synth.json").read_text())
    assert params["seed"] == 3 and params["category"] == "tile"
    assert params["image_size"] == SIZE and params["n_train"] == 4
    assert params["defect_kinds"] == ["scratch", "stain"]


def test_same_seed_gives_identical_files_and_other_seeds_differ(tmp_path: Path) -> None:
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate_dataset(
            tmp_path / name,
            seed=seed,
            image_size=SIZE,
            n_train=2,
            n_test_good=1,
            n_test_per_defect=1,
        )
    a, b, c = (_files(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    pngs = [name for name in a if name.endswith(".png")]
    assert all(a[name] != c[name] for name in pngs)


def test_rerun_is_idempotent_and_keeps_unrelated_files(tmp_path: Path) -> None:
    generate_dataset(tmp_path, image_size=SIZE, n_train=3, n_test_good=1, n_test_per_defect=1)
    (tmp_path / "notes.txt").write_text("keep me")
    (tmp_path / "train" / "good" / "keep.png").write_bytes(b"not ours")
    first = _files(tmp_path)
    generate_dataset(tmp_path, image_size=SIZE, n_train=3, n_test_good=1, n_test_per_defect=1)
    assert _files(tmp_path) == first
    # A smaller run removes its own numbered leftovers, so counts match synth.json again.
    generate_dataset(
        tmp_path,
        image_size=SIZE,
        n_train=2,
        n_test_good=1,
        n_test_per_defect=1,
        defect_kinds=("crack",),
    )
    assert sorted(p.name for p in (tmp_path / "train" / "good").iterdir()) == [
        "000.png",
        "001.png",
        "keep.png",
    ]
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == ["crack", "good"]
    assert (tmp_path / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("category", CATEGORIES)
def test_good_images_vary_between_each_other(category: str) -> None:
    rng = np.random.default_rng(0)
    images = [render_good(rng, SIZE, category).astype(np.float32) for _ in range(3)]
    for image in images:
        assert image.shape == (SIZE, SIZE, 3)
        assert image.std() > 5.0  # a texture, not a flat colour
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert np.abs(images[i] - images[j]).mean() > 3.0


@pytest.mark.parametrize("kind", DEFECT_KINDS)
@pytest.mark.parametrize("category", CATEGORIES)
def test_defect_is_visible_inside_mask_only(kind: str, category: str) -> None:
    rng = np.random.default_rng(11)
    good = render_good(rng, 96, category)
    bad, mask = add_defect(rng, good, kind)
    assert bad.shape == good.shape and bad.dtype == np.uint8
    assert mask.shape == good.shape[:2] and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 255}
    inside = mask > 0
    assert 0.003 <= inside.mean() <= 0.25
    diff = np.abs(bad.astype(np.int16) - good.astype(np.int16)).max(axis=2)
    assert diff[inside].mean() > 25.0
    assert not diff[~inside].any()


def test_add_defect_does_not_mutate_input() -> None:
    good = render_good(np.random.default_rng(1), SIZE)
    before = good.copy()
    for kind in DEFECT_KINDS:
        add_defect(np.random.default_rng(2), good, kind)
    np.testing.assert_array_equal(good, before)


@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    kind=st.sampled_from(DEFECT_KINDS),
    category=st.sampled_from(CATEGORIES),
    size=st.integers(min_value=32, max_value=96),
)
@settings(max_examples=40, deadline=None)
def test_any_defect_is_nonempty_and_confined_to_its_mask(
    seed: int, kind: str, category: str, size: int
) -> None:
    rng = np.random.default_rng(seed)
    good = render_good(rng, size, category)
    bad, mask = add_defect(rng, good, kind)
    inside = mask > 0
    assert inside.sum() >= 0.003 * size * size
    assert np.array_equal(bad[~inside], good[~inside])
    assert np.any(bad[inside] != good[inside])


def test_invalid_arguments_raise_config_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="metal"):
        render_good(rng, SIZE, "plastic")
    with pytest.raises(ConfigError, match="scratch"):
        add_defect(rng, render_good(rng, SIZE), "dent")
    with pytest.raises(ConfigError):
        render_good(rng, 16)
    with pytest.raises(ConfigError):
        add_defect(rng, np.zeros((SIZE, SIZE), np.uint8), "spot")
    with pytest.raises(ConfigError, match="wood"):
        generate_dataset(tmp_path, category="glass", image_size=SIZE)
    with pytest.raises(ConfigError, match="crack"):
        generate_dataset(tmp_path, image_size=SIZE, defect_kinds=("scratch", "bubble"))
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path, image_size=31)
    with pytest.raises(ConfigError):
        generate_dataset(tmp_path, image_size=SIZE, n_train=0)
    assert not any(tmp_path.iterdir())  # nothing written before the arguments are checked
