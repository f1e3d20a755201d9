"""The demo's two camera groups: the --frames split, their rates, and one truth for the tally."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fakes import make_result

from inspector.tools.demo.cameras import CameraGroup, DemoCameras, demo_cameras, split_frames
from inspector.tools.demo.setup import HIRES_CAMERA, HIRES_PERIOD_S, DemoOptions
from inspector.tools.demo.simulator import LineImage, LineSimulator
from inspector.tools.demo.view import LineTally


class RecordingProducer:
    """Collects what would have been sent to Kafka (from several threads)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, bytes]] = []
        self._lock = threading.Lock()

    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        with self._lock:
            self.sent.append(dict(headers))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        pass


def _images(size: int) -> list[LineImage]:
    def jpeg(value: int) -> bytes:
        return bytes(cv2.imencode(".jpg", np.full((size, size, 3), value, np.uint8))[1].tobytes())

    return [LineImage(jpeg(10), "good"), LineImage(jpeg(200), "scratch")]


@pytest.mark.parametrize(
    ("frames", "expected"),
    [(None, (None, None)), (1, (0, 1)), (8, (7, 1)), (40, (39, 1)), (50, (48, 2)), (200, (192, 8))],
)
def test_one_frame_in_25_is_high_resolution_and_the_total_stays(
    frames: int | None, expected: tuple[int | None, int | None]
) -> None:
    assert split_frames(frames, 25) == expected


def test_both_groups_publish_their_share_and_the_tally_knows_every_truth(tmp_path: Path) -> None:
    opts = DemoOptions(workdir=tmp_path, frames=50, fps=0, bad_every=25, defect_rate=0.5)
    cameras = demo_cameras(opts, _images(32), _images(48))
    assert cameras.cameras == ["line1-cam1", "line1-cam2", HIRES_CAMERA]
    producer = RecordingProducer()
    cameras.start(producer, "frames", threading.Event())
    cameras.join(timeout=10)
    assert cameras.sent() == cameras.count == 50
    by_camera: dict[bytes, int] = {}
    for headers in producer.sent:
        by_camera[headers["camera_id"]] = by_camera.get(headers["camera_id"], 0) + 1
    assert by_camera == {b"line1-cam1": 24, b"line1-cam2": 24, HIRES_CAMERA.encode(): 2}
    frame_ids = [h["frame_id"].decode() for h in producer.sent]
    assert len(set(frame_ids)) == 50  # distinct across the two simulators
    # The corrupt frames come from the regular cameras only.
    corrupt = [h["camera_id"] for h in producer.sent if h["truth"] == b"corrupt"]
    assert corrupt and HIRES_CAMERA.encode() not in corrupt

    tally = LineTally(truth=cameras.truth, sent=lambda: cameras.count)
    for headers in producer.sent:
        truth = headers["truth"].decode()
        if truth == "corrupt":
            tally.add_dead_letter("truncated")
            continue
        frame_id, camera = headers["frame_id"].decode(), headers["camera_id"].decode()
        assert cameras.truth(frame_id) == truth
        tally.add_result(make_result(frame_id, camera, anomalous=truth != "good"))
    assert tally.false_alarms == tally.missed == 0 and tally.caught > 0
    assert tally.total == 50 and tally.behind() == 0
    assert cameras.truth("line1-cam9-0000001") is None


def test_the_high_resolution_camera_has_its_own_rate(tmp_path: Path) -> None:
    paced = demo_cameras(DemoOptions(workdir=tmp_path, fps=10), _images(32), _images(48))
    regular, hires = paced.groups
    assert (regular.fps, regular.frames, hires.frames) == (10, None, None)
    assert hires.fps == 1 / HIRES_PERIOD_S and hires.simulator.cameras == [HIRES_CAMERA]
    assert hires.simulator.bad_every == 0
    flat_out = demo_cameras(DemoOptions(workdir=tmp_path, fps=0), _images(32), _images(48))
    assert [g.fps for g in flat_out.groups] == [0, 0]  # --fps 0: everything as fast as it can


def test_without_a_high_resolution_line_one_group_sends_everything(tmp_path: Path) -> None:
    cameras = demo_cameras(DemoOptions(workdir=tmp_path, frames=40, hires=False), _images(32), [])
    (group,) = cameras.groups
    assert group.frames == 40 and cameras.cameras == ["line1-cam1", "line1-cam2"]


def test_camera_ids_must_differ_between_groups() -> None:
    a = LineSimulator(_images(32), ["cam"])
    b = LineSimulator(_images(32), ["cam"])
    with pytest.raises(ValueError, match="differ"):
        DemoCameras([CameraGroup("a", a, 0, 1), CameraGroup("b", b, 0, 1)])
