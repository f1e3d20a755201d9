"""The intake's lifecycle states: the table itself, and real source threads following it."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from fakes import FakeSink, FakeSource, make_frame
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.errors import InspectorError
from inspector.runtime.admission import Admission
from inspector.runtime.delivery import Delivery, Outcomes
from inspector.runtime.intake import Intake, UnknownSourceError
from inspector.runtime.intake_states import (
    IntakePhase,
    SourceEvent,
    SourcePhase,
    intake_may_move,
    next_phase,
)
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import DeadLetter, Frame

P, E = SourcePhase, SourceEvent

#: The module docstring's table, written out again: a change to the table must be deliberate.
ALLOWED = {
    (P.STARTING, E.START): P.RUNNING,
    (P.STARTING, E.START_PAUSED): P.PAUSED,
    (P.RUNNING, E.PAUSE): P.PAUSED,
    (P.PAUSED, E.RESUME): P.RUNNING,
    (P.EXHAUSTED, E.PAUSE): P.PAUSED,
    (P.RUNNING, E.EXHAUST): P.EXHAUSTED,
    (P.RUNNING, E.REMOVE): P.STOPPING,
    (P.PAUSED, E.REMOVE): P.STOPPING,
    (P.EXHAUSTED, E.REMOVE): P.STOPPING,
    (P.RUNNING, E.END): P.STOPPED,
    (P.PAUSED, E.END): P.STOPPED,
    (P.EXHAUSTED, E.END): P.STOPPED,
    (P.STOPPING, E.END): P.STOPPED,
}


def test_the_table_allows_exactly_the_documented_moves() -> None:
    every = [(phase, event) for phase in SourcePhase for event in SourceEvent]
    wrong = [(p, e, next_phase(p, e)) for p, e in every if next_phase(p, e) != ALLOWED.get((p, e))]
    assert not wrong
    assert not any(next_phase(P.STOPPED, e) for e in SourceEvent)  # stopped is for good


def test_the_intake_only_moves_forward() -> None:
    forward = {
        (IntakePhase.OPEN, IntakePhase.DRAINING),
        (IntakePhase.OPEN, IntakePhase.CLOSING),
        (IntakePhase.DRAINING, IntakePhase.CLOSING),
    }
    for here in IntakePhase:
        for to in IntakePhase:
            assert intake_may_move(here, to) == ((here, to) in forward), (here, to)


# --- real source threads ---------------------------------------------------------------------


class WatchedSource(FakeSource):
    """A fake source that notes which threads use it, with items in flight until let go."""

    def __init__(self, items: Iterable[Frame | DeadLetter], *, finite: bool = True) -> None:
        super().__init__(items, finite=finite)
        self.users: set[int] = set()
        self.unacked = 0

    def _used(self) -> None:
        self.users.add(threading.get_ident())

    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        self._used()
        return super().poll(timeout)

    def pause(self) -> None:
        self._used()
        super().pause()

    def resume(self) -> None:
        self._used()
        super().resume()

    @property
    def exhausted(self) -> bool:
        self._used()
        return super().exhausted

    def in_flight(self) -> int:
        self._used()
        return self.unacked

    def final_commit(self, timeout: float) -> None:
        self._used()
        super().final_commit(timeout)

    def close(self) -> None:
        self._used()
        super().close()


@dataclass
class Rig:
    intake: Intake
    frames: queue.Queue[Frame]
    fatal: list[BaseException]


@pytest.fixture
def rig() -> Iterator[Callable[..., Rig]]:
    made: list[tuple[Intake, Delivery]] = []

    def make(*, keep_open: bool = True, queue_size: int = 64) -> Rig:
        metrics = Metrics(CollectorRegistry())
        frames: queue.Queue[Frame] = queue.Queue(queue_size)
        admission = Admission(64, 1 << 30)
        delivery = Delivery([FakeSink()], metrics)
        fatal: list[BaseException] = []
        outcomes = Outcomes(delivery, metrics, admission.free)
        intake = Intake(frames, admission, outcomes, fatal.append, keep_open=keep_open)
        made.append((intake, delivery))
        return Rig(intake, frames, fatal)

    yield make
    for intake, delivery in made:
        intake.stop_all(time.monotonic() + 5.0)
        intake.join(lambda: 10.0)
        delivery.close()


def _frames(n: int, camera: str = "cam") -> list[Frame]:
    return [make_frame(np.zeros((8, 8, 3), np.uint8), f"{camera}-{i}", camera) for i in range(n)]


def test_operators_move_a_source_and_moves_the_table_refuses_change_nothing(
    rig: Callable[..., Rig],
) -> None:
    line = rig()
    source = WatchedSource(_frames(4), finite=False)
    slot = line.intake.add("cam", source)
    assert slot.state is P.RUNNING
    wait_until(lambda: line.frames.qsize() == 4, 30, "4 frames queued")
    assert line.intake.pause_source("cam").state is P.PAUSED
    assert line.intake.pause_source("cam").state is P.PAUSED  # again: refused, nothing changes
    wait_until(lambda: source.paused, 30, "its thread to follow")
    assert line.intake.resume_source("cam").state is P.RUNNING
    assert line.intake.resume_source("cam").state is P.RUNNING

    source.unacked = 1  # a frame in flight: the removal waits for it
    removal = threading.Thread(target=line.intake.remove, args=("cam",))
    removal.start()
    wait_until(lambda: slot.state is P.STOPPING, 30, "STOPPING")
    assert line.intake.pause_source("cam").state is P.STOPPING  # too late to pause
    assert line.intake.resume_source("cam").state is P.STOPPING
    source.unacked = 0  # delivered: the last commit, then the close
    removal.join(30)
    assert slot.state is P.STOPPED and source.final_committed and source.closed
    with pytest.raises(UnknownSourceError):
        line.intake.slot("cam")


def test_once_handed_over_only_the_sources_thread_uses_it(rig: Callable[..., Rig]) -> None:
    line = rig()
    source = WatchedSource(_frames(3))
    slot = line.intake.add("cam", source)
    for _ in range(3):  # what the API and /readyz read, from other threads: reads only
        assert [s.id for s in line.intake.slots()] == ["cam"]
        assert slot.state in (P.RUNNING, P.EXHAUSTED)
    line.intake.pause_source("cam")
    line.intake.resume_source("cam")
    wait_until(lambda: slot.state is P.EXHAUSTED, 30, "EXHAUSTED")
    line.intake.remove("cam")
    assert slot.thread is not None and source.closed
    assert source.users == {slot.thread.ident}


def test_the_input_closes_once_no_source_can_admit_and_none_is_starting(
    rig: Callable[..., Rig],
) -> None:
    line = rig(keep_open=False)
    first, second = WatchedSource(_frames(3, "a")), WatchedSource(_frames(2, "b"))
    a = line.intake.add("a", first, start=False)
    b = line.intake.add("b", second, start=False)
    line.intake.start(a)
    wait_until(lambda: a.state is P.EXHAUSTED, 30, "EXHAUSTED")
    assert not line.intake.closed.is_set()  # b is registered, not started: not counted out
    line.intake.start(b)
    assert line.intake.closed.wait(30)
    assert a.state is P.EXHAUSTED and b.state is P.EXHAUSTED
    assert line.frames.qsize() == 5
    with pytest.raises(InspectorError, match="was started"):
        line.intake.start(a)
    line.intake.stop_all(time.monotonic() + 5.0)
    line.intake.join(lambda: 10.0)
    assert a.state is P.STOPPED and b.state is P.STOPPED
    assert first.final_committed and first.closed and second.final_committed and second.closed


def test_an_exhausted_source_can_be_paused_and_is_exhausted_again_once_resumed(
    rig: Callable[..., Rig],
) -> None:
    line = rig()
    slot = line.intake.add("cam", WatchedSource(_frames(2)))
    wait_until(lambda: slot.state is P.EXHAUSTED, 30, "EXHAUSTED")
    assert line.intake.pause_source("cam").state is P.PAUSED  # what the operator asked, and saved
    assert line.intake.resume_source("cam").state is P.RUNNING
    wait_until(
        lambda: slot.state is P.EXHAUSTED, 30, "EXHAUSTED"
    )  # its thread finds nothing more to give


def test_a_frame_waiting_for_room_enters_before_the_input_closes(rig: Callable[..., Rig]) -> None:
    line = rig(queue_size=1)
    line.frames.put(_frames(1, "other")[0])  # the queue is full
    source = WatchedSource(_frames(1))
    line.intake.add("cam", source)
    wait_until(
        lambda: source.pause_calls > 0, 30, "a pause for room in the queue"
    )  # admitted, and waiting for room in the queue
    line.intake.input_stopped()
    assert line.intake.phase is IntakePhase.DRAINING
    assert not line.intake.closed.is_set()  # the frame on its way still counts
    assert line.frames.get_nowait().meta.frame_id == "other-0"
    assert line.intake.closed.wait(30)
    assert line.frames.get_nowait().meta.frame_id == "cam-0"


def test_a_paused_source_stays_paused_through_a_shutdown(rig: Callable[..., Rig]) -> None:
    line = rig()
    slot = line.intake.add("cam", WatchedSource(_frames(2), finite=False), start=False)
    line.intake.start(slot, paused=True)
    assert slot.state is P.PAUSED
    line.intake.input_stopped()
    assert line.intake.closed.wait(30)
    assert slot.state is P.PAUSED  # the state file would still say so
    with pytest.raises(InspectorError, match="shutting down"):
        line.intake.add("late", WatchedSource([]))
    line.intake.stop_all(time.monotonic() + 5.0)
    line.intake.input_stopped()  # too late: the intake only moves forward
    assert line.intake.phase is IntakePhase.CLOSING
    line.intake.join(lambda: 10.0)
    assert slot.state is P.STOPPED and line.frames.empty()


class BrokenSource(WatchedSource):
    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        raise RuntimeError("a bug in the source")


def test_a_source_that_dies_ends_stopped_and_is_reported(rig: Callable[..., Rig]) -> None:
    line = rig()
    source = BrokenSource([], finite=False)
    slot = line.intake.add("cam", source)
    wait_until(lambda: slot.state is P.STOPPED, 30, "STOPPED")
    assert [str(e) for e in line.fatal] == ["a bug in the source"] and source.closed
