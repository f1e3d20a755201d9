from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import Executor, Future
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fakes import make_frame, make_result
from prometheus_client import CollectorRegistry

from inspector.errors import ConfigError
from inspector.runtime.config import OverlaySinkConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Inspection
from inspector.runtime.sinks.overlays import OverlaySink, safe_name

H, W = 40, 56
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _inspection(
    frame_id: str, *, anomalous: bool = True, camera_id: str = "cam", seed: int = 0
) -> Inspection:
    message = make_result(frame_id, camera_id, anomalous=anomalous, image_size=(H, W))
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    heatmap = rng.random((16, 16), dtype=np.float32)  # model size, smaller than the frame
    mask = np.zeros((H, W), bool)
    mask[10:20, 15:30] = True
    frame = make_frame(image, frame_id, camera_id)
    return Inspection(message, frame, heatmap, mask if anomalous else None)


class Clock:
    """Strictly increasing fake UTC time, one second per call."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class Done:
    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []
        self._lock = threading.Lock()

    def __call__(self, exc: BaseException | None) -> None:
        with self._lock:
            self.calls.append(exc)


class InlineExecutor(Executor):
    """Runs submitted work on the calling thread: deterministic tests."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _sink(
    directory: Path, *, max_files: int = 1000, max_bytes: int = 10**9, **kwargs: Any
) -> OverlaySink:
    config = OverlaySinkConfig(directory=directory, max_files=max_files, max_bytes=max_bytes)
    return OverlaySink(config, Metrics(CollectorRegistry()), clock=Clock(), **kwargs)


@pytest.fixture
def inline() -> InlineExecutor:
    return InlineExecutor()


def _pngs(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*.png"))


def test_only_anomalous_frames_are_saved_as_frame_sized_pngs(tmp_path: Path) -> None:
    sink = _sink(tmp_path / "overlays")
    sink.setup()
    done = Done()
    sink.publish(_inspection("normal-1", anomalous=False), done)
    sink.publish(_inspection("bad-1"), done)
    sink.publish(_inspection("normal-2", anomalous=False), done)
    assert sink.flush(5.0)
    sink.close()
    assert done.calls == [None, None, None]
    files = _pngs(tmp_path / "overlays")
    assert [p.relative_to(tmp_path / "overlays").as_posix() for p in files] == [
        "cam/20250101T000001.000000Z_bad-1.png"
    ]
    assert files[0].read_bytes()[:8] == PNG_MAGIC
    image = cv2.imread(str(files[0]), cv2.IMREAD_UNCHANGED)
    assert image is not None and image.shape == (H, W, 3)
    # The mask outline (red in BGR) is drawn at the frame size.
    outline = (image[:, :, 2] == 255) & (image[:, :, 0] == 0) & (image[:, :, 1] == 0)
    assert outline[10, 15:30].any()
    assert sink.file_count == 1 and sink.total_bytes == files[0].stat().st_size


def test_done_waits_for_the_file_and_is_called_once(tmp_path: Path) -> None:
    seen: list[bool] = []
    sink = _sink(tmp_path)
    sink.setup()

    def done(exc: BaseException | None) -> None:
        assert exc is None
        seen.append(bool(_pngs(tmp_path)))

    for i in range(5):
        sink.publish(_inspection(f"f{i}"), done)
    sink.close()  # finishes the queue
    assert seen == [True] * 5
    assert len(_pngs(tmp_path)) == 5


def test_bounded_by_count_evicts_oldest(tmp_path: Path, inline: InlineExecutor) -> None:
    sink = _sink(tmp_path, max_files=3, executor=inline)
    sink.setup()
    for i in range(5):
        sink.publish(_inspection(f"f{i}"), Done())
    assert [p.name.split("_", 1)[1] for p in _pngs(tmp_path)] == ["f2.png", "f3.png", "f4.png"]
    assert sink.file_count == 3


def test_bounded_by_bytes_evicts_oldest(tmp_path: Path, inline: InlineExecutor) -> None:
    probe = _sink(tmp_path / "probe", executor=inline)
    probe.setup()
    size = probe.write(_inspection("probe")).stat().st_size
    assert size > 1024  # noise does not compress: every file has about this size
    sink = _sink(tmp_path / "o", max_bytes=int(size * 2.5), executor=inline)
    sink.setup()
    for i in range(5):
        sink.publish(_inspection(f"f{i}"), Done())
    names = [p.name.split("_", 1)[1] for p in _pngs(tmp_path / "o")]
    assert names == ["f3.png", "f4.png"]
    assert sink.total_bytes == sum(p.stat().st_size for p in _pngs(tmp_path / "o"))
    assert sink.total_bytes <= size * 2.5


def test_existing_files_are_counted_at_setup(tmp_path: Path, inline: InlineExecutor) -> None:
    old = []
    for i in range(3):
        path = tmp_path / "camA" / f"old{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(PNG_MAGIC + bytes(2000))
        os.utime(path, (1_000_000 + i, 1_000_000 + i))  # old0 is the oldest
        old.append(path)
    (tmp_path / "notes.txt").write_text("not an overlay, never deleted")
    sink = _sink(tmp_path, max_files=3, executor=inline)
    sink.setup()
    assert sink.file_count == 3 and sink.total_bytes == 3 * 2008
    sink.publish(_inspection("new"), Done())
    assert not old[0].exists() and old[1].exists() and old[2].exists()
    assert sink.file_count == 3
    assert (tmp_path / "notes.txt").exists()


def test_setup_trims_a_folder_already_over_its_bounds(tmp_path: Path) -> None:
    for i in range(4):
        path = tmp_path / "cam" / f"{i}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes(10))
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    sink = _sink(tmp_path, max_files=2)
    sink.setup()
    sink.close()
    assert [p.name for p in _pngs(tmp_path)] == ["2.png", "3.png"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("../x", "_x"),
        ("..", "_"),
        ("a/b\\c", "a_b_c"),
        (".hidden", "hidden"),
        ("-rf", "rf"),
        ("", "_"),
        ("inspector.frames:0:42", "inspector.frames_0_42"),
        ("ok-id_1.2", "ok-id_1.2"),
    ],
)
def test_safe_name(text: str, expected: str) -> None:
    assert safe_name(text) == expected


