from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import make_frame, make_result

from inspector.errors import ConfigError, DatasetError
from inspector.ml.data import labelled_items, load_items, training_items
from inspector.ml.dataset_export import (
    MANIFEST_NAME,
    ExportSummary,
    export_dataset,
    held_out,
    kind_folder,
)
from inspector.runtime.records import Inspection, RawMessage
from inspector.runtime.retention.encode import item_from_inspection
from inspector.runtime.retention.records import Label
from inspector.runtime.retention.store import RetentionStore

H, W = 32, 48


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


def _inspection(
    frame_id: str, camera_id: str, *, flagged: bool, raw: bytes | None = None
) -> Inspection:
    rng = np.random.default_rng(zlib.crc32(frame_id.encode()))
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    frame = make_frame(image, frame_id, camera_id)
    if raw is not None:
        frame = dataclasses.replace(frame, raw=RawMessage(raw, None, (), "frames", 0, 1))
    mask = np.zeros((H, W), bool)
    mask[8:20, 10:30] = True
    return Inspection(
        make_result(frame_id, camera_id, anomalous=flagged, image_size=(H, W)),
        frame,
        rng.random((8, 8), dtype=np.float32) if flagged else None,
        mask if flagged else None,
    )


#: frame id, camera, flagged by the model, label, kind.
PLAN: list[tuple[str, str, bool, Label | None, str | None]] = [
    *[(f"good-{i}", "a" if i % 2 else "b", False, None, None) for i in range(8)],
    ("fa-1", "a", True, "false_alarm", None),
    ("fa-2", "b", True, "false_alarm", None),
    ("scratch-1", "a", True, "defect", "scratch"),
    ("plain-defect", "b", True, "defect", None),
    ("odd-kind", "a", True, "defect", "good"),
    ("../../escape", "a", True, "defect", "../../evil kind"),
    ("missed-1", "b", False, "missed_defect", "dent"),
    ("unreviewed", "a", True, None, None),  # flagged, nobody confirmed it: left out
]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def retention(tmp_path: Path, clock: Clock) -> Iterator[Path]:
    """A retention folder holding PLAN, one minute apart, plus a WebP Kafka false alarm."""
    root = tmp_path / "retention"
    store = RetentionStore(root, max_bytes=10**9, clock=clock)
    try:
        for frame_id, camera, flagged, label, kind in PLAN:
            store.retain(
                item_from_inspection(_inspection(frame_id, camera, flagged=flagged), "png")
            )
            if label is not None:
                store.label(frame_id, label, kind)
            clock.now += timedelta(minutes=1)
        probe = _inspection("webp-1", "b", flagged=True)
        ok, webp = cv2.imencode(".webp", np.asarray(probe.frame.image))
        assert ok
        store.retain(
            item_from_inspection(
                _inspection("webp-1", "b", flagged=True, raw=webp.tobytes()), "png"
            )
        )
        store.label("webp-1", "false_alarm")
    finally:
        store.close()
    yield root


def _manifest(summary: ExportSummary) -> dict[str, object]:
    assert summary.manifest == summary.out_dir / MANIFEST_NAME
    data = json.loads(summary.manifest.read_text())
    assert isinstance(data, dict)
    return data


