from __future__ import annotations

from datetime import datetime
from pathlib import Path

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inspector.errors import ConfigError
from inspector.runtime.config import DirectorySourceConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Frame
from inspector.runtime.sources.directory import DirectorySource


class FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _write(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((12, 16, 3), value, np.uint8))


def _source(path: Path | str, **kwargs: object) -> tuple[DirectorySource, CollectorRegistry]:
    registry = CollectorRegistry()
    fake = FakeTime()
    config = DirectorySourceConfig(path=str(path), camera_id="line1", **kwargs)  # type: ignore[arg-type]
    source = DirectorySource(config, Metrics(registry), clock=fake.clock, sleep=fake.sleep)
    source.setup()
    return source, registry


def _frames(source: DirectorySource, n: int) -> list[Frame]:
    out: list[Frame] = []
    for _ in range(n):
        items = source.poll(1.0)
        assert len(items) == 1
        assert isinstance(items[0], Frame)
        out.append(items[0])
    return out


def test_folder_in_natural_order_then_exhausted(tmp_path: Path) -> None:
    for value, name in [(10, "frame_10.png"), (1, "frame_1.png"), (2, "frame_2.jpg")]:
        _write(tmp_path / name, value * 10)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    source, registry = _source(tmp_path)

    frames = _frames(source, 3)

    assert [f.meta.frame_id for f in frames] == ["frame_1.png", "frame_2.jpg", "frame_10.png"]
    assert [int(f.image.mean()) for f in frames] == [10, 20, 100]
    for frame in frames:
        assert frame.meta.camera_id == "line1"
        assert frame.meta.image_size == (12, 16)
        assert frame.image.shape == (12, 16, 3) and frame.image.dtype == np.uint8
        assert frame.meta.received_monotonic == 100.0
        assert frame.meta.decode_ms >= 0
    assert source.exhausted
    assert source.poll(0.01) == []
    assert (
        registry.get_sample_value("inspector_frames_received_total", {"source": "directory"}) == 3
    )
    assert registry.get_sample_value("inspector_stage_seconds_count", {"stage": "decode"}) == 3
    source.close()


def test_glob_pattern(tmp_path: Path) -> None:
    _write(tmp_path / "frames" / "b.png", 2)
    _write(tmp_path / "frames" / "a.png", 1)
    _write(tmp_path / "frames" / "c.jpg", 3)
    pattern = str(tmp_path / "frames" / "*.png")
    source, _ = _source(pattern)

    frames = _frames(source, 2)

    assert [f.meta.frame_id for f in frames] == [
        str(tmp_path / "frames" / "a.png"),
        str(tmp_path / "frames" / "b.png"),
    ]
    assert source.exhausted


def test_loop_restarts_with_unique_ids(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", 1)
    _write(tmp_path / "b.png", 2)
    source, _ = _source(tmp_path, loop=True)

    frames = _frames(source, 5)

    assert [f.meta.frame_id for f in frames] == ["a.png", "b.png", "a.png#1", "b.png#1", "a.png#2"]
    assert not source.exhausted


def test_unreadable_file_becomes_dead_letter(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", 1)
    (tmp_path / "b.png").write_bytes(b"garbage, not a png")
    _write(tmp_path / "c.png", 3)
    source, registry = _source(tmp_path)

    items = [source.poll(1.0) for _ in range(3)]

    assert isinstance(items[0][0], Frame)
    letter = items[1][0]
    assert isinstance(letter, DeadLetter)
    assert letter.error_type == "undecodable"
    assert letter.stage == "decode"
    assert letter.camera_id == "line1"
    assert letter.raw is None
    assert "b.png" in letter.reason
    assert datetime.fromisoformat(letter.failed_at).tzinfo is not None
    assert isinstance(items[2][0], Frame)
    assert source.exhausted
    assert (
        registry.get_sample_value("inspector_frames_received_total", {"source": "directory"}) == 3
    )


def test_file_deleted_after_setup_becomes_dead_letter(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", 1)
    source, _ = _source(tmp_path)
    (tmp_path / "a.png").unlink()

    [letter] = source.poll(1.0)

    assert isinstance(letter, DeadLetter)
    assert "a.png" in letter.reason


@pytest.mark.parametrize("kind", ["empty folder", "no match", "missing folder"])
def test_nothing_to_read_is_a_config_error(tmp_path: Path, kind: str) -> None:
    (tmp_path / "readme.txt").write_text("no images")
    path = {
        "empty folder": str(tmp_path),
        "no match": str(tmp_path / "*.png"),
        "missing folder": str(tmp_path / "nope"),
    }[kind]
    config = DirectorySourceConfig(path=path)
    source = DirectorySource(config, Metrics(CollectorRegistry()))

    with pytest.raises(ConfigError, match="no image files") as info:
        source.setup()
    assert path in str(info.value)


def test_fps_paces_with_injected_clock(tmp_path: Path) -> None:
    for i in range(4):
        _write(tmp_path / f"{i}.png", i)
    fake = FakeTime()
    config = DirectorySourceConfig(path=str(tmp_path), fps=10)
    source = DirectorySource(
        config, Metrics(CollectorRegistry()), clock=fake.clock, sleep=fake.sleep
    )
    source.setup()

    handed_at = []
    for _ in range(3):
        assert len(source.poll(1.0)) == 1
        handed_at.append(fake.now)
    # Not due within the timeout: waits the timeout and returns nothing.
    assert source.poll(0.04) == []
    assert fake.sleeps[-1] == pytest.approx(0.04)
    assert len(source.poll(1.0)) == 1
    handed_at.append(fake.now)

    assert np.diff(handed_at) == pytest.approx([0.1, 0.1, 0.1])


def test_pause_hands_out_nothing(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", 1)
    source, _ = _source(tmp_path)
    source.pause()
    assert source.poll(0.01) == []
    source.resume()
    assert len(source.poll(0.01)) == 1


def test_an_image_over_max_pixels_is_a_too_large_dead_letter(tmp_path: Path) -> None:
    _write(tmp_path / "a.png", 10)  # 12 x 16 = 192 px
    assert cv2.imwrite(str(tmp_path / "b.png"), np.zeros((20, 20, 3), np.uint8))  # 400 px
    source, _ = _source(tmp_path, max_pixels=200)
    first, second = source.poll(1.0), source.poll(1.0)
    assert isinstance(first[0], Frame)
    (letter,) = second
    assert isinstance(letter, DeadLetter) and letter.error_type == "too_large"
    assert "20 x 20 px" in letter.reason and "b.png" in letter.reason