def test_safe_name_is_bounded_and_camera_folders_stay_distinct() -> None:
    assert len(safe_name("x" * 1000)) == 100
    assert safe_name("line/1", tag_changes=True) != safe_name("line_1", tag_changes=True)
    assert safe_name("line_1", tag_changes=True) == "line_1"


def test_traversal_ids_stay_inside_the_folder(tmp_path: Path, inline: InlineExecutor) -> None:
    root = tmp_path / "overlays"
    sink = _sink(root, executor=inline)
    sink.setup()
    sink.publish(_inspection("../../escape", camera_id="../../up"), Done())
    sink.publish(_inspection("/etc/passwd", camera_id=".."), Done())
    written = _pngs(tmp_path)
    assert len(written) == 2
    for path in written:
        assert path.resolve().is_relative_to(root.resolve())
        assert path.parent.parent == root


def test_a_failed_overlay_still_confirms_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = _sink(tmp_path)
    sink.setup()
    (tmp_path / "cam").write_text("a file where the camera folder should be")
    done = Done()
    with caplog.at_level(logging.WARNING, logger="inspector.runtime.sinks.overlays"):
        for i in range(3):
            sink.publish(_inspection(f"f{i}"), done)
        assert sink.flush(5.0)
    sink.close()
    assert done.calls == [None, None, None]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "not saved" in warnings[0].getMessage()


def test_a_full_queue_skips_overlays_without_blocking(tmp_path: Path) -> None:
    gate = threading.Event()

    class GatedExecutor(Executor):
        def __init__(self) -> None:
            self.threads: list[threading.Thread] = []

        def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
            def run() -> None:
                gate.wait(5.0)
                fn(*args, **kwargs)

            thread = threading.Thread(target=run)
            thread.start()
            self.threads.append(thread)
            return Future()

    executor = GatedExecutor()
    sink = _sink(tmp_path, executor=executor, max_pending=2)
    sink.setup()
    done = Done()
    for i in range(4):
        sink.publish(_inspection(f"f{i}"), done)
    assert done.calls == [None, None]  # the two skipped ones, at once
    assert not sink.flush(0.05)
    gate.set()
    assert sink.flush(5.0)
    for thread in executor.threads:
        thread.join()
    sink.close()
    assert done.calls == [None] * 4
    assert len(_pngs(tmp_path)) == 2


def test_publish_before_setup_or_after_close_confirms(tmp_path: Path) -> None:
    sink = _sink(tmp_path)
    done = Done()
    sink.publish(_inspection("early"), done)
    sink.setup()
    assert sink.ready()
    sink.close()
    assert not sink.ready()
    sink.publish(_inspection("late"), done)
    assert done.calls == [None, None]
    assert not _pngs(tmp_path)


def test_missing_directory_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"sinks\.overlays\.directory"):
        OverlaySink(OverlaySinkConfig(), Metrics(CollectorRegistry()))


def test_unusable_directory_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"sinks\.overlays\.directory"):
        _sink(tmp_path / "file" / "overlays").setup()
