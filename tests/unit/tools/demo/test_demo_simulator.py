"""The simulated line: which frames it publishes, with which headers, at which rate."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from inspector.errors import DatasetError
from inspector.tools.demo.simulator import LineImage, LineSimulator, load_line, synthetic_line
from inspector.tools.synth import SynthSummary


class RecordingProducer:
    """Collects what would have been sent to Kafka."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, dict[str, bytes]]] = []
        self.flushed = 0

    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> Any:
        self.sent.append((topic, value, key, dict(headers)))

    def flush(self, timeout: float | None = None) -> None:
        self.flushed += 1

    def close(self, timeout: float | None = None) -> None:
        pass


def _images() -> list[LineImage]:
    def jpeg(value: int) -> bytes:
        image = np.full((32, 32, 3), value, np.uint8)
        return bytes(cv2.imencode(".jpg", image)[1].tobytes())

    return [LineImage(jpeg(10), "good"), LineImage(jpeg(200), "scratch")]


def test_load_line_reads_good_then_defective(synth_data: SynthSummary) -> None:
    images = load_line(synth_data.root)
    kinds = [i.kind for i in images]
    assert kinds[: synth_data.n_test_good] == ["good"] * synth_data.n_test_good
    assert set(kinds) == {"good", *synth_data.n_test_defect}
    decoded = cv2.imdecode(np.frombuffer(images[0].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None
    assert decoded.shape == (synth_data.image_size, synth_data.image_size, 3)


def test_load_line_without_defects_says_how_to_make_one(tmp_path: Path) -> None:
    (tmp_path / "test" / "good").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "test" / "good" / "0.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DatasetError, match="inspector synth"):
        load_line(tmp_path)


def test_synthetic_line_generates_once_then_reuses(tmp_path: Path) -> None:
    first = synthetic_line(tmp_path / "line", image_size=64, seed=3, n_train=2)
    marker = tmp_path / "line" / "synth.json"
    stamp = marker.stat().st_mtime_ns
    again = synthetic_line(tmp_path / "line", image_size=64, seed=3, n_train=2)
    assert marker.stat().st_mtime_ns == stamp
    assert [i.jpeg for i in again] == [i.jpeg for i in first]


def test_frames_rotate_cameras_and_carry_headers() -> None:
    sim = LineSimulator(_images(), ["a", "b"], defect_rate=0.5, seed=1, clock=lambda: 1700000000.0)
    frames = [sim.next_frame() for _ in range(4)]
    assert [f.key for f in frames] == [b"a", b"b", b"a", b"b"]
    headers = dict(frames[1].headers)
    assert headers["camera_id"] == b"b"
    assert headers["frame_id"] == b"b-0000001"
    assert headers["captured_at"] == b"1700000000000"
    assert headers["content_type"] == b"image/jpeg"
    assert sim.truth("b-0000001") == headers["truth"].decode()
    assert sim.truth("unknown") is None


def test_defect_rate_and_seed_shape_the_sequence() -> None:
    def truths(seed: int, rate: float) -> list[str]:
        sim = LineSimulator(_images(), ["a"], defect_rate=rate, seed=seed)
        return [dict(sim.next_frame().headers)["truth"].decode() for _ in range(400)]

    assert truths(5, 0.2) == truths(5, 0.2)
    share = truths(5, 0.2).count("scratch") / 400
    assert 0.12 < share < 0.28
    assert set(truths(5, 0.0)) == {"good"}
    assert set(truths(5, 1.0)) == {"scratch"}


def test_every_nth_frame_is_corrupt() -> None:
    sim = LineSimulator(_images(), ["a"], bad_every=3)
    frames = [sim.next_frame() for _ in range(6)]
    corrupt = [i for i, f in enumerate(frames) if dict(f.headers)["truth"] == b"corrupt"]
    assert corrupt == [2, 5]
    for i in corrupt:
        assert cv2.imdecode(np.frombuffer(frames[i].value, np.uint8), cv2.IMREAD_COLOR) is None


def test_publish_sends_n_frames_and_flushes() -> None:
    producer = RecordingProducer()
    sim = LineSimulator(_images(), ["a", "b"])
    sent = sim.publish(producer, "frames", fps=0, frames=7, stop=threading.Event())
    assert sent == 7
    assert [topic for topic, *_ in producer.sent] == ["frames"] * 7
    assert producer.flushed == 1


def test_publish_stops_when_asked() -> None:
    producer = RecordingProducer()
    stop = threading.Event()
    sim = LineSimulator(_images(), ["a"])
    timer = threading.Timer(0.3, stop.set)
    timer.start()
    sent = sim.publish(producer, "frames", fps=20, frames=None, stop=stop)
    timer.join()
    # 20 frames/s for ~0.3 s: a handful, not an unbounded burst.
    assert 2 <= sent <= 12
    assert producer.flushed == 1


def test_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="camera"):
        LineSimulator(_images(), [])
    with pytest.raises(ValueError, match="defect_rate"):
        LineSimulator(_images(), ["a"], defect_rate=1.5)
    with pytest.raises(ValueError, match="good and defective"):
        LineSimulator(_images()[:1], ["a"])
