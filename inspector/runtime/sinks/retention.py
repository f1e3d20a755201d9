"""The retention sink: flagged frames and a sample of good ones, kept for review and labelling.

A retained copy is best effort, like an overlay, and must never cost a result or hold up the
pipeline:

* :meth:`RetentionSink.publish` confirms the frame (``done(None)``) before anything else, then
  only appends it to a bounded queue; one writer thread encodes and writes;
* a full queue (a slow or stalled disk) drops the retained copy, as does a write that fails;
  each drop is counted by reason in ``inspector_retention_dropped_total`` and warned about at
  most once a minute;
* ``inspector_retention_bytes`` shows what the folder holds (files plus index).

What is kept, and how it is bounded and made crash-safe, is
:class:`~inspector.runtime.retention.store.RetentionStore`'s business.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge

from inspector.errors import ConfigError
from inspector.runtime.pacing import RateLimitedLog
from inspector.runtime.records import Inspection
from inspector.runtime.retention.config import RetentionConfig
from inspector.runtime.retention.encode import RETAIN_KINDS, item_from_inspection, retain_kind
from inspector.runtime.retention.reader import utc_now
from inspector.runtime.retention.records import (
    DROP_REASONS,
    DropReason,
    RetainedFrame,
    RetentionDroppedError,
)
from inspector.runtime.retention.store import RetentionStore
from inspector.runtime.sinks.base import DoneFn, Sink

log = logging.getLogger(__name__)

#: How often an idle writer applies the age bound.
HOUSEKEEPING_S = 60.0
#: How long :meth:`RetentionSink.close` lets the writer finish the queue.
CLOSE_TIMEOUT_S = 10.0


class RetentionMetrics:
    """The retention sink's metrics, registered on ``registry``.

    Every label value is from a fixed set, created at zero so dashboards see the series
    before the first drop.

    Args:
        registry: The daemon's registry (``Metrics.registry``); tests pass a fresh one.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.dropped = Counter(
            "inspector_retention_dropped",
            "Retained copies not written (the results were delivered): queue_full, too_large, "
            "full (labelled frames awaiting export fill the folder), disk_error, encode_error.",
            ["reason"],
            registry=registry,
        )
        self.retained = Counter(
            "inspector_retention_frames",
            "Frames retained for review: flagged, or sampled among the good ones.",
            ["kind"],
            registry=registry,
        )
        self.bytes = Gauge(
            "inspector_retention_bytes",
            "Bytes the retention folder holds: retained files plus their index.",
            registry=registry,
        )
        for reason in DROP_REASONS:
            self.dropped.labels(reason)
        for kind in RETAIN_KINDS:
            self.retained.labels(kind)


