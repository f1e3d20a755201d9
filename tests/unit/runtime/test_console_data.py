"""The console's data without a server: the last-result sink, the tiles, the label schema.

The sink behind the tiles is fed real inspections on a clock the test moves; the tiles are
built from it, a real retention index and no control (a daemon still starting).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fakes import make_frame, make_result
from prometheus_client import CollectorRegistry
from retention_helpers import SinkMaker, inspection

import inspector
from inspector.label_messages import label_json_schema
from inspector.runtime.control.console.tiles import overview
from inspector.runtime.control.labels import LabelMetrics, once_per_registry
from inspector.runtime.metrics import CameraLabels
from inspector.runtime.records import Inspection
from inspector.runtime.sinks.latest import LatestResults

LABEL_SCHEMA = Path(inspector.__file__).parent / "schemas" / "label.v1.json"


def test_metrics_register_once_per_registry() -> None:
    registry = CollectorRegistry()
    assert once_per_registry(registry, LabelMetrics) is once_per_registry(registry, LabelMetrics)
    assert once_per_registry(CollectorRegistry(), LabelMetrics) is not once_per_registry(
        registry, LabelMetrics
    )


def test_the_published_label_schema_is_the_generated_one() -> None:
    assert json.loads(LABEL_SCHEMA.read_text()) == label_json_schema()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _result(frame_id: str, camera: str, *, late: bool | None, anomalous: bool) -> Inspection:
    message = make_result(frame_id, camera, anomalous=anomalous).model_copy(update={"late": late})
    return Inspection(
        message, make_frame(np.zeros((4, 4, 3), np.uint8), frame_id, camera), None, None
    )


def test_the_latest_sink_keeps_each_cameras_last_verdict_and_recent_rate() -> None:
    clock = Clock()
    labels = CameraLabels(["cam-a"], max_seen=1)
    latest = LatestResults(labels.label, clock=clock)
    done: list[BaseException | None] = []
    for i in range(20):  # 2 frames a second for 10 s, every fourth one late
        latest.publish(_result(f"a{i}", "cam-a", late=i % 4 == 0, anomalous=i == 19), done.append)
        clock.now += 0.5
    for camera in ("seen-1", "seen-2", "seen-3"):  # one own label, then "other"
        latest.publish(_result(f"{camera}-f", camera, late=None, anomalous=False), done.append)
    assert done == [None] * 23  # every frame confirmed at once
    by_camera = {a.camera: a for a in latest.cameras()}
    assert sorted(by_camera) == ["cam-a", "other", "seen-1"]
    a = by_camera["cam-a"]
    assert (a.frame_id, a.is_anomalous, a.score, a.threshold) == ("a19", True, 0.9, 0.5)
    assert a.frames_per_s == pytest.approx(2.0, abs=0.25)
    assert a.late_share == pytest.approx(0.25, abs=0.06)
    assert by_camera["other"].frame_id == "seen-3-f" and by_camera["other"].late_share is None
    clock.now += 60  # a quiet camera: its rate falls to zero, its last verdict stays
    quiet = {x.camera: x for x in latest.cameras()}["cam-a"]
    assert quiet.frames_per_s == 0 and quiet.frame_id == "a19" and quiet.age_s >= 60


def test_tiles_join_activity_with_the_labels_of_the_index(tmp_path: Path) -> None:
    maker = SinkMaker(tmp_path)
    try:
        sink, _ = maker()
        for frame_id, camera in (("f1", "cam-a"), ("f2", "cam-a"), ("f3", "cam-b")):
            sink.write(inspection(frame_id, camera_id=camera))
        sink.store.label("f1", "false_alarm")
        sink.store.label("f2", "defect", "scratch")
        sink.store.label("f3", "missed_defect")
        clock = Clock()
        latest = LatestResults(lambda camera: camera, clock=clock)
        latest.publish(_result("f9", "cam-a", late=None, anomalous=True), lambda exc: None)
        seen = overview(latest.cameras(), None, sink.store, {}, writes=False)
    finally:
        maker.close_all()
    tiles = {t.camera: t for t in seen.tiles}
    assert list(tiles) == ["cam-a", "cam-b"]  # seen first, then those known from labels
    a, b = tiles["cam-a"], tiles["cam-b"]
    assert a.up and a.state == "streaming" and a.last is not None and a.last.frame_id == "f9"
    assert (a.labels.false_alarm, a.labels.defect, a.labels.missed_defect) == (1, 1, 0)
    assert not b.up and b.state == "quiet" and b.last is None and b.labels.missed_defect == 1
    assert (seen.retention, seen.writes, seen.retained) == (True, False, 3)
