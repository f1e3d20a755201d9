"""Frames from an OpenCV camera: a device, a network stream, a GStreamer pipeline or a video file.

A background reader thread owns the capture (OpenCV captures are not thread-safe) and does the
slow, blocking part: opening, reading, reconnecting with exponential backoff. It hands frames
to :meth:`CameraSource.poll` through a small buffer:

* live streams keep only the newest frame; every frame overwritten before it was taken is
  counted as a stale drop, so a slow model never works through an ever older backlog;
* files (``live=False``) fill a bounded read-ahead buffer and the reader waits for room, so
  every frame is handed out exactly once, in order.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from inspector.runtime.config import CameraSourceConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import Backoff, RateLimitedLog
from inspector.runtime.records import DeadLetter, Frame
from inspector.runtime.sources.base import LocalSource
from inspector.runtime.sources.capture import (
    BACKENDS,
    CameraSeries,
    Captured,
    CaptureFactory,
    CaptureLike,
    as_bgr,
    open_cv2,
    parse_uri,
)

log = logging.getLogger(__name__)

#: Frames a file source decodes ahead of the consumer.
_READ_AHEAD = 4
#: Reconnect delays are shortened by up to this fraction at random, so that many cameras
#: behind one recorder do not retry in lockstep.
_JITTER = 0.1
#: While a camera stays down, repeat the warning at most this often (seconds).
_LOG_EVERY_S = 60.0
#: Frame rate assumed for a video file that does not declare one (simulated live camera).
_DEFAULT_FILE_FPS = 30.0


class _EndOfFileError(Exception):
    """A file ended (not an error)."""


class _StreamBrokenError(Exception):
    """Reading failed; the capture must be reopened."""


class CameraSource(LocalSource):
    """One OpenCV camera or video file as a frame source.

    :meth:`setup` never fails because a camera is down: cameras come and go, so the reader
    keeps reconnecting (``inspector_camera_up`` 0, :meth:`ready` ``False``) until it streams.

    Args:
        config: Camera settings.
        metrics: Where frames, drops, reconnects and camera health are counted.
        capture_factory: Opens a capture from ``(device index or uri, cv2 API)``; default
            ``cv2.VideoCapture``.
        clock: Monotonic clock for pacing and ``received_monotonic``.
        sleep: Waits between reconnects and for pacing. Default: a wait that :meth:`close`
            interrupts, so a camera in a 30 s backoff still closes at once.
    """

    name = "camera"

    def __init__(
        self,
        config: CameraSourceConfig,
        metrics: Metrics,
        *,
        capture_factory: CaptureFactory | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._factory = capture_factory or open_cv2
        self._clock = clock
        self._stop = threading.Event()
        self._sleep = sleep or self._interruptible_sleep
        self._api = BACKENDS[config.backend]
        self._cond = threading.Condition()
        self._buffer: deque[Captured] = deque()
        self._thread: threading.Thread | None = None
        self._up = False
        self._ended = False  # the reader finished (file ended without loop, or closed)
        self._next_due = float("-inf")
        self._warnings = RateLimitedLog(log, _LOG_EVERY_S, clock)
        self._seq = 0  # frames read; ids count on across reconnects and loops, so stay unique
        self._series = CameraSeries.bind(metrics, config.camera_id, "camera")

    # --- Source API ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Start the reader thread; it opens the capture and keeps it open."""
        if self._thread is not None:
            return
        self._series.up.set(0)
        self._thread = threading.Thread(
            target=self._run, name=f"camera-{self.config.camera_id}", daemon=True
        )
        self._thread.start()

    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        """Return the next frame (live: the newest one), waiting up to ``timeout`` seconds.

        Paced to ``fps`` when set. Returns nothing while paused or once the file has ended.
        """
        if self._paused or self.exhausted:
            self._sleep(timeout)
            return []
        if self.config.fps is not None:
            wait = self._next_due - self._clock()
            if wait > timeout:
                self._sleep(timeout)
                return []
            if wait > 0:
                self._sleep(wait)
                timeout -= wait
        item = self._take(timeout)
        if item is None:
            return []
        self._schedule_next()
        self._series.received.inc()
        self._series.decode.observe(item.decode_ms / 1e3)
        return [item.to_frame(self.config.camera_id)]

    @property
    def exhausted(self) -> bool:
        """``True`` once a file ended (without ``loop``) and every frame was handed out."""
        with self._cond:
            return self._ended and not self._buffer

    def ready(self) -> bool:
        """Whether the camera streams (an ended file counts as ready: it did not fail)."""
        return self._up or self.exhausted

    def close(self) -> None:
        """Stop the reader thread; it releases the capture."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            if self._thread.is_alive():
                # Blocked inside OpenCV (a stalled network read); releasing the capture from
                # here would race it, so the daemon thread releases it when the read returns.
                log.warning("camera %s: reader did not stop within 5 s", self.config.camera_id)
        self._set_up(False)

    # --- handing frames over ----------------------------------------------------------------

    def _take(self, timeout: float) -> Captured | None:
        with self._cond:
            self._cond.wait_for(lambda: bool(self._buffer) or self._ended, max(timeout, 0.0))
            if not self._buffer:
                return None
            item = self._buffer.popleft()
            self._cond.notify_all()  # room for a file reader waiting to read ahead
            return item

    def _schedule_next(self) -> None:
        if self.config.fps is None:
            return
        period = 1.0 / self.config.fps
        now = self._clock()
        # Keep to the grid when on time (no drift from sleep overshoot); after a stall start
        # a new grid instead of catching up with a burst.
        if now - self._next_due < period:
            self._next_due += period
        else:
            self._next_due = now + period

    def _deliver(self, item: Captured) -> None:
        with self._cond:
            if self.config.live:
                if self._buffer:
                    self._buffer.clear()
                    self._series.stale.inc()
            else:
                while len(self._buffer) >= _READ_AHEAD and not self._stop.is_set():
                    self._cond.wait(0.1)
                if self._stop.is_set():
                    return
            self._buffer.append(item)
            self._cond.notify_all()

    # --- the reader thread ------------------------------------------------------------------

    def _interruptible_sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _set_up(self, up: bool) -> None:
        self._up = up
        self._series.up.set(1 if up else 0)

    def _warn(self, message: str, *args: object) -> None:
        # One warning per outage and then one a minute: a camera that is down for a day
        # must not fill the log with a line per reconnect attempt.
        self._warnings.warning("camera %s: " + message, self.config.camera_id, *args)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    self._stream()
                    break
                except Exception:  # a bug or a surprising backend must not stop the camera
                    log.exception("camera %s: reader failed; restarting", self.config.camera_id)
                    self._set_up(False)
                    self._sleep(self.config.reconnect_max_s)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _stream(self) -> None:
        """Open, read and reconnect until closed or a file ends (the reader thread's loop)."""
        cam, uri = self.config.camera_id, self.config.uri
        capture: CaptureLike | None = None
        backoff = Backoff(
            self.config.reconnect_initial_s, self.config.reconnect_max_s, jitter=_JITTER
        )
        failures = 0  # failed opens and reads since the stream last delivered a frame
        down_since: float | None = None
        wait = False  # wait before the next open (not before the first, nor a loop restart)
        frames_since_open = 0
        pacer: Callable[[], None] | None = None
        try:
            while not self._stop.is_set():
                if capture is None:
                    if wait:
                        self._sleep(backoff.next())
                        if self._stop.is_set():
                            break
                        self._series.reconnects.inc()
                    capture, error = self._open()
                    if capture is None:
                        self._set_up(False)
                        failures += 1
                        down_since = self._clock() if down_since is None else down_since
                        wait = True
                        self._warn(
                            "cannot open %s (%s); %d failed attempts, retrying in %.1f s",
                            uri,
                            error,
                            failures,
                            backoff.current,
                        )
                        continue
                    frames_since_open = 0
                    pacer = self._file_pacer(capture)
                try:
                    item = self._read(capture, self._seq)
                except _EndOfFileError:
                    capture.release()
                    capture = None
                    if self.config.loop and frames_since_open > 0:
                        wait = False  # restarting a finished file is no reconnect
                        continue
                    self._set_up(False)
                    if self.config.loop:  # an empty file would loop in a tight circle
                        failures += 1
                        wait = True
                        self._warn("%s has no frames; retrying in %.1f s", uri, backoff.current)
                        continue
                    log.info("camera %s: end of %s after %d frames", cam, uri, self._seq)
                    break
                except _StreamBrokenError as exc:
                    capture.release()
                    capture = None
                    self._set_up(False)
                    failures += 1
                    down_since = self._clock() if down_since is None else down_since
                    wait = True
                    self._warn("stream broke (%s); reconnecting in %.1f s", exc, backoff.current)
                    continue
                if down_since is not None:
                    log.info(
                        "camera %s: streaming again after %d failures (%.1f s down)",
                        cam,
                        failures,
                        self._clock() - down_since,
                    )
                    down_since = None
                    self._warnings.reset()  # the next outage warns at once
                if not self._up:  # up once frames flow, not when a stream merely opens
                    self._set_up(True)
                failures = 0
                backoff.reset()
                self._seq += 1
                frames_since_open += 1
                self._deliver(item)
                if pacer is not None:
                    pacer()
        finally:
            if capture is not None:
                capture.release()
            self._set_up(False)

    def _open(self) -> tuple[CaptureLike | None, str]:
        try:
            capture = self._factory(parse_uri(self.config.uri), self._api)
            if capture.isOpened():
                return capture, ""
            capture.release()
            return None, "not opened"
        except Exception as exc:  # a driver or backend error must not end the reader
            return None, f"{type(exc).__name__}: {exc}"

    def _read(self, capture: CaptureLike, seq: int) -> Captured:
        image: np.ndarray | None = None
        try:
            start = time.perf_counter()
            grabbed = capture.grab()
            grabbed_at = time.perf_counter()
            ok, raw = capture.retrieve() if grabbed else (False, None)
            done = time.perf_counter()
            if not grabbed or not ok:
                problem = ""  # no frame: the end of a file, or a broken stream
            elif (image := as_bgr(raw)) is None:
                dtype = getattr(raw, "dtype", type(raw).__name__)
                problem = f"not an image: shape {getattr(raw, 'shape', None)}, dtype {dtype}"
        except Exception as exc:  # a backend error must not end the reader
            problem = f"{type(exc).__name__}: {exc}"
        if image is None:
            # Files end (a file that fails mid-way ends there: reopening it would replay it
            # from the start, forever); a live stream that fails is broken and reconnects.
            if not self.config.live or Path(self.config.uri).is_file():
                if problem:
                    log.warning(
                        "camera %s: frame %d: %s; ending the file",
                        self.config.camera_id,
                        seq,
                        problem,
                    )
                raise _EndOfFileError
            raise _StreamBrokenError(problem or "read returned no frame")
        # A live grab blocks until the camera delivers, which is not decoding time.
        decode_s = done - (grabbed_at if self.config.live else start)
        self._series.last_frame.set(time.time())
        return Captured(
            seq=seq,
            image=image,
            captured_at=datetime.now(UTC).isoformat(),
            received_monotonic=self._clock(),
            decode_ms=decode_s * 1e3,
        )

    def _file_pacer(self, capture: CaptureLike) -> Callable[[], None] | None:
        """For a file played as a live camera: wait one frame period between reads."""
        if not self.config.live or not Path(self.config.uri).is_file():
            return None
        fps = float(capture.get(cv2.CAP_PROP_FPS))
        period = 1.0 / (fps if 0 < fps <= 1000 else _DEFAULT_FILE_FPS)
        due = self._clock()

        def pace() -> None:
            nonlocal due
            due = max(due + period, self._clock() - period)
            wait = due - self._clock()
            if wait > 0:
                self._sleep(wait)

        return pace
