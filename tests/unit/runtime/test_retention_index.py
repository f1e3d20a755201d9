from __future__ import annotations

import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from retention_helpers import (
    WRITER,
    Done,
    SinkMaker,
    indexed_and_on_disk,
    inspection,
    load_writer,
)

from inspector.errors import ConfigError, InspectorError
from inspector.runtime.retention.files import FILES_DIR, TMP_PREFIX
from inspector.runtime.retention.reader import INDEX_NAME, RetentionIndex
from inspector.runtime.retention.records import RetentionRequestError, UnknownFrameError
from inspector.runtime.retention.store import RetentionStore


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[SinkMaker]:
    maker = SinkMaker(tmp_path)
    yield maker
    maker.close_all()


# --- untrusted ids ------------------------------------------------------------------------------


def test_path_like_frame_ids_never_escape_the_folder(make_sink: SinkMaker, tmp_path: Path) -> None:
    root = tmp_path / "deep" / "retention"
    sink, _ = make_sink(path=root)
    ids = [
        "../../etc/passwd",
        "../escape",
        "/etc/shadow",
        "..",
        "a/../../b",
        "..\\..\\windows",
        "~root",
        "nul\x00byte",
        "line\nbreak",
    ]
    for frame_id in ids:
        sink.publish(inspection(frame_id, camera_id="../../cam"), Done())
    assert sink.flush(10.0)
    outside = [p for p in tmp_path.rglob("*") if not p.is_relative_to(root) and p != root.parent]
    assert outside == []
    resolved_root = root.resolve()
    for frame_id in ids:
        frame = sink.store.get(frame_id)
        assert frame is not None and frame.frame_id == frame_id  # verbatim
        for view in ("frame", "overlay", "mask"):
            path = sink.store.image_path(frame_id, view)  # type: ignore[arg-type]
            assert path is not None and path.is_relative_to(resolved_root / FILES_DIR)

    # A row pointing outside (a tampered index) and an unknown view are refused.
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the console")
    db = sqlite3.connect(root / INDEX_NAME)
    with db:
        db.execute(
            "UPDATE frames SET frame_file = ? WHERE frame_id = ?",
            ("files/../../../secret.txt", "../escape"),
        )
    db.close()
    assert sink.store.image_path("../escape", "frame") is None
    with pytest.raises(RetentionRequestError):
        sink.store.image_path("../escape", "../../secret")  # type: ignore[arg-type]


def test_sql_like_ids_are_stored_verbatim_and_matched_exactly(make_sink: SinkMaker) -> None:
    sink, _ = make_sink()
    camera = "' OR 1=1 --"
    ids = [
        "x'); DROP TABLE frames; --",
        "' OR '1'='1",
        '"; DELETE FROM frames; --',
        "%",
        "_",
        "Robert'); --",
    ]
    for frame_id in ids:
        sink.publish(inspection(frame_id, camera_id=camera), Done())
    assert sink.flush(10.0)
    store = sink.store
    assert store.count() == len(ids)
    for frame_id in ids:
        frame = store.get(frame_id)
        assert frame is not None and frame.frame_id == frame_id and frame.camera_id == camera
    assert store.get("x") is None and store.get("' OR ''='") is None
    assert len(store.list(camera=camera)) == len(ids) and store.list(camera="cam") == []
    labelled = store.label("%", "defect", "'; DROP TABLE frames; --")
    assert labelled.label_kind == "'; DROP TABLE frames; --"
    assert store.get("_") is not None and store.get("_").label is None  # type: ignore[union-attr]
    assert store.counts_by_camera() == {camera: {"false_alarm": 0, "defect": 1, "missed_defect": 0}}


# --- the query API ------------------------------------------------------------------------------


def test_list_pages_newest_first_and_filters(make_sink: SinkMaker) -> None:
    sink, _ = make_sink(good_sample_rate=1.0)
    plan = [("a", True), ("b", False), ("a", False), ("b", True), ("a", True), ("a", False)]
    for i, (camera, flagged) in enumerate(plan):
        sink.publish(inspection(f"f{i}", camera_id=camera, anomalous=flagged, size=(8, 8)), Done())
    assert sink.flush(10.0)
    store = sink.store
    first = store.list(limit=4)
    assert [f.frame_id for f in first] == ["f5", "f4", "f3", "f2"]
    second = store.list(limit=4, before=first[-1].seq)
    assert [f.frame_id for f in second] == ["f1", "f0"]
    assert [f.frame_id for f in store.list(camera="a")] == ["f5", "f4", "f2", "f0"]
    assert [f.frame_id for f in store.list(flagged=False)] == ["f5", "f2", "f1"]
    assert [f.frame_id for f in store.list(camera="a", flagged=True, limit=1)] == ["f4"]

    store.label("f0", "defect", "scratch")
    store.label("f1", "missed_defect")
    store.label("f3", "false_alarm", note="glare")
    assert [f.frame_id for f in store.list(label="defect")] == ["f0"]
    assert [f.frame_id for f in store.list(label="unlabelled")] == ["f5", "f4", "f2"]
    assert store.counts_by_camera() == {
        "a": {"false_alarm": 0, "defect": 1, "missed_defect": 0},
        "b": {"false_alarm": 1, "defect": 0, "missed_defect": 1},
    }
    for bad in (0, 501):
        with pytest.raises(RetentionRequestError):
            store.list(limit=bad)
    with pytest.raises(RetentionRequestError):
        store.list(label="bogus")


