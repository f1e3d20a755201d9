"""The pipeline's intake: one thread per source, admitting frames into the frames queue.

Sources come and go while the daemon runs (the control API adds, removes, pauses and resumes
them); each has a slot with its own thread, so one source starting, stopping or failing never
touches the others. Admission takes a share of two global bounds, frames in flight and decoded
bytes in flight, so a slow sink pushes back all the way: the source pauses (Kafka pauses its
partitions) instead of memory growing. Dead letters go straight to the sinks.

A source is set up by whoever adds it (the daemon's start-up, or the API request's thread)
and handed over when its slot's thread starts (``Thread.start`` orders the two); from then on
that thread alone polls, pauses, resumes, commits and closes it, because kafka-python's
consumer is not thread-safe (:class:`~inspector.runtime.sources.base.Source` lists what
other threads may call).

Each source's lifecycle is one :class:`~inspector.runtime.intake_states.SourcePhase`, moved
through that module's table under the intake's lock, so a late event never undoes a newer
state; the intake's own :class:`~inspector.runtime.intake_states.IntakePhase` follows the
daemon's shutdown. Queries (:meth:`Intake.slots`, :attr:`SourceSlot.state`,
:attr:`Intake.phase`) only read; :attr:`Intake.closed` is set by the moves that close the input.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Callable

from inspector.errors import InspectorError
from inspector.runtime.admission import Admission, footprint
from inspector.runtime.delivery import Outcomes
from inspector.runtime.intake_states import (
    IDLE,
    IntakePhase,
    SourceEvent,
    SourcePhase,
    intake_may_move,
)
from inspector.runtime.intake_states import SourceSlot as SourceSlot  # the callers' name for it
from inspector.runtime.records import DeadLetter, Frame
from inspector.runtime.sources.base import Source

log = logging.getLogger(__name__)

#: How often a blocked source thread still polls its source (commits, group membership).
_KEEPALIVE_S = 1.0
#: A removed source waits at most this long for its frames in flight before its last commit.
REMOVE_DRAIN_S = 10.0
#: How long a removed source's last commit may take.
_LAST_COMMIT_S = 5.0


class UnknownSourceError(InspectorError):
    """No source with this id runs in the daemon."""


class DuplicateSourceError(InspectorError):
    """A source with this id already runs in the daemon."""


class Intake:
    """Runs the sources' threads and admits what they produce.

    Args:
        frames: The bounded frames queue the batcher reads.
        admission: The in-flight bounds.
        outcomes: Where dead letters go.
        on_fatal: Called with the exception when a source thread dies of a bug.
        keep_open: Input never closes by itself (sources may be added later); otherwise it
            closes once every source is exhausted or stopped.

    Attributes:
        closed: Set once no frame will enter the frames queue again: no source is starting
            or handing an item over, and shutdown began or (without ``keep_open``) every
            source takes nothing more.
    """

    def __init__(
        self,
        frames: queue.Queue[Frame],
        admission: Admission,
        outcomes: Outcomes,
        on_fatal: Callable[[BaseException], None],
        *,
        keep_open: bool = False,
    ) -> None:
        self.frames = frames
        self.admission = admission
        self.outcomes = outcomes
        self._on_fatal = on_fatal
        self._keep_open = keep_open
        self._lock = threading.Lock()  # guards every phase, the slots and _handing_over
        self._slots: dict[str, SourceSlot] = {}
        self._phase = IntakePhase.OPEN
        self._commit_by = math.inf  # CLOSING's deadline for the sources' last commits
        # Items past the admission check and not yet in the frames queue (or the sinks): the
        # input cannot close under them.
        self._handing_over = 0
        self.closed = threading.Event()

    @property
    def phase(self) -> IntakePhase:
        """The intake's phase now."""
        return self._phase

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
            if self._phase is not IntakePhase.OPEN or self.closed.is_set():
                raise InspectorError("the daemon is shutting down: no source can be added")
            taken = self._slots.get(source_id)
            if taken is not None and taken.state is not SourcePhase.STOPPED:
                raise DuplicateSourceError(f"a source {source_id!r} already runs")
            slot = SourceSlot(source_id, source)
            self._slots[source_id] = slot
        source.source_id = source_id
        if start:
            self.start(slot)
        return slot

    def start(self, slot: SourceSlot, *, paused: bool = False) -> None:
        """Start the thread of a slot registered with ``add(..., start=False)``.

        Args:
            slot: The slot.
            paused: Start it paused (as an operator left it).

        Raises:
            InspectorError: It was started before (a bug in the caller).
        """
        event = SourceEvent.START_PAUSED if paused else SourceEvent.START
        if not self._apply(slot, event):
            raise InspectorError(f"source {slot.id} is {slot.state.value}: it was started")
        thread = threading.Thread(
            target=self._run, args=(slot,), name=f"inspector-source-{slot.id}", daemon=True
        )
        slot.thread = thread
        thread.start()

    def remove(self, source_id: str, timeout: float = REMOVE_DRAIN_S) -> SourceSlot:
        """Stop one source: its frames in flight finish (up to ``timeout``), it commits, closes.

        Returns once its thread ended (or ``timeout`` plus a margin passed); the others keep
        running. A source not started yet stays as it is.

        Raises:
            UnknownSourceError: No such source.
        """
        slot = self.slot(source_id)
        self._apply(slot, SourceEvent.REMOVE)
        if slot.thread is not None:
            slot.thread.join(timeout + _LAST_COMMIT_S)
        with self._lock:
            if self._slots.get(source_id) is slot and slot.state is SourcePhase.STOPPED:
                del self._slots[source_id]
            self._settle()
        return slot

    def pause_source(self, source_id: str) -> SourceSlot:
        """Pause one running source for an operator (it keeps its connection and commits)."""
        slot = self.slot(source_id)
        self._apply(slot, SourceEvent.PAUSE)
        return slot

    def resume_source(self, source_id: str) -> SourceSlot:
        """Resume a source paused by :meth:`pause_source`."""
        slot = self.slot(source_id)
        self._apply(slot, SourceEvent.RESUME)
        return slot

    # --- lifecycle --------------------------------------------------------------------------

    def input_stopped(self) -> None:
        """Shutdown began: no source takes a new frame (``DRAINING``)."""
        self._advance(IntakePhase.DRAINING)

    def stop_all(self, commit_deadline: float) -> None:
        """Let every source thread commit (by ``commit_deadline``), close and end."""
        self._advance(IntakePhase.CLOSING, commit_deadline)

    def join(self, timeout: Callable[[], float]) -> None:
        """Wait for every source thread (``timeout()`` seconds left each time)."""
        for slot in self.slots():
            if slot.thread is not None:
                slot.thread.join(timeout())

    def _advance(self, phase: IntakePhase, commit_by: float = math.inf) -> None:
        with self._lock:
            if intake_may_move(self._phase, phase):
                self._phase = phase
                self._commit_by = commit_by
            self._settle()

    def _apply(self, slot: SourceSlot, event: SourceEvent) -> bool:
        with self._lock:
            moved = slot.move(event)
            self._settle()
        return moved

    def _settle(self) -> None:
        """Close the input if nothing can enter the frames queue any more (lock held)."""
        if self.closed.is_set() or self._handing_over:
            return
        phases = [s.state for s in self._slots.values()]
        if SourcePhase.STARTING in phases:
            return
        if self._phase is IntakePhase.OPEN and (
            self._keep_open or not all(p in IDLE for p in phases)
        ):
            return
        self.closed.set()

    def _admits(self, slot: SourceSlot) -> bool:
        """Whether ``slot`` may hand one more item over (lock held)."""
        return self._phase is IntakePhase.OPEN and slot.state is SourcePhase.RUNNING

    # --- the source threads -----------------------------------------------------------------

    def _run(self, slot: SourceSlot) -> None:
        try:
            self._loop(slot)
        except BaseException as exc:  # a bug in a source must stop the daemon, loudly
            log.exception("source %s died", slot.id)
            self._on_fatal(exc)
        finally:
            self._apply(slot, SourceEvent.END)

    def _loop(self, slot: SourceSlot) -> None:
        source = slot.source
        pending: deque[Frame | DeadLetter] = deque()
        commit_by = math.inf
        try:
            while True:
                with self._lock:
                    phase, state, admits = self._phase, slot.state, self._admits(slot)
                if phase is IntakePhase.CLOSING:
                    return
                if state is SourcePhase.STOPPING:
                    pending.clear()  # never admitted: not acked, so not committed; read again
                    commit_by = self._wind_down(source)
                    return
                if state is SourcePhase.RUNNING and source.exhausted and not pending:
                    self._apply(slot, SourceEvent.EXHAUST)
                    continue
                if not admits:
                    source.pause()
                    source.poll(0.1)  # still commits acked offsets on this thread
                    continue
                source.resume()
                if not pending:
                    pending.extend(source.poll(0.1))
                while pending and self._admit(slot, pending[0], pending):
                    pending.popleft()
        finally:
            try:
                last = min(commit_by, self._commit_by)
                source.final_commit(max(0.1, last - time.monotonic()))
            finally:
                source.close()

    def _wind_down(self, source: Source) -> float:
        """A removed source: what it handed out finishes; returns its last commit's deadline."""
        source.pause()
        deadline = time.monotonic() + REMOVE_DRAIN_S
        while (
            source.in_flight()
            and time.monotonic() < deadline
            and self._phase is not IntakePhase.CLOSING  # shutdown: no delivery is coming
        ):
            source.poll(0.1)  # keeps group membership; commits what was delivered meanwhile
        return time.monotonic() + _LAST_COMMIT_S

    def _admit(
        self, slot: SourceSlot, item: Frame | DeadLetter, pending: deque[Frame | DeadLetter]
    ) -> bool:
        """Hand ``item`` over; ``False``: not now (it stays pending) or never (shutdown)."""
        source = slot.source
        pressure = _Backpressure(source)
        last_poll = time.monotonic()
        nbytes = footprint(item)
        try:
            while not self.admission.reserve(nbytes):
                with self._lock:
                    if not self._admits(slot):
                        return False
                pressure.hold()
                if time.monotonic() - last_poll > _KEEPALIVE_S:
                    pending.extend(source.poll(0))
                    last_poll = time.monotonic()
            # The check and the count in one step: a move that stops this source (or the
            # input) either comes first and refuses the item, or _settle waits for it.
            with self._lock:
                admitted = self._admits(slot)
                if admitted:
                    self._handing_over += 1
            if not admitted:
                self.admission.free(nbytes)
                return False
            try:
                return self._hand_over(item, nbytes, pressure)
            finally:
                with self._lock:
                    self._handing_over -= 1
                    self._settle()
        finally:
            pressure.end()

    def _hand_over(self, item: Frame | DeadLetter, nbytes: int, pressure: _Backpressure) -> bool:
        if isinstance(item, DeadLetter):
            self.outcomes.dead_letter(item, nbytes)
            return True
        while True:
            try:
                self.frames.put(item, timeout=0.1)
                return True
            except queue.Full:
                if self._phase is IntakePhase.CLOSING:  # the model stopped: nothing takes it
                    self.admission.free(nbytes)
                    return False
                pressure.hold()


class _Backpressure:
    """Pauses a source while one of its items waits for room, and resumes it after."""

    def __init__(self, source: Source) -> None:
        self._source = source
        self._paused = False

    def hold(self) -> None:
        if not self._paused:
            self._source.pause()
            self._paused = True

    def end(self) -> None:
        if self._paused:
            self._source.resume()
            self._paused = False
