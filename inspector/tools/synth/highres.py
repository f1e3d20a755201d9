"""A high-resolution synthetic line: large metal frames with small defects, for tiled inspection.

A line camera's frame is far larger than the model's input; resized to it, a defect a few
dozen pixels wide shrinks to a few pixels and is lost. This line shows that case: frames of
``width`` x ``height`` (1024 x 768 by default) cut from one large sheet of the synthetic
``metal`` surface at the same texture scale as the 256 px line (its features are sized in
pixels), each defective frame carrying one defect painted into a ``patch`` x ``patch`` square
(15-30 px defects at the default 96), with its mask in full-frame pixels.

Written in MVTec AD layout (``train/good``, ``test/good``, ``test/<kind>``,
``ground_truth/<kind>/<stem>_mask.png``) plus ``highres.json`` with the parameters, so
:func:`ensure_highres_line` generates it once and reuses it while the parameters match.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import ConfigError, DatasetError
from inspector.tools.synth.surfaces import DEFECT_KINDS, MIN_IMAGE_SIZE, U8, add_defect, render_good

#: The file holding the parameters a line was generated with.
PARAMS_FILE = "highres.json"
_VERSION = 1
#: Kept apart from :mod:`inspector.tools.synth.dataset`'s streams (0, 1, 10 + kind), so the
#: same seed does not start both lines' frames from the same random state.
_STREAM = 100


@dataclass(frozen=True)
class HighresSummary:
    """What :func:`generate_highres_line` wrote (or found, for :func:`ensure_highres_line`)."""

    root: Path
    width: int
    height: int
    n_train: int
    n_test_good: int
    n_test_defect: dict[str, int]


def render_frame(rng: np.random.Generator, width: int, height: int) -> U8:
    """One good ``(height, width, 3)`` frame: the top-left of a square metal sheet.

    The sheet is rendered at the frame's longer side, so the texture keeps its pixel scale and
    the frame is a larger view of the same surface, not a stretched one.
    """
    sheet = render_good(rng, max(width, height), "metal")
    return np.ascontiguousarray(sheet[:height, :width])


def add_small_defect(
    rng: np.random.Generator, frame: U8, kind: str, patch: int
) -> tuple[U8, U8, tuple[int, int]]:
    """Paint one defect of ``kind`` into a random ``patch`` square of a copy of ``frame``.

    Returns:
        ``(defective frame, full-frame mask, (x, y) of the square)``; as with
        :func:`~inspector.tools.synth.surfaces.add_defect`, only pixels under the mask change.
    """
    height, width = frame.shape[:2]
    y = int(rng.integers(0, height - patch + 1))
    x = int(rng.integers(0, width - patch + 1))
    bad_patch, patch_mask = add_defect(rng, frame[y : y + patch, x : x + patch], kind)
    bad = frame.copy()
    bad[y : y + patch, x : x + patch] = bad_patch
    mask = np.zeros((height, width), np.uint8)
    mask[y : y + patch, x : x + patch] = patch_mask
    return bad, mask, (x, y)


def _params(
    width: int,
    height: int,
    seed: int,
    n_train: int,
    n_test_good: int,
    n_per_defect: int,
    patch: int,
) -> dict[str, object]:
    return {
        "generator": "inspector.synth.highres",
        "version": _VERSION,
        "category": "metal",
        "width": width,
        "height": height,
        "seed": seed,
        "n_train": n_train,
        "n_test_good": n_test_good,
        "n_test_per_defect": n_per_defect,
        "patch": patch,
        "defect_kinds": list(DEFECT_KINDS),
    }


def write_png(path: Path, image: U8) -> None:
    """Write ``image`` as PNG, creating the folder; :class:`DatasetError` naming the path."""
    ok, buf = cv2.imencode(".png", image)
    try:
        if not ok:  # pragma: no cover - OpenCV encodes any 8-bit image as PNG
            raise OSError("PNG encoding failed")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.tobytes())
    except OSError as exc:
        raise DatasetError(f"cannot write {path}: {exc}") from exc


def generate_highres_line(
    out: Path,
    *,
    width: int = 1024,
    height: int = 768,
    seed: int = 0,
    n_train: int = 16,
    n_test_good: int = 6,
    n_test_per_defect: int = 2,
    patch: int = 96,
) -> HighresSummary:
    """Write the high-resolution line in MVTec AD layout, and ``highres.json``.

    Every file has its own random stream (``[seed, 100 + split, i]``; split 0 train, 1 test
    good, 2 + kind index the defects), so the same arguments give byte-identical files and
    changing a count leaves the other files as they were.

    Args:
        out: Dataset root; created if missing.
        width: Frame width in pixels.
        height: Frame height in pixels.
        seed: Non-negative seed.
        n_train: Good training frames (at least 2: training holds some out for calibration).
        n_test_good: Good test frames.
        n_test_per_defect: Test frames per defect kind (one defect each).
        patch: Side of the square each defect is painted in (32 up to the frame's shorter side).

    Returns:
        What was written.

    Raises:
        ConfigError: An out-of-range size, count or seed.
        DatasetError: A file cannot be written.
    """
    if seed < 0 or n_train < 2 or n_test_good < 1 or n_test_per_defect < 1:
        raise ConfigError(
            "need seed >= 0, n_train >= 2, n_test_good >= 1 and n_test_per_defect >= 1"
        )
    if not MIN_IMAGE_SIZE <= patch <= min(width, height):
        raise ConfigError(
            f"need {MIN_IMAGE_SIZE} <= patch <= the frame's shorter side, got patch {patch} for "
            f"{width}x{height}"
        )
    out = Path(out)
    for i in range(n_train):
        rng = np.random.default_rng([seed, _STREAM, i])
        write_png(out / "train" / "good" / f"{i:03d}.png", render_frame(rng, width, height))
    for i in range(n_test_good):
        rng = np.random.default_rng([seed, _STREAM + 1, i])
        write_png(out / "test" / "good" / f"{i:03d}.png", render_frame(rng, width, height))
    for k, kind in enumerate(DEFECT_KINDS):
        for i in range(n_test_per_defect):
            rng = np.random.default_rng([seed, _STREAM + 2 + k, i])
            bad, mask, _ = add_small_defect(rng, render_frame(rng, width, height), kind, patch)
            write_png(out / "test" / kind / f"{i:03d}.png", bad)
            write_png(out / "ground_truth" / kind / f"{i:03d}_mask.png", mask)
    params = _params(width, height, seed, n_train, n_test_good, n_test_per_defect, patch)
    try:
        (out / PARAMS_FILE).write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    except OSError as exc:
        raise DatasetError(f"cannot write {out / PARAMS_FILE}: {exc}") from exc
    counts = {kind: n_test_per_defect for kind in DEFECT_KINDS}
    return HighresSummary(out, width, height, n_train, n_test_good, counts)


def ensure_highres_line(
    out: Path,
    *,
    width: int = 1024,
    height: int = 768,
    seed: int = 0,
    n_train: int = 16,
    n_test_good: int = 6,
    n_test_per_defect: int = 2,
    patch: int = 96,
) -> tuple[HighresSummary, bool]:
    """The line in ``out``, generated by :func:`generate_highres_line` unless already there.

    Reused when ``highres.json`` records exactly these parameters (a folder from other ones,
    e.g. another size, is regenerated: its frames would not fit the model trained on it).

    Returns:
        ``(summary, generated)``: ``generated`` is false when the line was reused.
    """
    wanted = _params(width, height, seed, n_train, n_test_good, n_test_per_defect, patch)
    try:
        found = json.loads((Path(out) / PARAMS_FILE).read_text())
    except (OSError, ValueError):
        found = None
    if found == wanted:
        counts = {kind: n_test_per_defect for kind in DEFECT_KINDS}
        return HighresSummary(Path(out), width, height, n_train, n_test_good, counts), False
    summary = generate_highres_line(
        out,
        width=width,
        height=height,
        seed=seed,
        n_train=n_train,
        n_test_good=n_test_good,
        n_test_per_defect=n_test_per_defect,
        patch=patch,
    )
    return summary, True
