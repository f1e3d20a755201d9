"""A Kafka source's readiness: waiting for partitions, owning them, or a standby."""

from __future__ import annotations

from inspector.runtime.kafka.assignment import AssignmentReadiness

WAITING = "waiting for a partition assignment of inspector.frames (group inspector)"


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _state(clock: Clock, standby_after_s: float = 40.0) -> AssignmentReadiness:
    return AssignmentReadiness(("inspector.frames",), "inspector", standby_after_s, clock)


def test_waits_until_the_first_assignment_then_stays_ready_through_rebalances() -> None:
    clock = Clock()
    state = _state(clock)
    assert state.reason() == WAITING and state.note() is None
    clock.now += 3600  # no join at all is never a standby: the group has not answered
    assert state.reason() == WAITING

    state.assigned(2)
    assert state.reason() is None and state.note() is None
    state.assigned(1)  # a rebalance moved one partition to a new member: normal operation
    assert state.reason() is None and state.note() is None


def test_an_empty_assignment_waits_then_is_a_standby_that_says_so() -> None:
    clock = Clock()
    state = _state(clock)
    state.assigned(0)  # e.g. the leader did not know the topic's partitions yet
    reason = state.reason()
    assert reason is not None and reason.startswith(WAITING + ": ")
    assert "ready as a standby in 40 s" in reason and state.note() is None

    clock.now += 30
    assert "ready as a standby in 10 s" in (state.reason() or "")
    state.assigned(0)  # a second empty rebalance does not restart the wait
    clock.now += 10
    assert state.reason() is None
    note = state.note()
    assert note is not None and note.startswith(
        "standby: group inspector assigns it no partition of inspector.frames"
    )

    state.assigned(1)  # a member left: this one takes over
    assert state.reason() is None and state.note() is None


def test_partitions_within_the_wait_make_it_ready_at_once() -> None:
    clock = Clock()
    state = _state(clock)
    state.assigned(0)
    clock.now += 5
    state.assigned(2)  # the leader's metadata refresh brought the topic's partitions
    assert state.reason() is None and state.note() is None


def test_a_member_whose_partitions_all_move_away_is_a_standby_not_unready() -> None:
    clock = Clock()
    state = _state(clock)
    state.assigned(1)
    state.assigned(0)
    assert state.reason() is None
    assert (state.note() or "").startswith("standby: ")


def test_several_topics_are_named() -> None:
    state = AssignmentReadiness(("a.frames", "b.frames"), "line2", 1.0, Clock())
    assert state.reason() == (
        "waiting for a partition assignment of a.frames, b.frames (group line2)"
    )