class RetentionSink(Sink):
    """Keeps flagged frames and sampled good ones in ``config.path`` (see the module).

    Args:
        config: The ``retention:`` section (``path`` must be set).
        metrics: Where drops, retained frames and bytes are counted.
        clock: Current UTC time (retention times, the age bound).
        housekeeping_s: How often an idle writer applies the age bound.

    Raises:
        ConfigError: ``config.path`` is ``None``.
    """

    name = "retention"

    def __init__(
        self,
        config: RetentionConfig,
        metrics: RetentionMetrics,
        *,
        clock: Callable[[], datetime] = utc_now,
        housekeeping_s: float = HOUSEKEEPING_S,
    ) -> None:
        if config.path is None:
            raise ConfigError("retention.path: no folder given")
        self.config = config
        self.path = config.path
        self.metrics = metrics
        self.clock = clock
        self.housekeeping_s = housekeeping_s
        self._store: RetentionStore | None = None
        self._queue: deque[Inspection] = deque()
        # Guards _queue, _busy, _stopping; notified on every change of them.
        self._changed = threading.Condition()
        self._busy = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._warn = RateLimitedLog(log, 60.0).warning

    # --- lifecycle ----------------------------------------------------------------------------

    def setup(self) -> None:
        """Open (and reconcile) the folder, start the writer.

        Raises:
            ConfigError: The folder or its index cannot be used.
        """
        store = RetentionStore(
            self.path,
            max_bytes=self.config.max_bytes,
            max_age_s=self.config.max_age_hours * 3600.0,
            clock=self.clock,
        )
        try:
            store.evict_expired()  # frames that aged while the daemon was down
        except (OSError, sqlite3.Error) as exc:
            store.close()
            raise ConfigError(f"retention.path: cannot use {self.path}: {exc}") from exc
        self._store = store
        self.metrics.bytes.set(store.total_bytes)
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="inspector-retention", daemon=True)
        self._thread.start()
        log.info(
            "retention: %d frame(s), %d byte(s) in %s",
            self._store.count(),
            self._store.total_bytes,
            self.path,
        )

    @property
    def store(self) -> RetentionStore:
        """The open store, for queries and labels (the console's routes).

        Raises:
            ConfigError: :meth:`setup` has not run.
        """
        if self._store is None:
            raise ConfigError("retention: the sink is not set up")
        return self._store

    def ready(self) -> bool:
        """Whether the writer runs."""
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def flush(self, timeout: float) -> bool:
        """Wait until every queued frame is written or dropped and the writer is idle.

        Returns:
            ``False`` on timeout.
        """
        with self._changed:
            return self._changed.wait_for(
                lambda: not self._queue and not self._busy, timeout=max(0.0, timeout)
            )

    def close(self) -> None:
        """Let the writer finish the queue (at most ``max_pending`` frames), then stop."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(CLOSE_TIMEOUT_S)
            if thread.is_alive():  # a stalled disk: leave it the store rather than pull it
                log.warning("retention: writer still busy after %.0f s; left", CLOSE_TIMEOUT_S)
                return
        if self._store is not None:
            self._store.close()
            self._store = None

    # --- publishing ---------------------------------------------------------------------------

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Confirm at once, then queue the frame if it is to be retained.

        ``done`` is called exactly once, with ``None``, before anything else: a retained copy
        never holds a frame's acknowledgement.
        """
        done(None)
        if retain_kind(inspection.message, self.config.good_sample_rate) is None:
            return
        with self._changed:
            if self._stopping:  # closed: the daemon is past its last frame
                return
            accepted = len(self._queue) < self.config.max_pending
            if accepted:
                self._queue.append(inspection)
                self._changed.notify_all()
        if not accepted:
            self._drop("queue_full", inspection, f"{self.config.max_pending} frame(s) waiting")

    def before_write(self, inspection: Inspection) -> None:
        """Hook run on the writer thread before each frame is written (nothing by default)."""

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(
                    lambda: bool(self._queue) or self._stopping, timeout=self.housekeeping_s
                )
                if not self._queue and self._stopping:
                    return
                inspection = self._queue.popleft() if self._queue else None
                self._busy = True  # housekeeping too: flush() waits for its files to go
            try:
                if inspection is None:
                    self._housekeeping()
                else:
                    self.before_write(inspection)
                    self.write(inspection)
            except Exception:  # the writer must outlive any one frame
                log.exception("retention: writer failed")
            finally:
                with self._changed:
                    self._busy = False
                    self._changed.notify_all()

    def write(self, inspection: Inspection) -> RetainedFrame | None:
        """Encode and retain one frame now, on the calling thread; ``None`` if dropped."""
        store = self.store
        kind = retain_kind(inspection.message, self.config.good_sample_rate) or "sampled"
        try:
            try:
                item = item_from_inspection(inspection, self.config.image_format)
            except Exception as exc:  # a picture OpenCV refuses must not stop the writer
                raise RetentionDroppedError("encode_error", str(exc)) from exc
            retained = store.retain(item)
        except RetentionDroppedError as exc:
            self._drop(exc.reason, inspection, str(exc))
            return None
        except (OSError, sqlite3.Error) as exc:  # an eviction's or the index's failure
            self._drop("disk_error", inspection, f"{type(exc).__name__}: {exc}")
            return None
        finally:
            self.metrics.bytes.set(store.total_bytes)
        self.metrics.retained.labels(kind).inc()
        return retained

    def _housekeeping(self) -> None:
        store = self.store
        if store.evict_expired():
            self.metrics.bytes.set(store.total_bytes)

    def _drop(self, reason: DropReason, inspection: Inspection, why: str) -> None:
        self.metrics.dropped.labels(reason).inc()
        self._warn(
            "retention: frame %r of camera %r not retained (%s): %s",
            inspection.message.frame_id[:64],
            inspection.message.camera_id[:64],
            reason,
            why,
        )


__all__ = ["CLOSE_TIMEOUT_S", "HOUSEKEEPING_S", "RetentionMetrics", "RetentionSink"]
