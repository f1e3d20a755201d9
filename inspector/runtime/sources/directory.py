"""Replay of recorded frames from image files: a folder or a glob pattern."""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from inspector.dead_letters import ErrorType, FailureStage
from inspector.errors import ConfigError, ImageDecodeError, ImageTooLargeError
from inspector.imaging import read_image
from inspector.runtime.config import DirectorySourceConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Frame, FrameMeta
from inspector.runtime.sources.base import LocalSource

#: Extensions taken from a folder (a glob pattern takes whatever it matches).
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm", ".jp2"}
)


def _natural_key(name: str) -> list[int | str]:
    # frame_2 before frame_10: recorders rarely zero-pad their counters.
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class DirectorySource(LocalSource):
    """Image files replayed as frames, in natural name order (``frame_2`` before ``frame_10``).

    A file that cannot be read or decoded becomes a :class:`~inspector.runtime.records.DeadLetter`
    (``error_type="undecodable"``, or ``too_large`` over ``max_pixels`` read from the header
    before decoding; ``stage="decode"``), never a gap. Frame ids are file names
    relative to the folder (the path for a glob); with ``loop`` later passes append ``#<pass>``
    so ids stay unique.

    Args:
        config: Path, pacing and looping.
        metrics: Where frames and decode times are counted.
        clock: Monotonic clock for pacing and ``received_monotonic``.
        sleep: Waits for pacing.
    """

    name = "directory"

    def __init__(
        self,
        config: DirectorySourceConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._files: list[tuple[Path, str]] = []
        self._index = 0
        self._pass = 0
        self._next_due = float("-inf")
        self._m_received = metrics.frames_received.labels(source="directory")
        self._m_decode = metrics.stage_seconds.labels(stage="decode")

    def setup(self) -> None:
        """List the files.

        Raises:
            ConfigError: The folder holds no images or the pattern matches no file.
        """
        self._files = self._list_files()
        if not self._files:
            raise ConfigError(
                f"sources: directory source {self.config.camera_id!r}: no image files "
                f"{'in' if Path(self.config.path).is_dir() else 'match'} {self.config.path}"
            )

    def _list_files(self) -> list[tuple[Path, str]]:
        folder = Path(self.config.path)
        if folder.is_dir():
            found = [
                (p, p.name)
                for p in folder.iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            ]
        else:
            found = [(Path(p), p) for p in glob.glob(self.config.path) if Path(p).is_file()]
        return sorted(found, key=lambda item: _natural_key(item[1]))

    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        """Read the next file, paced to ``fps``; nothing while paused or after the last file."""
        if self._paused or self.exhausted or not self._files:
            self._sleep(timeout)
            return []
        if self.config.fps is not None:
            wait = self._next_due - self._clock()
            if wait > timeout:
                self._sleep(timeout)
                return []
            if wait > 0:
                self._sleep(wait)
            self._schedule_next(1.0 / self.config.fps)
        path, name = self._files[self._index]
        frame_id = name if self._pass == 0 else f"{name}#{self._pass}"
        self._index += 1
        if self._index == len(self._files) and self.config.loop:
            self._index = 0
            self._pass += 1
        self._m_received.inc()
        start = time.perf_counter()
        try:
            image = read_image(path, self.config.max_pixels)
        except ImageDecodeError as exc:
            return [
                DeadLetter(
                    reason=str(exc),
                    error_type=ErrorType.TOO_LARGE
                    if isinstance(exc, ImageTooLargeError)
                    else ErrorType.UNDECODABLE,
                    stage=FailureStage.DECODE,
                    camera_id=self.config.camera_id,
                    raw=None,
                    failed_at=datetime.now(UTC).isoformat(),
                )
            ]
        decode_ms = (time.perf_counter() - start) * 1e3
        self._m_decode.observe(decode_ms / 1e3)
        meta = FrameMeta(
            frame_id=frame_id,
            camera_id=self.config.camera_id,
            image_size=(image.shape[0], image.shape[1]),
            received_monotonic=self._clock(),
            decode_ms=decode_ms,
        )
        return [Frame(meta=meta, image=image)]

    def _schedule_next(self, period: float) -> None:
        now = self._clock()
        # Keep to the grid when on time; after a stall start a new one instead of a burst.
        if now - self._next_due < period:
            self._next_due += period
        else:
            self._next_due = now + period

    @property
    def exhausted(self) -> bool:
        """``True`` after the last file when not looping."""
        return bool(self._files) and self._index >= len(self._files)