def test_the_export_is_a_dataset_the_loader_reads(retention: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    summary = export_dataset(retention, out, held_out_share=0.25, seed=3)

    # 8 sampled goods + 3 false alarms (one a WebP), 25 % of those held out.
    assert summary.train_good + summary.test_good == 11 and summary.test_good == 3
    assert summary.test_defects == {
        "_.._evil_kind": 1,  # a safe name: no separator, no leading dot
        "defect": 1,
        "dent": 1,
        "good_defect": 1,
        "scratch": 1,
    }
    assert summary.masks == 4 and summary.defects_without_mask == 1  # the missed defect
    assert summary.skipped == 0

    train = training_items(out)
    assert len(train) == summary.train_good
    test = labelled_items(out, "test")
    assert sorted(i.label for i in test) == [0] * 3 + [1] * 5
    by_defect = {i.defect: i for i in test if i.label == 1}
    assert by_defect["dent"].mask_path is None  # missed: no predicted mask
    assert all(by_defect[k].mask_path is not None for k in by_defect if k != "dent")
    loaded = load_items(test, (64, 64), with_masks=True)
    assert loaded.skipped == [] and len(loaded.items) == len(test)
    assert loaded.masks is not None
    for item, mask in zip(loaded.items, loaded.masks, strict=True):
        assert bool(mask.any()) == (item.mask_path is not None)
    assert load_items(train, (64, 64)).skipped == []

    # Nothing was written outside the folder, whatever the ids and kinds said.
    assert all(p.resolve().is_relative_to(out.resolve()) for p in out.rglob("*"))
    assert not (tmp_path / "evil kind").exists() and not (tmp_path / "escape").exists()


def test_the_manifest_says_where_every_file_came_from(retention: Path, tmp_path: Path) -> None:
    out = tmp_path / "dataset"
    summary = export_dataset(retention, out)
    manifest = _manifest(summary)
    files = manifest["files"]
    assert isinstance(files, list) and len(files) == len(PLAN) - 1 + 1  # - unreviewed + webp
    store = RetentionStore(retention, max_bytes=10**9)
    try:
        for entry in files:
            frame = store.get(entry["frame_id"])
            assert frame is not None
            assert (entry["camera_id"], entry["label"], entry["retained_file"]) == (
                frame.camera_id,
                frame.label,
                frame.frame_file,
            )
            exported = out / entry["path"]
            assert exported.is_file()
            if frame.frame_file.endswith(".png"):  # kept byte for byte
                assert exported.read_bytes() == (retention / frame.frame_file).read_bytes()
            else:  # WebP: re-encoded as PNG for the loader
                assert exported.suffix == ".png" and cv2.imread(str(exported)).shape == (H, W, 3)
            if entry["mask"] is not None:
                assert frame.mask_file is not None
                assert (out / entry["mask"]).read_bytes() == (
                    retention / frame.mask_file
                ).read_bytes()
            assert frame.exported_at is not None  # marked: evictable from now on
        unreviewed = store.get("unreviewed")
        assert unreviewed is not None and unreviewed.exported_at is None
    finally:
        store.close()
    assert "unreviewed" not in {e["frame_id"] for e in files}
    assert manifest["counts"] == {
        "train_good": summary.train_good,
        "test_good": summary.test_good,
        "test_defects": summary.test_defects,
        "masks": 4,
        "defects_without_mask": 1,
        "skipped": 0,
    }


def test_the_held_out_share_is_seeded(retention: Path, tmp_path: Path) -> None:
    def test_goods(out: Path, seed: int, share: float = 0.3) -> list[str]:
        export_dataset(retention, out, held_out_share=share, seed=seed)
        return sorted(p.name for p in (out / "test" / "good").iterdir())

    first = test_goods(tmp_path / "one", seed=5)
    assert first == test_goods(tmp_path / "two", seed=5)
    assert len(first) == round(11 * 0.3)
    assert test_goods(tmp_path / "none", seed=5, share=0.0) == []
    seqs = list(range(1, 21))
    assert held_out(seqs, 0.2, 1) == held_out(list(reversed(seqs)), 0.2, 1)
    assert {frozenset(held_out(seqs, 0.2, s)) for s in range(5)} != {
        frozenset(held_out(seqs, 0.2, 0))
    }
    assert held_out([7], 0.5, 0) == set() and len(held_out([1, 2], 0.9, 0)) == 1


def test_camera_and_since_filters(retention: Path, tmp_path: Path) -> None:
    only_b = export_dataset(retention, tmp_path / "b", camera="b")
    assert {f.camera_id for f in only_b.files} == {"b"}
    since = datetime(2025, 1, 1, 0, 10)  # naive: UTC; frames of minute 10 and later
    late = export_dataset(retention, tmp_path / "late", since=since)
    assert {f.frame_id for f in late.files} == {
        "scratch-1",
        "plain-defect",
        "odd-kind",
        "../../escape",
        "missed-1",
        "webp-1",
    }


def test_a_frame_evicted_meanwhile_is_skipped(retention: Path, tmp_path: Path) -> None:
    store = RetentionStore(retention, max_bytes=10**9)
    try:
        gone = store.get("scratch-1")
        assert gone is not None
    finally:
        store.close()
    (retention / gone.frame_file).unlink()  # the daemon deletes the row, then the files
    summary = export_dataset(retention, tmp_path / "out")
    assert summary.skipped == 1 and "scratch-1" not in {f.frame_id for f in summary.files}
    assert "scratch" not in summary.test_defects


def test_bad_requests_are_refused(retention: Path, tmp_path: Path) -> None:
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("someone's file")
    with pytest.raises(ConfigError, match="not an empty folder"):
        export_dataset(retention, busy)
    for share in (1.0, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="held_out_share"):
            export_dataset(retention, tmp_path / "x", held_out_share=share)
    with pytest.raises(DatasetError, match="no retention index"):
        export_dataset(tmp_path / "nowhere", tmp_path / "x")
    assert not (tmp_path / "nowhere").exists()  # not created by the attempt
    with pytest.raises(DatasetError, match="nothing to export"):
        export_dataset(retention, tmp_path / "x", camera="no-such-camera")


def test_kind_folders_are_safe_names() -> None:
    assert kind_folder(None) == "defect"
    assert kind_folder("scratch") == "scratch"
    assert kind_folder("good") == "good_defect" and kind_folder("Good") == "Good_defect"
    assert "/" not in kind_folder("../../etc") and not kind_folder("../../etc").startswith(".")
    assert kind_folder("a b/c") == "a_b_c"
