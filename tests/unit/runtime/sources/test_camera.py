from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.runtime.config import CameraSourceConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Frame
from inspector.runtime.sources.camera import CameraSource, parse_uri

N_FRAMES = 30
H, W = 48, 64


def _index(image: np.ndarray) -> int:
    """The frame number encoded in the brightness of the top-left patch."""
    return round(float(image[:16, :16].mean()) / 8)


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 MJPG frames at 100 fps, each with its number drawn in and encoded in a patch."""
    path = tmp_path_factory.mktemp("video") / "counter.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 100, (W, H))
    assert writer.isOpened()
    for i in range(N_FRAMES):
        image = np.zeros((H, W, 3), np.uint8)
        image[:16, :16] = i * 8
        cv2.putText(image, str(i), (20, 40), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2)
        writer.write(image)
    writer.release()
    return path


@pytest.fixture()
def registry() -> CollectorRegistry:
    return CollectorRegistry()


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _collect(source: CameraSource, n: int, timeout: float = 5.0) -> list[Frame]:
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(frames) < n and time.monotonic() < deadline and not source.exhausted:
        frames += [f for f in source.poll(0.2) if isinstance(f, Frame)]
    return frames


def _config(uri: str | Path, **kwargs: Any) -> CameraSourceConfig:
    return CameraSourceConfig(camera_id="cam1", uri=str(uri), **kwargs)


def test_file_is_read_completely_in_order(video: Path, registry: CollectorRegistry) -> None:
    source = CameraSource(_config(video, live=False), Metrics(registry))
    source.setup()
    try:
        frames = _collect(source, N_FRAMES + 1)
        wait_until(lambda: source.exhausted, 5, "the end of the file")
    finally:
        source.close()

    assert [_index(f.image) for f in frames] == list(range(N_FRAMES))
    assert [f.meta.frame_id for f in frames] == [f"cam1:{i}" for i in range(N_FRAMES)]
    for frame in frames:
        assert frame.image.shape == (H, W, 3) and frame.image.dtype == np.uint8
        assert frame.meta.image_size == (H, W)
        assert frame.meta.camera_id == "cam1"
        assert frame.meta.source_topic is None
        assert frame.meta.decode_ms >= 0
        assert frame.meta.captured_at is not None
        assert datetime.fromisoformat(frame.meta.captured_at).utcoffset() is not None
    assert _value(registry, "inspector_frames_received_total", source="camera") == N_FRAMES
    assert _value(registry, "inspector_frames_dropped_total", camera="cam1", reason="stale") == 0
    assert _value(registry, "inspector_camera_reconnects_total", camera="cam1") == 0
    last = _value(registry, "inspector_camera_last_frame_timestamp_seconds", camera="cam1")
    assert abs(time.time() - last) < 10
    # A file that ended is not a camera failure: down, but nothing to reconnect.
    assert _value(registry, "inspector_camera_up", camera="cam1") == 0
    assert source.ready()
    assert source.poll(0.01) == []


def test_file_loops(video: Path, registry: CollectorRegistry) -> None:
    source = CameraSource(_config(video, live=False, loop=True), Metrics(registry))
    source.setup()
    try:
        frames = _collect(source, N_FRAMES + 15)
        assert not source.exhausted
    finally:
        source.close()

    indices = [_index(f.image) for f in frames]
    assert indices == list(range(N_FRAMES)) + list(range(15))
    assert len({f.meta.frame_id for f in frames}) == len(frames)  # ids stay unique
    assert _value(registry, "inspector_camera_reconnects_total", camera="cam1") == 0


def test_live_slow_consumer_gets_newest_and_counts_stale(
    video: Path, registry: CollectorRegistry
) -> None:
    # A file played live is read at its own 100 fps; the consumer takes 20 frames a second.
    source = CameraSource(_config(video, live=True), Metrics(registry))
    source.setup()
    frames: list[Frame] = []
    try:
        deadline = time.monotonic() + 5
        while not source.exhausted and time.monotonic() < deadline:
            frames += [f for f in source.poll(0.5) if isinstance(f, Frame)]
            time.sleep(0.05)
    finally:
        source.close()

    indices = [_index(f.image) for f in frames]
    assert indices == sorted(set(indices))  # newest first never happens: strictly increasing
    assert 2 <= len(frames) < N_FRAMES
    stale = _value(registry, "inspector_frames_dropped_total", camera="cam1", reason="stale")
    assert stale == N_FRAMES - len(frames)
    assert _value(registry, "inspector_frames_received_total", source="camera") == len(frames)


def test_fps_limits_the_rate(video: Path, registry: CollectorRegistry) -> None:
    source = CameraSource(_config(video, live=False, fps=50), Metrics(registry))
    source.setup()
    try:
        start = time.monotonic()
        frames = _collect(source, 11)
        elapsed = time.monotonic() - start
    finally:
        source.close()
    assert len(frames) == 11
    assert elapsed >= 10 / 50 * 0.95


# --- fakes for broken streams -----------------------------------------------------------------


class FakeCapture:
    """Yields ``frames`` images (then fails), or is not open at all."""

    def __init__(self, frames: Iterator[Any] | None) -> None:
        self.frames = frames
        self.released = False
        self._current: Any = None

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.frames is not None

    def grab(self) -> bool:
        time.sleep(0.001)  # a camera takes time to deliver
        assert self.frames is not None
        self._current = next(self.frames, None)
        return self._current is not None

    def retrieve(self) -> tuple[bool, Any]:
        return True, self._current

    def read(self) -> tuple[bool, Any]:
        return (True, self._current) if self.grab() else (False, None)

    def get(self, prop_id: int) -> float:
        return 0.0

    def release(self) -> None:
        self.released = True


def _images(generation: int, count: int | None = None) -> Iterator[np.ndarray]:
    i = 0
    while count is None or i < count:
        yield np.full((8, 10, 3), generation, np.uint8)
        i += 1


class RecordingSleep:
    """Records each delay and the camera_up gauge at that moment; waits only briefly."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.delays: list[float] = []
        self.up_while_waiting: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.up_while_waiting.append(_value(self.registry, "inspector_camera_up", camera="cam1"))
        time.sleep(0.001)


