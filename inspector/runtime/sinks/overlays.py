"""Heat-map overlays of anomalous frames, saved as PNG files in a bounded folder.

Overlays are best-effort diagnostics for people, not results: the result itself goes to the
other sinks. So this sink never fails a frame and never holds the pipeline up for long:

* normal frames are confirmed at once; anomalous ones are drawn and encoded on a background
  worker thread and confirmed after their file is written;
* a failed overlay (disk full, bad array...) is logged (rate-limited) and still confirmed with
  ``done(None)``, so it can neither block delivery nor cause redelivery;
* at most ``max_pending`` overlays wait for the worker; beyond that new ones are skipped (and
  logged), so a slow disk costs diagnostics, never throughput or memory.

The folder stays within ``max_files`` files and ``max_bytes`` bytes: after each write the
oldest files are deleted first. The files are tracked in an in-memory index (built by one scan
at :meth:`OverlaySink.setup`), so a write costs no directory listing.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from inspector.errors import ConfigError
from inspector.imaging import draw_mask_outline, heatmap_overlay, write_png
from inspector.runtime.config import OverlaySinkConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import RateLimitedLog
from inspector.runtime.records import Inspection
from inspector.runtime.sinks.base import DoneFn, Sink

log = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Longest sanitised id in a file name; keeps names far below the 255-byte limit.
_MAX_NAME = 100


def safe_name(text: str, *, tag_changes: bool = False) -> str:
    """A file-name-safe version of an id: no separators, no leading dots, bounded length.

    Anything outside ``A-Z a-z 0-9 . _ -`` becomes ``_`` and leading dots/dashes are dropped,
    so ``../x`` can only ever name a file inside the folder.

    Args:
        text: The id (camera or frame id).
        tag_changes: Append ``-<8 hex of sha1(text)>`` when the id had to be changed, so two
            distinct ids never share a name (used for camera folders).

    Returns:
        A non-empty name.
    """
    cleaned = _UNSAFE.sub("_", text).lstrip(".-")[:_MAX_NAME] or "_"
    if tag_changes and cleaned != text:
        cleaned += "-" + hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return cleaned


def _utc_now() -> datetime:
    return datetime.now(UTC)


class OverlaySink(Sink):
    """Saves ``<directory>/<camera>/<UTC time>_<frame id>.png`` for anomalous frames.

    Each file is the frame with the anomaly heat map blended over it and the defect mask
    outlined, at the frame's own size. Names: ``20250101T120000.123456Z_<frame id>.png``
    (sortable by time) with ids passed through :func:`safe_name`; camera folders get a hash
    suffix when the id had to be changed.

    Args:
        config: Folder and bounds (``directory`` must not be ``None``).
        metrics: Unused today (overlay failures are not frame failures); kept for the common
            sink signature.
        executor: Runs the drawing and writing; by default the sink owns a single worker
            thread. An injected executor is not shut down by :meth:`close`.
        clock: Current UTC time for file names.
        max_pending: Overlays allowed to wait for the executor before new ones are skipped.
            Each holds one of the pipeline's in-flight slots until written, so this also caps
            how much a slow disk can throttle the pipeline.

    Raises:
        ConfigError: ``config.directory`` is ``None``.
    """

    name = "overlays"

    def __init__(
        self,
        config: OverlaySinkConfig,
        metrics: Metrics,
        *,
        executor: Executor | None = None,
        clock: Callable[[], datetime] = _utc_now,
        max_pending: int = 64,
    ) -> None:
        if config.directory is None:
            raise ConfigError("sinks.overlays.directory: no folder given")
        self.directory = config.directory
        self.max_files = config.max_files
        self.max_bytes = config.max_bytes
        self.metrics = metrics
        self.clock = clock
        self.max_pending = max(1, max_pending)
        self._executor = executor
        self._owns_executor = executor is None
        # path -> size, oldest first (dicts keep insertion order); guarded by _index_lock.
        self._index: dict[Path, int] = {}
        self._total_bytes = 0
        self._index_lock = threading.Lock()
        self._pending = 0
        self._idle = threading.Condition()
        self._warn = RateLimitedLog(log, 60.0).warning
        self._ready = False

    # --- lifecycle ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Create the folder, index the overlays already there (and trim them), start the worker.

        Raises:
            ConfigError: The folder cannot be created or read.
        """
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            found = []
            for path in self.directory.glob("*/*.png"):
                stat = path.stat()
                found.append((stat.st_mtime, str(path), path, stat.st_size))
        except OSError as exc:
            raise ConfigError(
                f"sinks.overlays.directory: cannot use {self.directory}: {exc.strerror or exc}"
            ) from exc
        with self._index_lock:
            self._index = {path: size for _, _, path, size in sorted(found)}
            self._total_bytes = sum(self._index.values())
            self._evict_locked()
        if self._owns_executor and self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="inspector-overlays")
        self._ready = True
        log.debug(
            "overlays: %d file(s), %d byte(s) in %s",
            self.file_count,
            self.total_bytes,
            self.directory,
        )

    def ready(self) -> bool:
        """Whether :meth:`setup` ran and :meth:`close` did not."""
        return self._ready

    def flush(self, timeout: float) -> bool:
        """Wait until every accepted overlay is written (or failed) and confirmed."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=max(0.0, timeout))

    def close(self) -> None:
        """Finish the queued overlays (at most ``max_pending``) and stop the owned worker."""
        self._ready = False
        executor = self._executor
        if self._owns_executor and executor is not None:
            self._executor = None
            executor.shutdown(wait=True)

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Confirm normal frames at once; queue an overlay for anomalous ones.

        ``done`` is always called exactly once, with ``None``: overlay failures are logged,
        never reported as delivery failures.
        """
        if not inspection.message.is_anomalous:
            done(None)
            return
        with self._idle:
            accepted = self._pending < self.max_pending
            if accepted:
                self._pending += 1
        if not accepted:
            self._warn(
                "overlays: %d overlay(s) already waiting; skipping frame %s of camera %s",
                self.max_pending,
                inspection.message.frame_id,
                inspection.message.camera_id,
            )
            done(None)
            return
        try:
            executor = self._executor
            if executor is None:
                raise RuntimeError("the overlay sink is not set up or already closed")
            executor.submit(self._write_then_done, inspection, done)
        except Exception as exc:  # RuntimeError once shut down; never raise from publish
            self._free()
            self._warn("overlays: cannot queue frame %s: %s", inspection.message.frame_id, exc)
            done(None)

    def _write_then_done(self, inspection: Inspection, done: DoneFn) -> None:
        try:
            try:
                self.write(inspection)
            except Exception as exc:
                self._warn(
                    "overlays: frame %s of camera %s not saved: %s: %s",
                    inspection.message.frame_id,
                    inspection.message.camera_id,
                    type(exc).__name__,
                    exc,
                )
            try:
                done(None)
            except Exception:  # on a worker thread nobody else would see it
                log.exception("overlays: delivery callback failed")
        finally:
            self._free()

    def _free(self) -> None:
        with self._idle:
            self._pending -= 1
            self._idle.notify_all()

    def write(self, inspection: Inspection) -> Path:
        """Draw and save one overlay now, on the calling thread, then enforce the bounds.

        Args:
            inspection: The result with its frame, heat map and mask.

        Returns:
            The file written (it may already be evicted if it alone exceeds ``max_bytes``).

        Raises:
            InspectorError: The PNG cannot be encoded or written.
        """
        message, frame = inspection.message, inspection.frame
        if isinstance(frame.image, torch.Tensor):  # decoded on the GPU: RGB (3, h, w)
            image = np.ascontiguousarray(frame.image.permute(1, 2, 0).flip(-1).cpu().numpy())
        else:
            image = frame.image
        picture = (
            image.copy()  # only anomalous frames are saved, and those carry their map
            if inspection.heatmap is None
            else heatmap_overlay(image, inspection.heatmap)
        )
        if inspection.mask is not None:
            picture = draw_mask_outline(picture, inspection.mask)
        now = self.clock().astimezone(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S.%fZ")
        path = (
            self.directory
            / safe_name(message.camera_id, tag_changes=True)
            / f"{stamp}_{safe_name(message.frame_id)}.png"
        )
        write_png(path, picture)
        try:
            size = path.stat().st_size
        except OSError:  # deleted under us: nothing to account for
            return path
        with self._index_lock:
            self._total_bytes += size - self._index.pop(path, 0)
            self._index[path] = size
            self._evict_locked()
        return path

    def _evict_locked(self) -> None:
        # Oldest first until both bounds hold; strict, so the folder never exceeds them.
        while self._index and (
            len(self._index) > self.max_files or self._total_bytes > self.max_bytes
        ):
            oldest = next(iter(self._index))
            self._total_bytes -= self._index.pop(oldest)
            try:
                oldest.unlink(missing_ok=True)
            except OSError as exc:
                self._warn("overlays: cannot delete %s: %s", oldest, exc.strerror or exc)

    @property
    def file_count(self) -> int:
        """Overlay files currently tracked."""
        with self._index_lock:
            return len(self._index)

    @property
    def total_bytes(self) -> int:
        """Their total size in bytes."""
        with self._index_lock:
            return self._total_bytes


__all__ = ["OverlaySink", "safe_name"]
