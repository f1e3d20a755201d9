"""The OPC UA sink: each camera's last verdict served to PLCs, never holding the pipeline.

asyncua is asyncio: the server runs on a thread of its own with its own event loop. The
pipeline's side (:meth:`OpcuaSink.publish`) only appends the result to its camera's queue and
wakes that loop; it never waits for the server. The loop writes one result per camera, waits
one publishing interval so that subscribers get that value set in a publish of its own, then
the next: a batch brings a camera's results at once, and a PLC rejecting parts needs each
part's verdict, not only the last. A queue holds ``sinks.opcua.queue_per_camera`` results;
beyond that the server cannot keep up and the oldest waiting result is dropped (latest-value
semantics, as a PLC reads a variable), counted in
``inspector_opcua_updates_dropped_total{camera}``.

When ``done`` is called: once the result's values are in the address space (served), or when
it was dropped from a full queue, or when the sink closes with it still unwritten (also
counted as dropped). So every result is confirmed exactly once and soon: the
OPC UA server is a view of the latest verdicts, not a store, and never holds frames back
(their Kafka offsets are committed on the other sinks' word). ``done`` is never called with
an error.

``inspector_plant_latency_seconds{sink="opcua"}`` is from ``captured_at`` to the moment the
values were written; ``Late`` is that latency over the camera's ``deadline_ms`` (or the result
already late when made).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from inspector.errors import ConfigError, InspectorError
from inspector.runtime.config import OpcuaSinkConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Inspection
from inspector.runtime.sinks.base import DoneFn, Sink
from inspector.runtime.sinks.opcua.values import verdict_of

if TYPE_CHECKING:
    from inspector.runtime.sinks.opcua.server import VerdictServer

log = logging.getLogger(__name__)

INSTALL = "pip install 'inspector[plant]'"
#: The ``sink`` label of this sink's plant metrics.
PLANT_SINK = "opcua"
#: Longest wait for the server to start (building the standard address space takes seconds
#: on a small CPU) and to stop.
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 5.0


def _package_version() -> str:
    try:
        return version("inspector")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


@dataclass(frozen=True)
class _Pending:
    inspection: Inspection
    done: DoneFn


class OpcuaSink(Sink):
    """Serves every camera's last verdict over OPC UA (see the module).

    Args:
        config: ``sinks.opcua``.
        metrics: Bounded camera labels, plant latency, dropped updates.
        ready: Whether the daemon is ready, for the daemon object's ``Ready``; polled every
            ``config.ready_poll_s`` on a worker thread (default: the ``inspector_ready``
            gauge, 1 when ``/readyz`` answers 200, which the daemon keeps current).
        deadline_ms: The deadline of a camera now (its recipe), ``None`` when it has none.
        clock: Wall clock (epoch seconds) for the served moment.
    """

    name = "opcua"

    def __init__(
        self,
        config: OpcuaSinkConfig,
        metrics: Metrics,
        *,
        ready: Callable[[], bool] | None = None,
        deadline_ms: Callable[[str], int | None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._ready = ready or (lambda: metrics.registry.get_sample_value("inspector_ready") == 1.0)
        self._deadline_ms = deadline_ms or (lambda _camera: None)
        self._clock = clock
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._pending: dict[str, deque[_Pending]] = {}
        self._writing = 0
        self._signalled = False
        self._counts: dict[str, int] = {}
        self._server: VerdictServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._wake: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._running = False
        self._failure: str | None = "not started"

    # --- the pipeline's side ---------------------------------------------------------------

    def setup(self) -> None:
        """Read the certificate, key and trusted folder, start the server on its own thread.

        Raises:
            ConfigError: asyncua is missing (the ``plant`` extra), a file named in
                ``sinks.opcua`` cannot be read, or the port cannot be listened on.
        """
        try:
            import asyncua  # noqa: F401 - only to say which extra is missing
        except ImportError as exc:
            raise ConfigError(
                f"sinks.opcua needs asyncua (the 'plant' extra is not installed): {INSTALL}"
            ) from exc
        from inspector.runtime.sinks.opcua.server import VerdictServer

        server = VerdictServer(self.config, _package_version())
        loop = asyncio.new_event_loop()
        thread = threading.Thread(
            target=self._run_loop, args=(loop,), name="inspector-opcua", daemon=True
        )
        thread.start()
        started: Future[None] = asyncio.run_coroutine_threadsafe(self._start(server), loop)
        try:
            started.result(_START_TIMEOUT_S)
        except BaseException as exc:
            self._stop_loop(loop, thread)
            if isinstance(exc, InspectorError):
                raise
            raise ConfigError(f"sinks.opcua: the OPC UA server did not start: {exc}") from exc
        with self._lock:
            self._server, self._loop, self._thread = server, loop, thread
            self._running, self._failure = True, None

    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Queue the result for its camera and wake the server; never blocks."""
        label = self.metrics.camera(inspection.message.camera_id)
        item = _Pending(inspection, done)
        wake = False
        replaced: _Pending | None = item
        with self._lock:
            running, loop = self._running, self._loop
            if running:
                queue = self._pending.setdefault(label, deque())
                full = len(queue) >= self.config.queue_per_camera
                replaced = queue.popleft() if full else None
                queue.append(item)
                wake, self._signalled = not self._signalled, True
        if wake and loop is not None:
            try:
                loop.call_soon_threadsafe(self._signal)
            except RuntimeError:  # the loop closed under us: nothing will serve it
                self._abandon()
        if replaced is not None:
            self.metrics.opcua_updates_dropped.labels(camera=label).inc()
            replaced.done(None)

    def flush(self, timeout: float) -> bool:
        """Wait until every result handed over is written (or replaced)."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self._running and (any(self._pending.values()) or self._writing):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(left)
        return True

    def ready(self) -> bool:
        """Whether the server is running."""
        return self._running

    def unready_reason(self) -> str | None:
        """Why the server is not serving, for ``/readyz``."""
        if self._running:
            return None
        return f"sink opcua: the OPC UA server is not running ({self._failure})"

    def close(self) -> None:
        """Write what is pending (briefly), stop the server; results left are dropped."""
        self.flush(1.0)
        with self._lock:
            loop, thread, server = self._loop, self._thread, self._server
            self._running, self._failure = False, "closed"
            self._loop = self._thread = self._server = None
        self._abandon()
        if loop is None or thread is None:
            return
        if server is not None:
            stopping = asyncio.run_coroutine_threadsafe(self._stop(server), loop)
            try:
                stopping.result(_STOP_TIMEOUT_S)
            except Exception as exc:  # closing anyway
                log.warning("the OPC UA server did not stop cleanly: %s", exc)
        self._stop_loop(loop, thread)

    # --- the server's thread ---------------------------------------------------------------

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.close()

    @staticmethod
    def _stop_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)

    async def _start(self, server: VerdictServer) -> None:
        self._wake = asyncio.Event()
        configured = sorted(self.metrics.cameras.configured)
        await server.start([self.metrics.camera(c) for c in configured])
        self._tasks = [
            asyncio.create_task(self._serve(server), name="inspector-opcua-writer"),
            asyncio.create_task(self._poll_ready(server), name="inspector-opcua-ready"),
        ]

    async def _stop(self, server: VerdictServer) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await server.stop()
        # What asyncua leaves behind (closed sessions' watchdogs, subscriptions' loops) ends
        # here, not as "Task was destroyed but it is pending!" when the loop closes.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def _signal(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _serve(self, server: VerdictServer) -> None:
        """Write each camera's waiting results whenever woken; every result gets its ``done``.

        One result per camera per round, then a publishing interval's pause while more wait,
        so that each value set reaches subscribers in a publish of its own.
        """
        assert self._wake is not None
        # A client with a monitored-item queue of 1 then mostly sees each result (a publish
        # loop that runs late can still fold two writes into one); one with a deeper queue
        # sees every write, each with its own source timestamp.
        pause = self.config.min_publishing_interval_ms / 1000
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while batch := self._next_round():
                    for label, item in batch.items():
                        await self._write(server, label, item)
                    with self._lock:
                        self._writing = 0
                        more = any(self._pending.values())
                        self._drained.notify_all()
                    if more:
                        await asyncio.sleep(pause)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # the writer is gone: say so, and stop taking results
            log.exception("the OPC UA writer stopped")
            with self._lock:
                self._running, self._failure = False, f"its writer failed: {exc}"
            self._abandon()
            raise

    def _next_round(self) -> dict[str, _Pending]:
        """The oldest waiting result of each camera, taken off its queue."""
        with self._lock:
            batch = {label: queue.popleft() for label, queue in self._pending.items() if queue}
            self._pending = {label: queue for label, queue in self._pending.items() if queue}
            self._writing, self._signalled = len(batch), False
        return batch

    async def _write(self, server: VerdictServer, label: str, item: _Pending) -> None:
        message = item.inspection.message
        count = self._counts.get(label, 0) + 1
        served_at = datetime.fromtimestamp(self._clock(), UTC)
        try:
            verdict, latency = verdict_of(
                message, served_at, self._deadline_ms(message.camera_id), count
            )
            await server.write(label, verdict, served_at)
        except Exception:  # one result must not stop the server; it is dropped, not retried
            log.exception("the OPC UA server could not serve a result of camera %s", label)
            self.metrics.opcua_updates_dropped.labels(camera=label).inc()
        else:
            self._counts[label] = count
            if latency is not None:
                self.metrics.plant_latency.labels(sink=PLANT_SINK).observe(max(0.0, latency))
            if verdict.late:
                self.metrics.plant_late.labels(sink=PLANT_SINK).inc()
        item.done(None)

    async def _poll_ready(self, server: VerdictServer) -> None:
        """Mirror the daemon's readiness in ``Inspector/Ready``, written when it changes."""
        last: bool | None = None
        while True:
            try:
                ready = bool(await asyncio.to_thread(self._ready))
            except Exception:
                log.exception("the daemon's readiness could not be read for OPC UA")
                ready = False
            if ready != last:
                await server.set_ready(ready)
                last = ready
            await asyncio.sleep(self.config.ready_poll_s)

    def _abandon(self) -> None:
        """Confirm results no one will write (closing, or the server is gone), as dropped."""
        with self._lock:
            left, self._pending = self._pending, {}
            self._drained.notify_all()
        for label, queue in left.items():
            for item in queue:
                self.metrics.opcua_updates_dropped.labels(camera=label).inc()
                item.done(None)


__all__ = ["INSTALL", "PLANT_SINK", "OpcuaSink"]
