"""Shared by the retention tests: frames, clocks, folder walks and a sink factory.

Walks and index reads here use the file system and sqlite3 directly, not the code under test.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sqlite3
import threading
import zlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from fakes import make_frame, make_result
from prometheus_client import CollectorRegistry

from inspector.runtime.records import Inspection, RawMessage
from inspector.runtime.retention.config import RetentionConfig
from inspector.runtime.retention.files import FILES_DIR
from inspector.runtime.retention.reader import INDEX_NAME
from inspector.runtime.sinks.retention import RetentionMetrics, RetentionSink

H, W = 96, 128
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
WRITER = Path(__file__).with_name("retention_writer.py")


def load_writer() -> Any:
    spec = importlib.util.spec_from_file_location("retention_writer", WRITER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Clock:
    """A UTC clock that moves only when told to (thread-safe enough: one attribute)."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Done:
    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []
        self._lock = threading.Lock()

    def __call__(self, exc: BaseException | None) -> None:
        with self._lock:
            self.calls.append(exc)


def inspection(
    frame_id: str,
    *,
    anomalous: bool = True,
    camera_id: str = "cam",
    size: tuple[int, int] = (H, W),
    raw: bytes | None = None,
) -> Inspection:
    rng = np.random.default_rng(zlib.crc32(frame_id.encode("utf-8", "surrogatepass")))
    image = rng.integers(0, 255, (*size, 3), dtype=np.uint8)  # noise: PNGs of a known ~size
    message = make_result(frame_id, camera_id, anomalous=anomalous, image_size=size)
    frame = make_frame(image, frame_id, camera_id)
    if raw is not None:
        frame = dataclasses.replace(frame, raw=RawMessage(raw, None, (), "frames", 0, 7))
    mask = np.zeros(size, bool)
    mask[size[0] // 4 : size[0] // 2, size[1] // 4 : size[1] // 2] = True
    heatmap = rng.random((16, 16), dtype=np.float32)
    return Inspection(message, frame, heatmap if anomalous else None, mask if anomalous else None)


def folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def indexed_and_on_disk(root: Path) -> tuple[set[str], set[str]]:
    """File names the index references, and files under files/ (read without our code)."""
    db = sqlite3.connect(root / INDEX_NAME)
    try:
        rows = db.execute(
            "SELECT frame_file, overlay_file, mask_file, result_file FROM frames"
        ).fetchall()
    finally:
        db.close()
    indexed = {n for r in rows for n in r if n}
    on_disk = {p.relative_to(root).as_posix() for p in (root / FILES_DIR).rglob("*") if p.is_file()}
    return indexed, on_disk


def dropped(registry: CollectorRegistry, reason: str) -> float:
    value = registry.get_sample_value("inspector_retention_dropped_total", {"reason": reason})
    assert value is not None
    return value


class SinkMaker:
    """Builds set-up retention sinks in a test's folder; :meth:`close_all` closes them."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.made: list[RetentionSink] = []

    def __call__(
        self,
        cls: type[RetentionSink] = RetentionSink,
        *,
        path: Path | None = None,
        clock: Callable[[], datetime] | None = None,
        housekeeping_s: float = 60.0,
        **config: Any,
    ) -> tuple[RetentionSink, CollectorRegistry]:
        folder = path or self.tmp_path / "retention"
        settings = RetentionConfig(enabled=True, path=folder, **config)
        registry = CollectorRegistry()
        sink = cls(
            settings,
            RetentionMetrics(registry),
            clock=clock or Clock(),
            housekeeping_s=housekeeping_s,
        )
        sink.setup()
        self.made.append(sink)
        return sink, registry

    def close_all(self) -> None:
        for sink in self.made:
            sink.close()
