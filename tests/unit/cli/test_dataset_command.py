"""``inspector dataset export``: retained, labelled frames become a dataset train and eval read.

A real retention folder (the daemon's store and encoder, frames retained one minute apart),
the command run through ``main``; what it wrote is read back with the loaders that
``inspector train``, ``eval`` and ``calibrate`` use, and the index with sqlite3.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from fakes import make_frame, make_result

from inspector.cli import main
from inspector.ml.data import labelled_items, load_items, training_items
from inspector.runtime.records import Inspection
from inspector.runtime.retention.encode import item_from_inspection
from inspector.runtime.retention.reader import INDEX_NAME
from inspector.runtime.retention.records import Label
from inspector.runtime.retention.store import RetentionStore

H, W = 32, 48
START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)

#: frame id, camera, flagged by the model, the operator's label, its kind.
PLAN: list[tuple[str, str, bool, Label | None, str | None]] = [
    *[(f"good-{i}", "a" if i % 2 else "b", False, None, None) for i in range(6)],
    ("fa-1", "a", True, "false_alarm", None),
    ("fa-2", "b", True, "false_alarm", None),
    ("scratch-1", "a", True, "defect", "scratch"),
    ("plain-1", "b", True, "defect", None),
    ("missed-1", "a", False, "missed_defect", "dent"),
    ("unreviewed", "a", True, None, None),  # flagged, nobody looked: not in the dataset
]


def _inspection(frame_id: str, camera: str, *, flagged: bool) -> Inspection:
    rng = np.random.default_rng(zlib.crc32(frame_id.encode()))
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    mask = np.zeros((H, W), bool)
    mask[4:12, 6:20] = True
    return Inspection(
        make_result(frame_id, camera, anomalous=flagged, image_size=(H, W)),
        make_frame(image, frame_id, camera),
        rng.random((8, 8), dtype=np.float32) if flagged else None,
        mask if flagged else None,
    )


def retain(root: Path, times: Callable[[int], datetime]) -> Path:
    """PLAN retained into ``root``, the i-th frame at ``times(i)``, labelled as planned."""
    now = [times(0)]
    store = RetentionStore(root, max_bytes=10**9, clock=lambda: now[0])
    try:
        for i, (frame_id, camera, flagged, label, kind) in enumerate(PLAN):
            now[0] = times(i)
            store.retain(
                item_from_inspection(_inspection(frame_id, camera, flagged=flagged), "png")
            )
            if label is not None:
                store.label(frame_id, label, kind)
    finally:
        store.close()
    return root


@pytest.fixture
def retention(tmp_path: Path) -> Path:
    return retain(tmp_path / "retained", lambda i: START + timedelta(minutes=i))


def _export(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["dataset", "export", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _exported_ids(out: Path) -> dict[str, str]:
    """Frame id -> the image's path in the dataset, from the manifest."""
    manifest = json.loads((out / "manifest.json").read_text())
    return {f["frame_id"]: f["path"] for f in manifest["files"]}