def test_broken_stream_reconnects_with_backoff(registry: CollectorRegistry) -> None:
    opened: list[tuple[int | str, int]] = []
    captures = iter(
        [
            FakeCapture(_images(1, count=5)),  # streams, then the read fails
            FakeCapture(None),  # reopen: not opened
            "raise",  # reopen: the backend raises
            FakeCapture(_images(2)),  # back
        ]
    )

    def factory(uri: int | str, api: int) -> FakeCapture:
        opened.append((uri, api))
        capture = next(captures)
        if capture == "raise":
            raise RuntimeError("backend exploded")
        assert isinstance(capture, FakeCapture)
        return capture

    sleep = RecordingSleep(registry)
    config = _config(
        "rtsp://cam.example/stream",
        backend="ffmpeg",
        reconnect_initial_s=0.5,
        reconnect_max_s=1.5,
    )
    source = CameraSource(config, Metrics(registry), capture_factory=factory, sleep=sleep)
    source.setup()  # never raises, even before the stream is up
    try:
        frames: list[Frame] = []
        generations: list[int] = []
        deadline = time.monotonic() + 5
        while 2 not in generations and time.monotonic() < deadline:
            frames += [f for f in source.poll(0.2) if isinstance(f, Frame)]
            generations = [int(f.image[0, 0, 0]) for f in frames]
        assert 2 in generations
        assert source.ready()
        assert _value(registry, "inspector_camera_up", camera="cam1") == 1
    finally:
        source.close()

    assert opened == [("rtsp://cam.example/stream", cv2.CAP_FFMPEG)] * 4
    assert _value(registry, "inspector_camera_reconnects_total", camera="cam1") == 3
    # Doubling from 0.5, capped at 1.5, shortened by at most 10 % jitter.
    assert len(sleep.delays) == 3
    for delay, base in zip(sleep.delays, [0.5, 1.0, 1.5], strict=True):
        assert base * 0.9 <= delay <= base
    assert sleep.up_while_waiting == [0, 0, 0]
    # Frame ids keep counting across the reconnect.
    ids = [int(f.meta.frame_id.split(":")[1]) for f in frames]
    assert ids == sorted(set(ids))
    assert _value(registry, "inspector_camera_up", camera="cam1") == 0  # closed


def test_invalid_frames_are_read_failures(registry: CollectorRegistry) -> None:
    bad = [np.zeros((0, 0, 3), np.uint8), np.zeros((4, 4, 3), np.float32), None, "junk"]
    calls = 0

    def factory(uri: int | str, api: int) -> FakeCapture:
        nonlocal calls
        calls += 1
        return FakeCapture(iter([bad[(calls - 1) % len(bad)]]))

    sleep = RecordingSleep(registry)
    source = CameraSource(
        _config("http://cam/mjpg"), Metrics(registry), capture_factory=factory, sleep=sleep
    )
    source.setup()
    try:
        wait_until(lambda: calls >= 6, 5, "6 opens")
        assert source.poll(0.01) == []
        assert not source.ready()
    finally:
        source.close()
    assert _value(registry, "inspector_camera_reconnects_total", camera="cam1") >= 5
    assert _value(registry, "inspector_frames_received_total", source="camera") == 0


