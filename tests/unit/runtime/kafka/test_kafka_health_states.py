"""The Kafka sink's state machine: which moves are allowed, and the reason of each state."""

from __future__ import annotations

import dataclasses

import pytest
from kafka.errors import KafkaTimeoutError

from inspector.runtime.kafka.health import (
    Health,
    IllegalTransitionError,
    Link,
    SenderThreadDiedError,
    describe,
)

#: The table as the module documents it, written out again: a change to either must be meant.
ALLOWED = {
    Link.NOT_CONNECTED: {Link.CLOSED},
    Link.CONNECTED: {Link.LOST, Link.FAILING, Link.BROKEN, Link.CLOSED},
    Link.LOST: {Link.RECONNECTING, Link.CONNECTED, Link.FAILING, Link.BROKEN, Link.CLOSED},
    Link.RECONNECTING: {Link.LOST, Link.CONNECTED, Link.FAILING, Link.BROKEN, Link.CLOSED},
    Link.FAILING: {Link.FAILING, Link.CONNECTED, Link.BROKEN, Link.CLOSED},
    Link.BROKEN: {Link.CLOSED},
    Link.CLOSED: set(),
}
WHERE = "kafka sink (broker:9092)"


@pytest.mark.parametrize("start", list(Link))
def test_every_move_is_allowed_or_refused_as_the_table_says(start: Link) -> None:
    health = Health(start, generation=3, since=1.0)
    for target in Link:
        if target in ALLOWED[start]:
            moved = health.moved(target, 2.0)
            assert (moved.link, moved.generation, moved.since) == (target, 3, 2.0)
        else:
            assert not health.allows(target)
            with pytest.raises(IllegalTransitionError):
                health.moved(target, 2.0)


def test_only_a_new_producer_leaves_broken_and_it_starts_connected() -> None:
    broken = Health(Link.NOT_CONNECTED).adopted(1.0).moved(Link.BROKEN, 2.0, KafkaTimeoutError())
    assert broken.generation == 1
    adopted = broken.adopted(3.0)
    assert (adopted.link, adopted.generation, adopted.failure) == (Link.CONNECTED, 2, None)
    for link in (Link.CONNECTED, Link.LOST, Link.RECONNECTING, Link.FAILING, Link.CLOSED):
        with pytest.raises(IllegalTransitionError):
            Health(link, 5).adopted(3.0)


def test_the_failure_is_kept_only_by_failing_and_broken() -> None:
    error = KafkaTimeoutError("expired")
    failing = Health(Link.CONNECTED, 1).moved(Link.FAILING, 1.0, error)
    assert failing.failure is error
    assert failing.moved(Link.BROKEN, 2.0, error).failure is error
    assert failing.moved(Link.CONNECTED, 2.0, error).failure is None


def test_a_state_is_never_changed_in_place() -> None:
    health = Health(Link.CONNECTED, 1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        health.link = Link.LOST  # type: ignore[misc]
    health.moved(Link.LOST, 1.0)
    assert health.link is Link.CONNECTED


def test_reasons() -> None:
    assert describe(Health(Link.CONNECTED, 1), WHERE, 9.0, 1.0) is None
    assert describe(Health(Link.CONNECTED, 1), WHERE, 9.0, None) is None  # a fake: cannot tell
    assert describe(Health(Link.CONNECTED, 1), WHERE, 9.0, 0.0) == (
        f"{WHERE}: no connection to any broker"
    )
    assert describe(Health(Link.LOST, 1, since=2.0), WHERE, 9.0, 0.0) == (
        f"{WHERE}: no connection to any broker (for 7 s)"
    )
    reconnecting = describe(Health(Link.LOST, 1, since=2.0), WHERE, 9.0, 1.0)
    assert reconnecting is not None and "ready once a broker answers a metadata request" in (
        reconnecting
    )
    assert describe(Health(Link.RECONNECTING, 1), WHERE, 9.0, 1.0) == reconnecting
    failing = Health(Link.FAILING, 1, failure=KafkaTimeoutError("expired"))
    assert describe(failing, WHERE, 9.0, 1.0) == (
        f"{WHERE}: deliveries failing (KafkaTimeoutError: KafkaTimeoutError: expired); retrying"
    )
    died = Health(Link.BROKEN, 1, failure=SenderThreadDiedError("its sender thread died"))
    assert describe(died, WHERE, 9.0, None) == (
        f"{WHERE}: its sender thread died; building a new producer, the records it held are "
        "sent again (their frames stay uncommitted meanwhile)"
    )
    assert describe(Health(Link.CLOSED, 1), WHERE, 9.0, 1.0) == f"{WHERE}: closed"
    assert describe(Health(Link.NOT_CONNECTED), WHERE, 9.0, None) == f"{WHERE}: not connected"