def test_the_export_is_the_layout_train_eval_and_calibrate_read(
    retention: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dataset"
    code, printed, err = _export(capsys, "--retention", str(retention), "--out", str(out))
    assert code == 0, err
    # 6 sampled goods and 2 false alarms, a fifth held out: 2 in test/good.
    assert printed.startswith(f"wrote {out}: 6 train/good, 2 test/good, defects: ")
    assert "defect 1, dent 1, scratch 1 (2 with a mask, 1 without)" in printed

    train = training_items(out)  # what `inspector train --data` and `calibrate --good` read
    test = labelled_items(out, "test")  # what `inspector eval --data` reads
    assert len(train) == 6 and all(p.path.parent == out / "train" / "good" for p in train)
    assert sorted((i.defect, i.label) for i in test if i.label) == [
        ("defect", 1),
        ("dent", 1),
        ("scratch", 1),
    ]
    assert sum(1 for i in test if i.label == 0) == 2
    assert load_items(test, (32, 32), with_masks=True).skipped == []

    paths = _exported_ids(out)
    goods = {f"good-{i}" for i in range(6)} | {"fa-1", "fa-2"}
    assert set(paths) == goods | {"scratch-1", "plain-1", "missed-1"}  # not "unreviewed"
    assert all(paths[g].split("/")[1] == "good" for g in goods)
    assert paths["missed-1"].startswith("test/dent/")
    # Each file is where the manifest says, and came from the frame it names.
    manifest = json.loads((out / "manifest.json").read_text())
    for entry in manifest["files"]:
        assert (out / entry["path"]).read_bytes() == (
            retention / entry["retained_file"]
        ).read_bytes()
    with sqlite3.connect(retention / INDEX_NAME) as db:
        marked = dict(db.execute("SELECT frame_id, exported_at IS NOT NULL FROM frames"))
    assert marked == {frame_id: frame_id in paths for frame_id, *_ in PLAN}


def test_camera_and_since_choose_the_frames(
    retention: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "camera-a"
    assert (
        _export(capsys, "--retention", str(retention), "--out", str(out), "--camera", "a")[0] == 0
    )
    assert {fid for fid in _exported_ids(out)} == {
        "good-1",
        "good-3",
        "good-5",
        "fa-1",
        "scratch-1",
        "missed-1",
    }
    # Frame i was retained at START + i minutes: from minute 8 on (no zone: UTC).
    since = (START + timedelta(minutes=8)).strftime("%Y-%m-%dT%H:%M:%S")
    out = tmp_path / "since"
    assert (
        _export(capsys, "--retention", str(retention), "--out", str(out), "--since", since)[0] == 0
    )
    assert set(_exported_ids(out)) == {"scratch-1", "plain-1", "missed-1"}
    # The same moment in another zone is the same moment.
    zoned = (START + timedelta(minutes=8)).astimezone(timezone(timedelta(hours=2))).isoformat()
    out = tmp_path / "zoned"
    assert (
        _export(capsys, "--retention", str(retention), "--out", str(out), "--since", zoned)[0] == 0
    )
    assert set(_exported_ids(out)) == {"scratch-1", "plain-1", "missed-1"}


def test_since_an_age_counts_back_from_now(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The first six frames two days old, the rest retained an hour ago.
    now = datetime.now(UTC)
    root = retain(
        tmp_path / "retained",
        lambda i: now - (timedelta(days=2) if i < 6 else timedelta(hours=1)),
    )
    out = tmp_path / "recent"
    assert _export(capsys, "--retention", str(root), "--out", str(out), "--since", "1d")[0] == 0
    assert set(_exported_ids(out)) == {"fa-1", "fa-2", "scratch-1", "plain-1", "missed-1"}
    out = tmp_path / "all"
    assert _export(capsys, "--retention", str(root), "--out", str(out), "--since", "72h")[0] == 0
    assert len(_exported_ids(out)) == 11


@pytest.mark.parametrize(
    ("case", "flag", "says"),
    [
        ("no such retention folder", "--retention", "no such folder"),
        ("a folder without an index", "--retention", "not a retention folder"),
        ("an out folder with a file", "--out", "not an empty folder"),
        ("an out path that is a file", "--out", "not an empty folder"),
        ("a --since that is no time", "--since", "not a time"),
        ("a --since age without a unit", "--since", "not a time"),
        ("a held-out share of 1", "--held-out-share", "below 1"),
    ],
)
def test_bad_input_is_one_line_naming_the_flag_and_exit_2(
    case: str,
    flag: str,
    says: str,
    retention: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "out"
    args = {"--retention": str(retention), "--out": str(out)}
    extra: list[str] = []
    if case == "no such retention folder":
        args["--retention"] = str(tmp_path / "nowhere")
    elif case == "a folder without an index":
        (tmp_path / "frames").mkdir()
        (tmp_path / "frames" / "a.png").write_bytes(b"not really")
        args["--retention"] = str(tmp_path / "frames")
    elif case == "an out folder with a file":
        out.mkdir()
        (out / "keep.txt").write_text("someone's file")
    elif case == "an out path that is a file":
        out.write_text("a file")
    elif case == "a --since that is no time":
        extra = ["--since", "yesterday"]
    elif case == "a --since age without a unit":
        extra = ["--since", "12"]
    else:
        extra = ["--held-out-share", "1"]
    argv = [item for pair in args.items() for item in pair] + extra
    code, printed, err = _export(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith(f"error: {flag}") and says in lines[0], err
    assert printed == ""
    # Nothing was written or created: no dataset, no index in a folder that had none.
    assert not (tmp_path / "nowhere").exists()
    assert not (tmp_path / "frames" / INDEX_NAME).exists()
    assert not out.is_dir() or sorted(p.name for p in out.iterdir()) in ([], ["keep.txt"])


def test_nothing_to_export_is_a_runtime_failure(
    retention: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    code, _, err = _export(
        capsys, "--retention", str(retention), "--out", str(out), "--camera", "no-such-camera"
    )
    assert code == 1
    assert err.strip().splitlines() == [
        f"error: nothing to export from {retention}: no sampled good or labelled frames of "
        "camera 'no-such-camera'"
    ]


def test_dataset_without_an_action_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["dataset"])
    assert exited.value.code == 2
    assert "the following arguments are required: ACTION" in capsys.readouterr().err