def test_grayscale_frames_become_bgr(registry: CollectorRegistry) -> None:
    gray = np.full((6, 7), 42, np.uint8)
    source = CameraSource(
        _config("0", live=False),
        Metrics(registry),
        capture_factory=lambda uri, api: FakeCapture(iter([gray])),
    )
    source.setup()
    try:
        [frame] = _collect(source, 2)
    finally:
        source.close()
    assert frame.image.shape == (6, 7, 3)
    assert frame.meta.image_size == (6, 7)
    assert (frame.image == 42).all()


def test_missing_file_keeps_retrying_without_raising(
    tmp_path: Path, registry: CollectorRegistry
) -> None:
    sleep = RecordingSleep(registry)
    source = CameraSource(
        _config(tmp_path / "missing.avi", live=False, reconnect_initial_s=0.01),
        Metrics(registry),
        sleep=sleep,
    )
    source.setup()
    try:
        wait_until(
            lambda: _value(registry, "inspector_camera_reconnects_total", camera="cam1") >= 3,
            5,
            "3 reconnects",
        )
        assert source.poll(0.01) == []
        assert not source.ready()
        assert not source.exhausted
        assert _value(registry, "inspector_camera_up", camera="cam1") == 0
    finally:
        source.close()


def test_close_interrupts_a_long_backoff(
    tmp_path: Path, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    source = CameraSource(
        _config(tmp_path / "missing.avi", reconnect_initial_s=30), Metrics(registry)
    )
    source.setup()
    # The first open failed; the reader now waits 30 s.
    wait_until(lambda: "cannot open" in caplog.text, 10, "the first failed open")
    start = time.monotonic()
    source.close()
    assert time.monotonic() - start < 2
    assert not any(t.name == "camera-cam1" for t in threading.enumerate())


def test_pause_hands_out_nothing(registry: CollectorRegistry) -> None:
    source = CameraSource(
        _config("rtsp://x"),
        Metrics(registry),
        capture_factory=lambda uri, api: FakeCapture(_images(1)),
    )
    source.setup()
    try:
        source.pause()
        assert source.poll(0.05) == []
        source.resume()
        assert _collect(source, 1)
    finally:
        source.close()


def test_uri_parsing() -> None:
    assert parse_uri("0") == 0
    assert parse_uri(" 2 ") == 2
    assert parse_uri("rtsp://host/0") == "rtsp://host/0"
    assert parse_uri("/data/video.mp4") == "/data/video.mp4"


def test_file_failing_midway_ends_instead_of_replaying(registry: CollectorRegistry) -> None:
    good = np.full((4, 4, 3), 7, np.uint8)
    items = [good, good, np.zeros((0, 0, 3), np.uint8), good]
    opens = 0

    def factory(uri: int | str, api: int) -> FakeCapture:
        nonlocal opens
        opens += 1
        return FakeCapture(iter(items))

    source = CameraSource(
        _config("video.mp4", live=False), Metrics(registry), capture_factory=factory
    )
    source.setup()
    try:
        frames = _collect(source, 5)
        wait_until(lambda: source.exhausted, 5, "the end of the file")
    finally:
        source.close()
    assert len(frames) == 2
    assert opens == 1
    assert _value(registry, "inspector_camera_reconnects_total", camera="cam1") == 0


def test_reader_survives_an_unexpected_error(video: Path, registry: CollectorRegistry) -> None:
    class BadGet(FakeCapture):
        def get(self, prop_id: int) -> float:
            raise RuntimeError("driver bug")

    factories = iter([BadGet(_images(1)), FakeCapture(_images(2))])
    sleep = RecordingSleep(registry)
    # An existing file played live asks for its frame rate: the first capture blows up there.
    source = CameraSource(
        _config(video, live=True, reconnect_max_s=7),
        Metrics(registry),
        capture_factory=lambda uri, api: next(factories),
        sleep=sleep,
    )
    source.setup()
    try:
        frames = _collect(source, 1)
    finally:
        source.close()
    assert int(frames[0].image[0, 0, 0]) == 2
    assert sleep.delays[0] == 7
