"""Seeded synthetic datasets in MVTec AD layout, for tests and the demo.

Tests and the demo need data with known answers and no download.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import ConfigError, DatasetError
from inspector.tools.synth.surfaces import (
    CATEGORIES,
    DEFECT_KINDS,
    MIN_IMAGE_SIZE,
    U8,
    add_defect,
    check_choice,
    render_good,
)

_VERSION = 1
_OWNED_NAME = re.compile(r"^\d+(_mask)?\.png$")


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_dataset` wrote."""

    root: Path
    category: str
    image_size: int
    n_train: int
    n_test_good: int
    n_test_defect: dict[str, int]


def _prune(folder: Path, keep: set[Path]) -> None:
    """Remove numbered PNGs left by an earlier, larger run; leave every other file alone."""
    if folder.is_dir():
        for f in folder.iterdir():
            if f.is_file() and _OWNED_NAME.match(f.name) and f not in keep:
                f.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def generate_dataset(
    out: Path,
    *,
    category: str = "metal",
    seed: int = 0,
    image_size: int = 256,
    n_train: int = 60,
    n_test_good: int = 20,
    n_test_per_defect: int = 6,
    defect_kinds: Sequence[str] = DEFECT_KINDS,
) -> SynthSummary:
    """Write a synthetic dataset in MVTec AD layout.

    Writes ``train/good/000.png``, ``test/good/000.png``, ``test/<kind>/000.png`` with
    ``ground_truth/<kind>/000_mask.png``, and ``synth.json`` with the parameters. The same
    arguments give byte-identical files. Rerunning into a folder overwrites what this function
    owns (numbered PNGs in those folders, ``synth.json``) and leaves any other file alone.

    Args:
        out: Dataset root; created if missing.
        category: Surface texture, one of :data:`CATEGORIES`.
        seed: Non-negative seed for every random choice.
        image_size: Height and width of every image (at least 32).
        n_train: Number of good training images (at least 1).
        n_test_good: Number of good test images.
        n_test_per_defect: Number of test images for each defect kind.
        defect_kinds: Defect kinds to include, each one of :data:`DEFECT_KINDS`.

    Returns:
        A :class:`SynthSummary` of what was written.

    Raises:
        ConfigError: Unknown category or defect kind, or an out-of-range number.
        DatasetError: ``out`` is not a folder, or a file cannot be written.
    """
    check_choice("category", category, CATEGORIES)
    # A bare string is one kind, not a sequence of one-letter kinds.
    kinds = (defect_kinds,) if isinstance(defect_kinds, str) else tuple(dict.fromkeys(defect_kinds))
    for kind in kinds:
        check_choice("defect kind", kind, DEFECT_KINDS)
    if image_size < MIN_IMAGE_SIZE or seed < 0:
        raise ConfigError(f"need image_size >= {MIN_IMAGE_SIZE} and seed >= 0")
    if n_train < 1 or n_test_good < 0 or n_test_per_defect < 0:
        raise ConfigError("need n_train >= 1, n_test_good >= 0 and n_test_per_defect >= 0")
    out = Path(out)
    written: set[Path] = set()

    def save(folder: Path, i: int, count: int, image: U8, suffix: str = "") -> None:
        path = folder / f"{i:0{max(3, len(str(count - 1)))}d}{suffix}.png"
        ok, buf = cv2.imencode(".png", image)
        try:
            if not ok:
                raise OSError("PNG encoding failed")
            folder.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buf.tobytes())
        except OSError as exc:
            raise DatasetError(f"cannot write {path}: {exc}") from exc
        written.add(path)

    # One generator per file and stable streams per split, so changing a count or the kinds
    # leaves every other image as it was.
    for i in range(n_train):
        rng = np.random.default_rng([seed, 0, i])
        save(out / "train" / "good", i, n_train, render_good(rng, image_size, category))
    for i in range(n_test_good):
        rng = np.random.default_rng([seed, 1, i])
        save(out / "test" / "good", i, n_test_good, render_good(rng, image_size, category))
    for kind in kinds:
        for i in range(n_test_per_defect):
            rng = np.random.default_rng([seed, 10 + DEFECT_KINDS.index(kind), i])
            bad, mask = add_defect(rng, render_good(rng, image_size, category), kind)
            save(out / "test" / kind, i, n_test_per_defect, bad)
            save(out / "ground_truth" / kind, i, n_test_per_defect, mask, "_mask")
    for split, kind in [("train", "good"), ("test", "good")] + [
        (split, kind) for split in ("test", "ground_truth") for kind in DEFECT_KINDS
    ]:
        _prune(out / split / kind, written)
    params: dict[str, object] = {"generator": "inspector.synth", "version": _VERSION}
    params |= {"seed": seed, "category": category, "image_size": image_size, "n_train": n_train}
    params |= {"n_test_good": n_test_good, "n_test_per_defect": n_test_per_defect}
    params["defect_kinds"] = list(kinds)
    try:
        (out / "synth.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise DatasetError(f"cannot write {out / 'synth.json'}: {exc}") from exc
    counts = {kind: n_test_per_defect for kind in kinds}
    return SynthSummary(out, category, image_size, n_train, n_test_good, counts)
