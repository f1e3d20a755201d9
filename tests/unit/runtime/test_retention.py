from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fakes import make_result
from prometheus_client import CollectorRegistry
from pydantic import ValidationError
from retention_helpers import (
    PNG_MAGIC,
    Clock,
    Done,
    H,
    SinkMaker,
    W,
    dropped,
    folder_bytes,
    indexed_and_on_disk,
    inspection,
)
from waiting import wait_until

from inspector.errors import ConfigError
from inspector.messages import ResultMessage
from inspector.runtime.records import Inspection
from inspector.runtime.retention.config import RetentionConfig
from inspector.runtime.retention.encode import retain_kind, sample_point
from inspector.runtime.retention.files import FILES_DIR, TMP_PREFIX, file_key
from inspector.runtime.retention.records import DROP_REASONS, UnknownFrameError
from inspector.runtime.sinks.retention import RetentionMetrics, RetentionSink


@pytest.fixture
def make_sink(tmp_path: Path) -> Iterator[SinkMaker]:
    maker = SinkMaker(tmp_path)
    yield maker
    maker.close_all()


# --- what is retained ---------------------------------------------------------------------------


def test_a_flagged_frame_is_retained_with_frame_overlay_mask_and_result(
    make_sink: SinkMaker,
) -> None:
    sink, registry = make_sink(good_sample_rate=0.0)
    bad = inspection("bad-1")
    done = Done()
    sink.publish(bad, done)
    assert done.calls == [None]  # confirmed before anything is written
    assert sink.flush(10.0)
    store = sink.store
    frame = store.get("bad-1")
    assert frame is not None
    assert (frame.camera_id, frame.score, frame.threshold, frame.is_anomalous) == (
        "cam",
        0.9,
        0.5,
        True,
    )
    assert frame.model_name == "m" and frame.processed_at == bad.message.processed_at
    assert frame.label is None and frame.exported_at is None

    pixels = cv2.imread(str(store.image_path("bad-1", "frame")), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(pixels, bad.frame.image)  # PNG: lossless
    overlay = cv2.imread(str(store.image_path("bad-1", "overlay")), cv2.IMREAD_UNCHANGED)
    assert overlay.shape == (H, W, 3) and not np.array_equal(overlay, pixels)
    mask = cv2.imread(str(store.image_path("bad-1", "mask")), cv2.IMREAD_UNCHANGED)
    assert bad.mask is not None and np.array_equal(mask > 127, bad.mask)
    result = ResultMessage.from_json((sink.path / frame.result_file).read_bytes())
    assert result == bad.message

    assert registry.get_sample_value("inspector_retention_frames_total", {"kind": "flagged"}) == 1
    assert registry.get_sample_value("inspector_retention_bytes") == folder_bytes(sink.path)
    assert all(dropped(registry, reason) == 0 for reason in DROP_REASONS)


def test_kafka_frames_keep_the_bytes_they_came_in(make_sink: SinkMaker) -> None:
    sink, _ = make_sink(good_sample_rate=0.0, image_format="jpeg")
    probe = inspection("k-1")
    assert isinstance(probe.frame.image, np.ndarray)
    ok, jpeg = cv2.imencode(".jpg", probe.frame.image)
    assert ok
    sink.publish(inspection("k-1", raw=jpeg.tobytes()), Done())
    sink.publish(inspection("cam-1"), Done())  # a camera frame: image_format jpeg
    sink.publish(inspection("odd-1", raw=b"\x00\x01 not a known format"), Done())
    assert sink.flush(10.0)
    kafka = sink.store.image_path("k-1", "frame")
    assert kafka is not None and kafka.suffix == ".jpg"
    assert kafka.read_bytes() == jpeg.tobytes()
    camera = sink.store.image_path("cam-1", "frame")
    assert camera is not None and camera.suffix == ".jpg"
    assert camera.read_bytes()[:3] == b"\xff\xd8\xff"
    odd = sink.store.image_path("odd-1", "frame")  # unrecognised payload: re-encoded pixels
    assert odd is not None and cv2.imread(str(odd)) is not None


def test_good_frames_are_sampled_from_the_frame_id_hash(
    make_sink: SinkMaker, tmp_path: Path
) -> None:
    ids = [f"good-{i}" for i in range(300)]
    expected = {i for i in ids if sample_point(i) < 0.25}
    assert 40 < len(expected) < 110  # a fixed outcome of the hash: a share, neither 0 nor all
    kept = []
    for run in range(2):  # the same frames on every run
        sink, registry = make_sink(
            path=tmp_path / f"run{run}", good_sample_rate=0.25, max_pending=300
        )
        for frame_id in ids:
            sink.publish(inspection(frame_id, anomalous=False, size=(8, 8)), Done())
        assert sink.flush(30.0)
        kept.append({f.frame_id for f in sink.store.list(flagged=False, limit=500)})
        assert registry.get_sample_value(
            "inspector_retention_frames_total", {"kind": "sampled"}
        ) == len(expected)
    assert kept[0] == kept[1] == expected
    message = make_result("x", anomalous=False)
    assert retain_kind(message, 0.0) is None and retain_kind(message, 1.0) == "sampled"
    assert retain_kind(make_result("x", anomalous=True), 0.0) == "flagged"


# --- bounds -------------------------------------------------------------------------------------


class MeasuringSink(RetentionSink):
    """Measures the folder before each write, i.e. after the previous one, while frames flow."""

    sizes: list[int]

    def before_write(self, inspection: Inspection) -> None:
        self.__dict__.setdefault("sizes", []).append(folder_bytes(self.path))


def test_the_folder_never_exceeds_max_bytes_while_frames_flow(make_sink: SinkMaker) -> None:
    max_bytes = 1_500_000
    sink, registry = make_sink(MeasuringSink, max_bytes=max_bytes, max_pending=64)
    assert isinstance(sink, MeasuringSink)
    ids = [f"f{i:03d}" for i in range(40)]
    for frame_id in ids:
        sink.publish(inspection(frame_id), Done())
    assert sink.flush(60.0)
    sizes = [*sink.sizes, folder_bytes(sink.path)]
    assert len(sizes) == 41 and max(sizes) <= max_bytes
    assert max(sizes) > max_bytes // 2  # the bound was actually reached
    kept = {f.frame_id for f in sink.store.list(limit=500)}
    assert ids[-1] in kept and ids[0] not in kept and len(kept) < len(ids)
    indexed, on_disk = indexed_and_on_disk(sink.path)
    assert indexed == on_disk
    assert all(dropped(registry, reason) == 0 for reason in DROP_REASONS)
    assert registry.get_sample_value("inspector_retention_bytes") == sizes[-1]


def test_labelled_frames_survive_eviction_until_exported(make_sink: SinkMaker) -> None:
    max_bytes = 1_500_000
    sink, registry = make_sink(max_bytes=max_bytes, good_sample_rate=1.0)
    for frame_id in ("defect-1", "false-1", "plain-1"):
        sink.publish(inspection(frame_id), Done())
    assert sink.flush(10.0)
    store = sink.store
    store.label("defect-1", "defect", "scratch", "seen at the edge")
    store.label("false-1", "false_alarm")

    def flow(prefix: str) -> None:
        for i in range(30):
            sink.publish(inspection(f"{prefix}{i}"), Done())
            assert sink.flush(10.0)
            assert folder_bytes(sink.path) <= max_bytes

    flow("a")
    assert store.get("plain-1") is None  # unlabelled: evicted, oldest first
    for frame_id in ("defect-1", "false-1"):
        assert store.image_path(frame_id, "frame") is not None
    defect = store.get("defect-1")
    assert defect is not None and defect.note == "seen at the edge"
    assert store.mark_exported([defect.seq]) == 1

    flow("b")
    assert store.get("defect-1") is None  # exported: evictable like any frame
    assert store.get("false-1") is not None
    assert all(dropped(registry, reason) == 0 for reason in DROP_REASONS)
    indexed, on_disk = indexed_and_on_disk(sink.path)
    assert indexed == on_disk


def test_a_removed_label_makes_the_frame_evictable_again(make_sink: SinkMaker) -> None:
    max_bytes = 1_500_000
    sink, registry = make_sink(max_bytes=max_bytes, good_sample_rate=1.0)
    for frame_id in ("kept-1", "slip-1", "shipped-1"):
        sink.publish(inspection(frame_id), Done())
    assert sink.flush(10.0)
    store = sink.store
    store.label("kept-1", "defect", "scratch")
    store.label("slip-1", "missed_defect", "crack", "wrong frame")

    now, before = store.clear_label("slip-1")
    assert before is not None and (before.label, before.label_kind) == ("missed_defect", "crack")
    assert (now.label, now.label_kind, now.note, now.labelled_at) == (None,) * 4
    assert store.get("slip-1") == now
    # An export mark goes with the label: the last export holds the label removed.
    shipped = store.label("shipped-1", "false_alarm")
    assert store.mark_exported([shipped.seq]) == 1
    assert store.clear_label("shipped-1")[0].exported_at is None
    # Idempotent: nothing to remove, nothing changed.
    assert store.clear_label("slip-1") == (now, None)
    with pytest.raises(UnknownFrameError):
        store.clear_label("never-retained")

    for i in range(30):
        sink.publish(inspection(f"a{i}"), Done())
        assert sink.flush(10.0)
        assert folder_bytes(sink.path) <= max_bytes
    assert store.get("slip-1") is None  # unlabelled again: evicted, oldest first
    assert store.get("kept-1") is not None  # labelled, as slip-1 was, and never exported: kept
    assert all(dropped(registry, reason) == 0 for reason in DROP_REASONS)


def test_labelled_frames_filling_the_folder_make_new_frames_drop_as_full(
    make_sink: SinkMaker,
) -> None:
    max_bytes = 1_000_000
    sink, registry = make_sink(max_bytes=max_bytes)
    labelled = []
    for i in range(60):
        retained = sink.write(inspection(f"f{i}"))
        if retained is None:
            break
        sink.store.label(retained.frame_id, "defect")
        labelled.append(retained.frame_id)
        assert folder_bytes(sink.path) <= max_bytes
    else:
        pytest.fail("labelled frames never filled the folder")
    assert dropped(registry, "full") == 1
    assert labelled and all(sink.store.get(f) is not None for f in labelled)
    assert folder_bytes(sink.path) <= max_bytes


def test_a_frame_larger_than_the_bound_is_dropped_as_too_large(make_sink: SinkMaker) -> None:
    sink, registry = make_sink(max_bytes=400_000)
    done = Done()
    huge = PNG_MAGIC + random.Random(0).randbytes(500_000)
    sink.publish(inspection("huge", raw=huge), done)
    sink.publish(inspection("small"), done)
    assert sink.flush(10.0)
    assert done.calls == [None, None]
    assert dropped(registry, "too_large") == 1
    assert sink.store.get("huge") is None and sink.store.get("small") is not None
    assert folder_bytes(sink.path) <= 400_000


def test_the_age_bound_evicts_unlabelled_frames_and_exported_labelled_ones(
    make_sink: SinkMaker,
) -> None:
    clock = Clock()
    sink, _ = make_sink(clock=clock, housekeeping_s=0.02, max_age_hours=1.0)
    for frame_id in ("old-plain", "old-labelled"):
        sink.publish(inspection(frame_id), Done())
    assert sink.flush(10.0)
    store = sink.store
    store.label("old-labelled", "missed_defect")
    plain_file = store.image_path("old-plain", "frame")
    assert plain_file is not None

    clock.advance(minutes=61)
    wait_until(lambda: store.get("old-plain") is None, 10, "the idle writer's housekeeping")
    assert sink.flush(10.0)  # ...has deleted the files too
    assert not plain_file.exists()
    assert store.get("old-labelled") is not None
    sink.publish(inspection("new"), Done())
    assert sink.flush(10.0)
    assert store.get("new") is not None

    labelled = store.get("old-labelled")
    assert labelled is not None
    store.mark_exported([labelled.seq])
    wait_until(lambda: store.get("old-labelled") is None, 10, "old-labelled removed")
    assert sink.flush(10.0)
    assert store.get("new") is not None  # 1 minute old only
    indexed, on_disk = indexed_and_on_disk(sink.path)
    assert indexed == on_disk


# --- never blocking -----------------------------------------------------------------------------


class StalledSink(RetentionSink):
    """A writer stuck on a slow disk, for as long as the test says."""

    entered: threading.Event
    release: threading.Event

    def before_write(self, inspection: Inspection) -> None:
        self.entered.set()
        assert self.release.wait(30.0)


def test_a_full_queue_drops_retained_copies_and_counts_them(make_sink: SinkMaker) -> None:
    StalledSink.entered = threading.Event()
    StalledSink.release = threading.Event()
    sink, registry = make_sink(StalledSink, max_pending=2)
    done = Done()
    try:
        sink.publish(inspection("f0"), done)
        assert StalledSink.entered.wait(10.0)  # the writer holds f0 and is stuck
        for i in range(1, 6):
            sink.publish(inspection(f"f{i}"), done)
        # Every frame was confirmed at once, while the writer is still stuck.
        assert done.calls == [None] * 6
        assert dropped(registry, "queue_full") == 3
        assert not sink.flush(0.0)
    finally:
        StalledSink.release.set()
    assert sink.flush(10.0)
    assert {f.frame_id for f in sink.store.list()} == {"f0", "f1", "f2"}


def test_a_disk_error_drops_the_copy_and_the_writer_carries_on(make_sink: SinkMaker) -> None:
    sink, registry = make_sink()
    key = file_key("blocked")
    (sink.path / FILES_DIR / key[:2]).write_bytes(b"a file where a folder must go")
    done = Done()
    sink.publish(inspection("blocked"), done)
    sink.publish(inspection("fine"), done)
    assert sink.flush(10.0)
    assert done.calls == [None, None]
    assert dropped(registry, "disk_error") == 1
    assert sink.store.get("blocked") is None and sink.store.get("fine") is not None
    assert not [p for p in sink.path.rglob(f"{TMP_PREFIX}*")]


# --- the configuration ------------------------------------------------------------------------


def test_the_configuration_section() -> None:
    default = RetentionConfig()
    assert default.enabled is False and default.good_sample_rate == 0.01
    assert default.image_format == "png"
    assert RetentionConfig(enabled=True, path=Path("/r")).path == Path("/r")
    for bad in (
        {"enabled": True},  # no folder
        {"good_sample_rate": 1.5},
        {"good_sample_rate": float("nan")},
        {"max_bytes": 0},
        {"max_age_hours": float("inf")},
        {"max_pending": 0},
        {"image_format": "gif"},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            RetentionConfig(**bad)
    with pytest.raises(ValidationError):
        default.enabled = True  # type: ignore[misc]
    with pytest.raises(ConfigError):
        RetentionSink(default, RetentionMetrics(CollectorRegistry()))


def test_the_result_json_is_the_published_message(make_sink: SinkMaker) -> None:
    sink, _ = make_sink()
    sink.publish(inspection("j"), Done())
    assert sink.flush(10.0)
    frame = sink.store.get("j")
    assert frame is not None
    data = json.loads((sink.path / frame.result_file).read_text())
    assert data["schema"] == "inspector.result/v1" and data["frame_id"] == "j"
