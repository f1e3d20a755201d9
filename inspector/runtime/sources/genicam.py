"""Frames from a GenICam camera (GigE Vision, USB3 Vision) through Aravis.

A reader thread owns the Aravis camera and stream (GObject objects are used from one thread):
it opens the camera, applies and checks the settings against the camera's GenICam features,
queues a pool of buffers, and hands the newest complete frame to :meth:`GenicamSource.poll`
(a live camera: a frame overwritten before it was taken counts as a stale drop). Incomplete
frames (lost packets) and buffer underruns are counted and dropped. When the camera goes away
(unplugged, rebooted) the reader reconnects with exponential backoff; ``/readyz`` says why
meanwhile.

:meth:`setup` opens the camera once: a setting the camera rejects is a configuration error
(exit code 2, naming the GenICam feature); a camera that is not there yet is not, since
cameras come and go (the reader keeps looking).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from inspector.errors import (
    ConfigError,
    ImageDecodeError,
    InspectorError,
    NotTriggerableError,
)
from inspector.runtime.config_genicam import GenicamSourceConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import Backoff, RateLimitedLog
from inspector.runtime.records import DeadLetter, Frame
from inspector.runtime.sources.aravis import aravis
from inspector.runtime.sources.base import LocalSource
from inspector.runtime.sources.capture import CameraSeries, Captured
from inspector.runtime.sources.genicam_pixels import to_bgr
from inspector.runtime.sources.genicam_settings import apply_settings

log = logging.getLogger(__name__)

#: How long one wait for a buffer lasts (bounds the reaction to close and triggers).
_POP_US = 100_000
#: Without frames (trigger modes), read a register this often to notice a camera gone.
_HEARTBEAT_S = 1.0
#: Achieved frame rate over this window.
_RATE_WINDOW_S = 5.0
#: A device timestamp this close to the host's clock is wall time (PTP or a fake camera);
#: otherwise it counts ticks since power-up and the host's receive time is used.
_WALL_CLOCK_TOLERANCE_NS = 24 * 3600 * 10**9
_LOG_EVERY_S = 60.0
#: GVSP: wait this long for a missing packet, and at most this long for a whole frame (us).
_PACKET_TIMEOUT_US = 100_000
_FRAME_RETENTION_US = 500_000
#: Smallest receive buffer of a GVSP stream socket (the kernel caps it at net.core.rmem_max).
_MIN_SOCKET_BUFFER = 4 * 1024 * 1024


class CameraGoneError(InspectorError):
    """The camera stopped answering; the reader reopens it."""


class GenicamSource(LocalSource):
    """One GenICam camera as a frame source.

    Args:
        config: Camera settings.
        metrics: Frames, incomplete frames, underruns, reconnects, frame rate, camera health.
        clock: Monotonic clock.
    """

    name = "genicam"

    def __init__(
        self,
        config: GenicamSourceConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._clock = clock
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._latest: deque[Captured] = deque(maxlen=1)
        self._thread: threading.Thread | None = None
        self._up = False
        self._reason: str | None = "not opened yet"
        self._triggers = 0  # software triggers asked for, sent by the reader thread
        self._seq = 0
        self._arrivals: deque[float] = deque()
        self._warnings = RateLimitedLog(log, _LOG_EVERY_S, clock)
        self._series = CameraSeries.bind(metrics, config.camera_id, "genicam")
        cam = metrics.camera(config.camera_id)
        self._m_incomplete = metrics.camera_incomplete.labels(camera=cam)
        self._m_underruns = metrics.camera_underruns.labels(camera=cam)
        self._m_rate = metrics.camera_frame_rate.labels(camera=cam, kind="achieved")
        if config.frame_rate is not None:
            metrics.camera_frame_rate.labels(camera=cam, kind="configured").set(config.frame_rate)

    # --- Source API ---------------------------------------------------------------------------

    def setup(self) -> None:
        """Check the settings on the camera if it is there, then start the reader thread.

        Raises:
            ConfigError: The camera rejects a setting (the message names the feature).
            CameraLibraryMissingError: Aravis is not installed.
        """
        if self._thread is not None:
            return
        aravis()  # a missing library is a set-up error, not a camera to wait for
        self._series.up.set(0)
        try:
            camera = self._open()
        except CameraGoneError as exc:
            log.warning("genicam %s: %s; waiting for it", self.config.camera_id, exc)
            camera = None
        self._thread = threading.Thread(
            target=self._run, args=(camera,), name=f"genicam-{self.config.camera_id}", daemon=True
        )
        self._thread.start()

    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        """The newest complete frame, waiting up to ``timeout`` seconds; nothing while paused."""
        if self._paused:
            self._stop.wait(timeout)
            return []
        with self._cond:
            self._cond.wait_for(lambda: bool(self._latest), max(timeout, 0.0))
            if not self._latest:
                return []
            item = self._latest.popleft()
        self._series.received.inc()
        self._series.decode.observe(item.decode_ms / 1e3)
        return [item.to_frame(self.config.camera_id)]

    def trigger(self) -> None:
        """Take one frame (``trigger.mode: software``); sent by the reader thread.

        Raises:
            NotTriggerableError: ``trigger.mode`` is not ``software``.
        """
        if self.config.trigger.mode != "software":
            raise NotTriggerableError(
                f"sources[{self.config.camera_id}].trigger.mode is "
                f"{self.config.trigger.mode}: software triggers need mode software"
            )
        with self._cond:
            self._triggers += 1

    def ready(self) -> bool:
        """Whether the camera streams."""
        return self._up

    def unready_reason(self) -> str | None:
        """Why the camera does not stream (for ``/readyz``)."""
        return None if self._up else f"genicam {self.config.camera_id}: {self._reason}"

    def close(self) -> None:
        """Stop the reader thread; it stops acquisition and releases the camera."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        self._set_up(False, "closed")

    # --- the reader thread --------------------------------------------------------------------

    def _set_up(self, up: bool, reason: str | None = None) -> None:
        self._up = up
        self._reason = reason
        self._series.up.set(1 if up else 0)

    def _run(self, camera: Any) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_initial_s, cfg.reconnect_max_s, jitter=0.1)
        attempt = 0
        while not self._stop.is_set():
            try:
                if camera is None:
                    camera = self._open()
                attempt = 0
                self._stream(camera)
            except CameraGoneError as exc:
                self._set_up(False, str(exc))
                self._warnings.warning("genicam %s: %s; reconnecting", cfg.camera_id, exc)
            except ConfigError as exc:  # settings the (replaced?) camera now rejects
                self._set_up(False, str(exc))
                self._warnings.warning("genicam %s: %s", cfg.camera_id, exc)
            except Exception as exc:  # a bug or a surprising camera must not stop the reader
                self._set_up(False, f"{type(exc).__name__}: {exc}")
                log.exception("genicam %s: reader failed; reopening", cfg.camera_id)
            camera = None
            if self._stop.is_set():
                break
            self._series.reconnects.inc()
            self._stop.wait(backoff.after(attempt))
            attempt += 1

    def _open(self) -> Any:
        """Open the camera and apply the settings (reader thread, or setup before it).

        Raises:
            CameraGoneError: No such camera answers.
            ConfigError: It rejects a setting.
        """
        lib = aravis()
        try:
            camera = lib.Camera.new(self.config.device)
        except Exception as exc:  # GLib.Error: not found, or busy with another controller
            which = self.config.device or "(first found)"
            raise CameraGoneError(f"camera {which} not found: {_message(exc)}") from exc
        if camera.is_gv_device():
            # "127.0.0.1:3956": the control channel's address and port.
            host = camera.get_device().get_device_address().to_string().rsplit(":", 1)[0]
            if not self.config.packet_socket or ipaddress.ip_address(host).is_loopback:
                camera.gv_set_stream_options(lib.GvStreamOption.PACKET_SOCKET_DISABLED)
        apply_settings(camera, self.config)
        return camera

    def _stream(self, camera: Any) -> None:
        lib = aravis()
        cfg = self.config
        stream = camera.create_stream(None, None)
        if stream is None:
            raise CameraGoneError("cannot create a stream")
        if camera.is_gv_device():
            # A whole frame arrives as one burst of packets: the socket must hold it. On a busy
            # host packets come late, not lost: wait for them longer than Aravis' defaults
            # (a frame given up on is a part never inspected).
            # (Aravis' AUTO sizes it to one payload, which the kernel's per-packet overhead
            # overflows for small frames.)
            stream.set_property("socket-buffer", lib.GvStreamSocketBuffer.FIXED)
            stream.set_property(
                "socket-buffer-size", max(_MIN_SOCKET_BUFFER, 4 * camera.get_payload())
            )
            stream.set_property("packet-timeout", _PACKET_TIMEOUT_US)
            stream.set_property("frame-retention", _FRAME_RETENTION_US)
        payload = camera.get_payload()
        for _ in range(cfg.buffers):
            stream.push_buffer(lib.Buffer.new_allocate(payload))
        pixel_format = camera.get_pixel_format_as_string()
        camera.start_acquisition()
        try:
            self._set_up(True)
            log.info(
                "genicam %s: streaming %s %dx%d",
                cfg.camera_id,
                pixel_format,
                *camera.get_region()[2:],
            )
            self._pump(camera, stream, pixel_format)
        finally:
            try:
                camera.stop_acquisition()
            except Exception as exc:  # gone already: nothing to stop
                log.debug("genicam %s: stop_acquisition: %s", cfg.camera_id, _message(exc))

    def _pump(self, camera: Any, stream: Any, pixel_format: str) -> None:
        lib = aravis()
        cfg = self.config
        last_frame = last_check = self._clock()
        underruns = 0
        while not self._stop.is_set():
            self._send_triggers(camera)
            buffer = stream.timeout_pop_buffer(_POP_US)
            now = self._clock()
            if buffer is None:
                if cfg.trigger.mode == "free_run" and now - last_frame > cfg.frame_timeout_ms / 1e3:
                    raise CameraGoneError(f"no frame for {cfg.frame_timeout_ms} ms")
                if now - last_check > _HEARTBEAT_S:
                    last_check = now
                    self._check_alive(camera)
                continue
            try:
                if buffer.get_status() == lib.BufferStatus.SUCCESS:
                    last_frame = last_check = now
                    self._hand_over(buffer, pixel_format, now)
                else:
                    self._m_incomplete.inc()
            finally:
                stream.push_buffer(buffer)
            n_underruns = int(stream.get_info_uint64_by_name("n_underruns") or 0)
            if n_underruns > underruns:
                self._m_underruns.inc(n_underruns - underruns)
                underruns = n_underruns

    def _send_triggers(self, camera: Any) -> None:
        with self._cond:
            pending, self._triggers = self._triggers, 0
        for _ in range(pending):
            camera.software_trigger()

    def _check_alive(self, camera: Any) -> None:
        try:
            camera.get_device().get_integer_feature_value("Width")
        except Exception as exc:
            raise CameraGoneError(f"camera stopped answering: {_message(exc)}") from exc

    def _hand_over(self, buffer: Any, pixel_format: str, now: float) -> None:
        t0 = time.perf_counter()
        try:
            image = to_bgr(
                bytes(buffer.get_data()),
                buffer.get_image_width(),
                buffer.get_image_height(),
                pixel_format,
            )
        except ImageDecodeError as exc:
            self._m_incomplete.inc()
            self._warnings.warning("genicam %s: %s", self.config.camera_id, exc)
            return
        convert_ms = (time.perf_counter() - t0) * 1e3
        self._seq += 1
        item = Captured(self._seq, image, _captured_at(buffer), now, convert_ms)
        self._series.last_frame.set(time.time())
        self._arrivals.append(now)
        while self._arrivals and now - self._arrivals[0] > _RATE_WINDOW_S:
            self._arrivals.popleft()
        span = min(_RATE_WINDOW_S, max(now - self._arrivals[0], 1e-3))
        self._m_rate.set((len(self._arrivals) - 1) / span if len(self._arrivals) > 1 else 0.0)
        with self._cond:
            if self._latest:
                self._series.stale.inc()
            self._latest.append(item)
            self._cond.notify_all()


def _captured_at(buffer: Any) -> str:
    """The device's timestamp when it is wall time, else the host's receive time (RFC 3339)."""
    system_ns = int(buffer.get_system_timestamp())
    device_ns = int(buffer.get_timestamp())
    chosen = device_ns if abs(device_ns - system_ns) < _WALL_CLOCK_TOLERANCE_NS else system_ns
    return datetime.fromtimestamp(chosen / 1e9, UTC).isoformat()


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "message", None) or exc)
