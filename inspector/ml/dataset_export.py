"""Dataset export: retained, labelled frames as the MVTec layout that training reads.

``inspector train``, ``eval`` and ``calibrate`` read this layout (:mod:`inspector.ml.data`);
``inspector dataset export`` writes it.

Layout written to ``out_dir``::

    train/good/<name>.<ext>             sampled good frames and false alarms
    test/good/<name>.<ext>              a seeded held-out share of those
    test/<kind>/<name>.<ext>            confirmed defects and missed defects, by defect kind
    ground_truth/<kind>/<name>_mask.png the retained mask of a confirmed defect
    manifest.json                       where every file came from (written last)

``<name>`` is ``<camera>_<retained seq>_<frame id>``, both ids passed through
:func:`~inspector.runtime.sinks.overlays.safe_name`, so names are unique and safe whatever the
producers sent. Frames keep their retained bytes (a Kafka frame its original payload); a format
the loader does not list (WebP, GIF) is re-encoded as PNG.

Which frames go where:

* good: unlabelled frames the model judged good (the sampled share of good frames) and frames
  labelled ``false_alarm``; unlabelled flagged frames are left out (nobody confirmed them);
* defects: frames labelled ``defect`` or ``missed_defect``, in ``test/<kind>`` where the kind
  is the label's (``defect`` when unset), made a safe folder name (a kind ``good`` becomes
  ``good_defect``, since ``good`` is read as "not anomalous").

Masks: the ground truth of a ``defect`` is the mask the model predicted for it (retained with
the frame), which the operator confirmed as a defect but did not draw. A ``missed_defect`` has
none: the model saw nothing, so it predicted no mask (a frame retained with a mask gets it,
whatever its label). Such images get no ``_mask.png``, which the loader reads as an all-normal
mask: image-level figures (AUROC, F1, calibration) are exact, pixel-level ones count those
images' defect pixels as normal. The summary and the manifest say how many defects lack a mask.

Every exported frame is marked exported in the index, so the daemon may evict it from then on.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from inspector.errors import ConfigError, DatasetError, ImageDecodeError
from inspector.imaging import read_image, write_png
from inspector.ml.data import IMAGE_SUFFIXES
from inspector.runtime.retention.reader import INDEX_NAME, RetentionIndex, utc_now
from inspector.runtime.retention.records import RetainedFrame, utc_text
from inspector.runtime.sinks.overlays import safe_name

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
#: The kind folder of a defect label without a kind.
DEFAULT_KIND = "defect"
#: Share of the good frames held out in ``test/good`` (``inspector dataset --held-out-share``).
DEFAULT_HELD_OUT_SHARE = 0.2


@dataclass(frozen=True)
class ExportedFile:
    """One image of the export, as the manifest lists it.

    Attributes:
        path: The image, relative to the export folder.
        split: ``train`` or ``test``.
        defect: ``good`` or the defect kind folder.
        mask: Its ground-truth mask, relative to the export folder; ``None``: none.
        frame_id: The producer's frame id.
        camera_id: Camera that took it.
        label: The operator's label; ``None`` for an unlabelled sampled good frame.
        label_kind: The label's defect kind as given.
        retained_file: The frame's file in the retention folder (relative to it).
        seq: The frame's retained order in the index.
        score: The model's normalised score when it was retained.
        is_anomalous: Whether the model flagged it.
    """

    path: str
    split: Literal["train", "test"]
    defect: str
    mask: str | None
    frame_id: str
    camera_id: str
    label: str | None
    label_kind: str | None
    retained_file: str
    seq: int
    score: float
    is_anomalous: bool


@dataclass(frozen=True)
class ExportSummary:
    """What :func:`export_dataset` wrote.

    Attributes:
        out_dir: The dataset folder.
        manifest: Its manifest file.
        train_good: Images in ``train/good``.
        test_good: Images in ``test/good`` (held out).
        test_defects: Images per ``test/<kind>`` folder.
        masks: Ground-truth masks written.
        defects_without_mask: Defect images without a mask (missed defects, mostly).
        skipped: Frames evicted or unreadable while exporting (left out).
        files: Every exported image.
    """

    out_dir: Path
    manifest: Path
    train_good: int
    test_good: int
    test_defects: dict[str, int]
    masks: int
    defects_without_mask: int
    skipped: int
    files: tuple[ExportedFile, ...]


def kind_folder(kind: str | None) -> str:
    """The ``test/`` folder of a defect kind: a safe name, never ``good``."""
    folder = safe_name(kind) if kind else DEFAULT_KIND
    return f"{folder}_defect" if folder.lower() == "good" else folder


def held_out(seqs: list[int], share: float, seed: int) -> set[int]:
    """A seeded share of ``seqs`` for ``test/good``; at least one stays for training.

    With two or more frames and a share above 0, at least one is held out.
    """
    n = len(seqs)
    if n < 2 or share <= 0:
        return set()
    count = min(n - 1, max(1, round(n * share)))
    return set(random.Random(seed).sample(sorted(seqs), count))


def export_dataset(
    retention_dir: Path,
    out_dir: Path,
    camera: str | None = None,
    since: datetime | None = None,
    held_out_share: float = DEFAULT_HELD_OUT_SHARE,
    seed: int = 0,
    *,
    clock: Callable[[], datetime] = utc_now,
) -> ExportSummary:
    """Write retained, labelled frames as an MVTec-layout dataset (see the module).

    May run while the daemon keeps retaining into ``retention_dir``: it only reads files and
    sets ``exported_at``; a frame evicted meanwhile is skipped.

    Args:
        retention_dir: The daemon's ``retention.path``.
        out_dir: Where to write; must not exist or be empty.
        camera: Only this camera's frames.
        since: Only frames retained at or after this time (naive: UTC).
        held_out_share: Share of good frames put in ``test/good``, 0 to below 1.
        seed: Seed of that choice (same seed, same frames: same split).
        clock: Current UTC time (the manifest, ``exported_at``).

    Returns:
        What was written.

    Raises:
        ConfigError: A share out of range or an ``out_dir`` that holds files.
        DatasetError: No retention index there, nothing to export, or the index cannot be
            updated.
    """
    if not (math.isfinite(held_out_share) and 0.0 <= held_out_share < 1.0):
        raise ConfigError(f"held_out_share must be at least 0 and below 1, got {held_out_share}")
    if not (retention_dir / INDEX_NAME).is_file():
        raise DatasetError(f"no retention index in {retention_dir} (retention.path expected)")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigError(f"{out_dir} is not an empty folder; export into a new one")
    if since is not None and since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    index = RetentionIndex(retention_dir, clock=clock)
    try:
        frames = index.frames(camera, since)
        goods = [f for f in frames if f.label == "false_alarm" or _unlabelled_good(f)]
        defects = [f for f in frames if f.label in ("defect", "missed_defect")]
        if not goods and not defects:
            raise DatasetError(
                f"nothing to export from {retention_dir}: no sampled good or labelled frames"
                + (f" of camera {camera!r}" if camera is not None else "")
                + (f" since {utc_text(since)}" if since is not None else "")
            )
        for folder in ("train/good", "test/good"):
            (out_dir / folder).mkdir(parents=True, exist_ok=True)
        test_seqs = held_out([f.seq for f in goods], held_out_share, seed)
        exported: list[ExportedFile] = []
        skipped = 0
        for frame in goods + defects:
            entry = _export_one(index, frame, out_dir, test_seqs)
            if entry is None:
                skipped += 1
            else:
                exported.append(entry)
        summary = _summary(out_dir, exported, skipped)
        _write_manifest(summary, retention_dir, camera, since, held_out_share, seed, clock())
        try:
            index.mark_exported(e.seq for e in exported)
        except sqlite3.Error as exc:
            raise DatasetError(f"exported, but the index in {retention_dir}: {exc}") from exc
        return summary
    finally:
        index.close()


def _unlabelled_good(frame: RetainedFrame) -> bool:
    return frame.label is None and not frame.is_anomalous


def _export_one(
    index: RetentionIndex, frame: RetainedFrame, out_dir: Path, test_seqs: set[int]
) -> ExportedFile | None:
    """Copy one frame (and its mask) into place; ``None`` if its files are gone."""
    source = index.file_path(frame.frame_file)
    if source is None:  # evicted since the query
        return None
    is_defect = frame.label in ("defect", "missed_defect")
    defect = kind_folder(frame.label_kind) if is_defect else "good"
    split: Literal["train", "test"] = "test" if is_defect or frame.seq in test_seqs else "train"
    stem = f"{safe_name(frame.camera_id)}_{frame.seq:08d}_{safe_name(frame.frame_id)}"
    suffix = source.suffix.lower()
    target = out_dir / split / defect / (stem + (suffix if suffix in IMAGE_SUFFIXES else ".png"))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if suffix in IMAGE_SUFFIXES:
            shutil.copyfile(source, target)
        else:  # WebP, GIF: not in the loader's list
            write_png(target, read_image(source))
        mask_path = index.file_path(frame.mask_file) if is_defect else None
        mask = None
        if mask_path is not None:
            mask_target = out_dir / "ground_truth" / defect / f"{stem}_mask.png"
            mask_target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mask_path, mask_target)
            mask = mask_target.relative_to(out_dir).as_posix()
    except (OSError, ImageDecodeError):  # evicted while copying, or unreadable
        target.unlink(missing_ok=True)
        return None
    return ExportedFile(
        path=target.relative_to(out_dir).as_posix(),
        split=split,
        defect=defect,
        mask=mask,
        frame_id=frame.frame_id,
        camera_id=frame.camera_id,
        label=frame.label,
        label_kind=frame.label_kind,
        retained_file=frame.frame_file,
        seq=frame.seq,
        score=frame.score,
        is_anomalous=frame.is_anomalous,
    )


def _summary(out_dir: Path, files: list[ExportedFile], skipped: int) -> ExportSummary:
    defects: dict[str, int] = {}
    for f in files:
        if f.defect != "good":
            defects[f.defect] = defects.get(f.defect, 0) + 1
    return ExportSummary(
        out_dir=out_dir,
        manifest=out_dir / MANIFEST_NAME,
        train_good=sum(f.split == "train" for f in files),
        test_good=sum(f.split == "test" and f.defect == "good" for f in files),
        test_defects=dict(sorted(defects.items())),
        masks=sum(f.mask is not None for f in files),
        defects_without_mask=sum(f.defect != "good" and f.mask is None for f in files),
        skipped=skipped,
        files=tuple(files),
    )


def _write_manifest(
    summary: ExportSummary,
    retention_dir: Path,
    camera: str | None,
    since: datetime | None,
    held_out_share: float,
    seed: int,
    now: datetime,
) -> None:
    # Written last: a folder with a manifest is a finished export.
    manifest = {
        "version": MANIFEST_VERSION,
        "created_at": utc_text(now),
        "retention_dir": str(retention_dir),
        "filters": {"camera": camera, "since": utc_text(since) if since else None},
        "held_out_share": held_out_share,
        "seed": seed,
        "counts": {
            "train_good": summary.train_good,
            "test_good": summary.test_good,
            "test_defects": summary.test_defects,
            "masks": summary.masks,
            "defects_without_mask": summary.defects_without_mask,
            "skipped": summary.skipped,
        },
        "masks_note": "ground-truth masks are the model's predicted masks of confirmed defects; "
        "missed defects have none (read as all-normal: pixel metrics are indicative only)",
        "files": [asdict(f) for f in summary.files],
    }
    text = json.dumps(manifest, indent=2, ensure_ascii=True) + "\n"
    summary.manifest.write_text(text, encoding="utf-8")


__all__ = [
    "DEFAULT_HELD_OUT_SHARE",
    "DEFAULT_KIND",
    "MANIFEST_NAME",
    "ExportSummary",
    "ExportedFile",
    "export_dataset",
    "held_out",
    "kind_folder",
]