def test_labels_are_validated_and_relabelling_resets_the_export_mark(
    make_sink: SinkMaker,
) -> None:
    sink, _ = make_sink()
    sink.publish(inspection("f"), Done())
    assert sink.flush(10.0)
    store = sink.store
    bad: list[tuple[Any, str | None, str | None]] = [
        ("bogus", None, None),
        ("false_alarm", "scratch", None),  # a kind only with a defect label
        (None, "scratch", None),
        ("defect", "", None),
        ("defect", "k" * 65, None),
        ("defect", "tab\there", None),
        ("defect", None, "n" * 2001),
    ]
    for label, kind, note in bad:
        with pytest.raises(RetentionRequestError) as caught:
            store.label("f", label, kind, note)
        assert isinstance(caught.value, ConfigError)
    assert store.get("f") is not None and store.get("f").label is None  # type: ignore[union-attr]

    with pytest.raises(UnknownFrameError) as unknown:
        store.label("nope", "defect")
    assert isinstance(unknown.value, KeyError) and isinstance(unknown.value, InspectorError)
    assert "nope" in str(unknown.value)

    frame = store.label("f", "defect", "k" * 64, "n" * 2000)
    assert frame.labelled_at is not None
    store.mark_exported([frame.seq])
    same = store.label("f", "defect", "k" * 64, "another note")
    assert same.exported_at is not None  # the label did not change: still exported
    changed = store.label("f", "defect", "dent")
    assert changed.exported_at is None  # a new label waits for the next export
    cleared = store.label("f", None)
    assert cleared.label is None and cleared.label_kind is None and cleared.labelled_at is None
    assert store.image_path("nope", "frame") is None


# --- crash safety -------------------------------------------------------------------------------


def _writer(root: Path, max_bytes: int, generation: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(root), str(max_bytes), str(generation), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_consistent(root: Path, max_bytes: int) -> bool:
    """After a crash: no row without its files; reopened (reconciled): rows == files, whole
    files only, a sound index. Whether the crash had left files without a row."""
    writer = load_writer()
    indexed, on_disk = indexed_and_on_disk(root)
    assert indexed <= on_disk  # files first, row after; row first, files after: never a half row
    debris = bool(on_disk - indexed) or any(root.rglob(f"{TMP_PREFIX}*"))
    store = RetentionStore(root, max_bytes=max_bytes)
    try:
        indexed, on_disk = indexed_and_on_disk(root)
        assert indexed == on_disk
        assert not [p for p in root.rglob(f"{TMP_PREFIX}*")]
        for frame in store.frames():
            for what, name in (
                ("frame", frame.frame_file),
                ("overlay", frame.overlay_file),
                ("mask", frame.mask_file),
                ("result", frame.result_file),
            ):
                assert name is not None
                assert (root / name).read_bytes() == writer.payload(frame.frame_id, what)
        assert store.file_bytes == sum((root / n).stat().st_size for n in on_disk)
    finally:
        store.close()
    db = sqlite3.connect(root / INDEX_NAME)
    try:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        db.close()
    return debris


@pytest.mark.component  # kills a writer subprocess
def test_a_crash_between_files_and_row_leaves_no_half_record(tmp_path: Path) -> None:
    root = tmp_path / "retention"
    RetentionIndex(root).close()
    proc = _writer(root, 10**8, 0, "--crash-after-files")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err
    assert out.strip() == "files"
    indexed, on_disk = indexed_and_on_disk(root)
    assert indexed == set() and len(on_disk) == 4  # the files, and no row
    assert _assert_consistent(root, 10**8)
    assert indexed_and_on_disk(root) == (set(), set())


@pytest.mark.component  # kills a writer subprocess
def test_sigkill_at_random_points_leaves_index_and_files_equal(tmp_path: Path) -> None:
    root = tmp_path / "retention"
    max_bytes = 3_000_000
    rng = random.Random(20250101)
    interrupted = 0
    for generation in range(6):
        proc = _writer(root, max_bytes, generation)
        try:
            assert proc.stdout is not None
            for _ in range(rng.randint(1, 15)):
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else "writer ended"
            if generation == 0:  # the running writer owns the folder: no second owner
                with pytest.raises(ConfigError, match="in use by another"):
                    RetentionStore(root, max_bytes=max_bytes)
            time.sleep(rng.uniform(0.0, 0.03))  # somewhere inside the next write
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL
        interrupted += _assert_consistent(root, max_bytes)
    # The writer spends nearly all its time inside writes, so kills land mid-write (in each
    # round when measured); at least one must have, or the test proved nothing.
    assert interrupted >= 1
    store = RetentionStore(root, max_bytes=max_bytes)
    try:
        assert store.count() > 0
        assert store.total_bytes <= max_bytes
    finally:
        store.close()


# --- the index --------------------------------------------------------------------------------


def test_the_schema_is_versioned_and_a_newer_index_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "retention"
    RetentionIndex(root).close()
    RetentionIndex(root).close()  # reopening migrates nothing twice
    db = sqlite3.connect(root / INDEX_NAME)
    try:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        with db:
            db.execute("UPDATE schema_version SET version = 99")
    finally:
        db.close()
    with pytest.raises(ConfigError, match="schema version 99"):
        RetentionIndex(root)


def test_an_unusable_folder_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"retention\.path"):
        RetentionStore(tmp_path / "file", max_bytes=10**6)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / INDEX_NAME).write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigError, match=r"retention\.path"):
        RetentionStore(tmp_path / "bad", max_bytes=10**6)


def test_a_folder_has_one_owner_at_a_time(tmp_path: Path) -> None:
    root = tmp_path / "retention"
    owner = RetentionStore(root, max_bytes=10**6)
    try:
        with pytest.raises(ConfigError, match="in use by another"):
            RetentionStore(root, max_bytes=10**6)
        RetentionIndex(root).close()  # readers (an export) need no ownership
    finally:
        owner.close()
    RetentionStore(root, max_bytes=10**6).close()  # given up on close
