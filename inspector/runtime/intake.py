"""The pipeline's intake: one thread per source, admitting frames into the frames queue.

Sources come and go while the daemon runs (the control API adds, removes, pauses and resumes
them); each has a slot with its own thread and stop flag, so one source starting, stopping or
failing never touches the others. Admission takes a share of two global bounds, frames in
flight and decoded bytes in flight, so a slow sink pushes back all the way: the source pauses
(Kafka pauses its partitions) instead of memory growing. Dead letters go straight to the
sinks.

A source's thread owns it (kafka-python's consumer is not thread-safe): setup, polls, the last
commit and close all happen there; other threads only set flags.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from inspector.errors import InspectorError
from inspector.runtime.admission import Admission, footprint
from inspector.runtime.delivery import Outcomes
from inspector.runtime.records import DeadLetter, Frame
from inspector.runtime.sources.base import Source

log = logging.getLogger(__name__)

#: How often a blocked source thread still polls its source (commits, group membership).
_KEEPALIVE_S = 1.0
#: A removed source waits at most this long for its frames in flight before its last commit.
REMOVE_DRAIN_S = 10.0


class UnknownSourceError(InspectorError):
    """No source with this id runs in the daemon."""


class DuplicateSourceError(InspectorError):
    """A source with this id already runs in the daemon."""


@dataclass
class SourceSlot:
    """One running source and the flags its thread follows.

    Attributes:
        id: Unique id (the camera id of camera and directory sources).
        source: The source (owned by :attr:`thread`).
        held: Paused by an operator: the thread keeps polling (connections, commits) but
            admits nothing until released.
        stop: Ends this source alone: stop fetching, wait for its frames in flight, commit,
            close.
        idle: Set while the source takes nothing (exhausted, stopped, or ended).
        ended: Set when the thread has closed the source.
        commit_by: Deadline (monotonic) of this source's last commit when removed alone.
    """

    id: str
    source: Source
    held: bool = False
    stop: threading.Event = field(default_factory=threading.Event)
    idle: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    commit_by: float = float("inf")

    @property
    def state(self) -> str:
        """``running``, ``paused``, ``exhausted``, ``stopping`` or ``stopped``."""
        if self.ended.is_set():
            return "stopped"
        if self.stop.is_set():
            return "stopping"
        if self.held:
            return "paused"
        return "exhausted" if self.source.exhausted else "running"


class Intake:
    """Runs the sources' threads and admits what they produce.

    Args:
        frames: The bounded frames queue the batcher reads.
        admission: The in-flight bounds.
        outcomes: Where dead letters go.
        stop_fetch: Set on shutdown: every source stops taking frames.
        stop_model: Set when the model stops: nothing will take queued frames any more.
        on_fatal: Called with the exception when a source thread dies of a bug.
        keep_open: Input never closes by itself (sources may be added later); otherwise it
            closes once every source is exhausted or stopped.
    """

    def __init__(
        self,
        frames: queue.Queue[Frame],
        admission: Admission,
        outcomes: Outcomes,
        stop_fetch: threading.Event,
        stop_model: threading.Event,
        on_fatal: Callable[[BaseException], None],
        *,
        keep_open: bool = False,
    ) -> None:
        self.frames = frames
        self.admission = admission
        self.outcomes = outcomes
        self._stop_fetch = stop_fetch
        self._stop_model = stop_model
        self._on_fatal = on_fatal
        self._keep_open = keep_open
        self._lock = threading.Lock()
        self._slots: dict[str, SourceSlot] = {}
        self._stop_all = threading.Event()  # every source thread commits, closes and ends
        self.commit_deadline = float("inf")
        #: No frame will enter the frames queue again.
        self.closed = threading.Event()

    # --- membership -------------------------------------------------------------------------

    def slots(self) -> list[SourceSlot]:
        """The sources, in the order they were added."""
        with self._lock:
            return list(self._slots.values())

    def slot(self, source_id: str) -> SourceSlot:
        """The source ``source_id``.

        Raises:
            UnknownSourceError: No such source.
        """
        with self._lock:
            found = self._slots.get(source_id)
        if found is None:
            raise UnknownSourceError(f"no source {source_id!r}")
        return found

    def add(self, source_id: str, source: Source, *, start: bool = True) -> SourceSlot:
        """Start a thread for ``source`` (already set up) and admit what it produces.

        ``start=False`` only registers it (:meth:`start`): the daemon's first sources are all
        registered before any runs, so a first one that is done at once cannot close the input
        before the others are counted.

        Raises:
            DuplicateSourceError: ``source_id`` is taken.
            InspectorError: The daemon is shutting down.
        """
        with self._lock:
            if self._stop_fetch.is_set() or self.closed.is_set():
                raise InspectorError("the daemon is shutting down: no source can be added")
            if source_id in self._slots and not self._slots[source_id].ended.is_set():
                raise DuplicateSourceError(f"a source {source_id!r} already runs")
            slot = SourceSlot(source_id, source)
            self._slots[source_id] = slot
        source.source_id = source_id
        if start:
            self.start(slot)
        return slot

    def start(self, slot: SourceSlot) -> None:
        """Start the thread of a slot registered with ``add(..., start=False)``."""
        thread = threading.Thread(
            target=self._run, args=(slot,), name=f"inspector-source-{slot.id}", daemon=True
        )
        slot.thread = thread
        thread.start()

    def remove(self, source_id: str, timeout: float = REMOVE_DRAIN_S) -> SourceSlot:
        """Stop one source: its frames in flight finish (up to ``timeout``), it commits, closes.

        Returns once its thread ended (or ``timeout`` plus a margin passed); the others keep
        running.

        Raises:
            UnknownSourceError: No such source.
        """
        slot = self.slot(source_id)
        slot.stop.set()
        if slot.thread is not None:
            slot.thread.join(timeout + 5.0)
        with self._lock:
            if self._slots.get(source_id) is slot and slot.ended.is_set():
                del self._slots[source_id]
        self._update_closed()
        return slot

    def hold(self, source_id: str) -> SourceSlot:
        """Pause one source for an operator (it keeps its connection and commits)."""
        slot = self.slot(source_id)
        slot.held = True
        return slot

    def release(self, source_id: str) -> SourceSlot:
        """Resume a source paused by :meth:`hold`."""
        slot = self.slot(source_id)
        slot.held = False
        return slot

    # --- lifecycle --------------------------------------------------------------------------

    def stop_all(self, commit_deadline: float) -> None:
        """Let every source thread commit (by ``commit_deadline``), close and end."""
        self.commit_deadline = commit_deadline
        self._stop_all.set()
        self._update_closed()

    def join(self, timeout: Callable[[], float]) -> None:
        """Wait for every source thread (``timeout()`` seconds left each time)."""
        for slot in self.slots():
            if slot.thread is not None:
                slot.thread.join(timeout())

    def input_stopped(self) -> None:
        """Shutdown began: with no source left to say so, input is closed now."""
        self._update_closed()

    def _update_closed(self) -> None:
        slots = self.slots()
        if self._keep_open and not self._stop_fetch.is_set() and not self._stop_all.is_set():
            return
        if all(s.idle.is_set() for s in slots):
            self.closed.set()

    # --- the source threads -----------------------------------------------------------------

    def _run(self, slot: SourceSlot) -> None:
        try:
            self._loop(slot)
        except BaseException as exc:  # a bug in a source must stop the daemon, loudly
            log.exception("source %s died", slot.id)
            self._on_fatal(exc)
        finally:
            slot.idle.set()
            slot.ended.set()
            self._update_closed()

    def _loop(self, slot: SourceSlot) -> None:
        source = slot.source
        pending: deque[Frame | DeadLetter] = deque()
        try:
            while not self._stop_all.is_set():
                if slot.stop.is_set():
                    self._wind_down(slot, pending)
                    return
                stopped = self._stop_fetch.is_set()
                if stopped or slot.held or (source.exhausted and not pending):
                    if stopped or (source.exhausted and not pending):
                        slot.idle.set()
                        self._update_closed()
                    source.pause()
                    source.poll(0.1)  # still commits acked offsets on this thread
                    continue
                source.resume()
                if not pending:
                    pending.extend(source.poll(0.1))
                while pending and not self._stop_fetch.is_set() and not slot.held:
                    if slot.stop.is_set() or not self._admit(slot, pending[0], pending):
                        break
                    pending.popleft()
        finally:
            try:
                commit_by = min(slot.commit_by, self.commit_deadline)
                source.drain(max(0.1, commit_by - time.monotonic()))
            finally:
                source.close()

    def _wind_down(self, slot: SourceSlot, pending: deque[Frame | DeadLetter]) -> None:
        """A removed source: what it handed out finishes, then its last commit (by the caller)."""
        slot.idle.set()
        self._update_closed()
        source = slot.source
        source.pause()
        pending.clear()  # never admitted: not acked, so not committed; read again elsewhere
        deadline = time.monotonic() + REMOVE_DRAIN_S
        while source.in_flight() and time.monotonic() < deadline:
            source.poll(0.1)  # keeps group membership; commits what was delivered meanwhile
        slot.commit_by = time.monotonic() + 5.0

    def _admit(
        self, slot: SourceSlot, item: Frame | DeadLetter, pending: deque[Frame | DeadLetter]
    ) -> bool:
        source = slot.source
        paused = False
        last_poll = time.monotonic()
        nbytes = footprint(item)
        while not self.admission.reserve(nbytes):
            if self._stop_fetch.is_set() or slot.stop.is_set():
                if paused:
                    source.resume()
                return False
            if not paused:
                source.pause()
                paused = True
            if time.monotonic() - last_poll > _KEEPALIVE_S:
                pending.extend(source.poll(0))
                last_poll = time.monotonic()
        if isinstance(item, DeadLetter):
            self.outcomes.dead_letter(item, nbytes)
        else:
            while True:
                try:
                    self.frames.put(item, timeout=0.1)
                    break
                except queue.Full:
                    if self._stop_model.is_set():  # nothing will take it any more
                        self.admission.release(nbytes)
                        return False
                    if not paused:
                        source.pause()
                        paused = True
        if paused:
            source.resume()
        return True
