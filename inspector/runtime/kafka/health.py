"""Where the Kafka sink stands with its brokers: a state, its allowed moves, its reason.

The sink's state is one immutable :class:`Health` value, replaced as a whole under the sink's
state lock, so a reader (``/readyz``, on the HTTP thread) never sees half of an update made by
kafka-python's sender thread (delivery callbacks, metadata listener), the delivery thread
(sends, rebuilds) or the sink's watch thread (connection checks). Every change goes through
:meth:`Health.moved` or :meth:`Health.adopted`, which refuse a move the table does not allow:
an event that arrives too late (a delivery callback after :meth:`close`, a callback of a
producer already replaced) changes nothing instead of undoing a newer state.

States and why they exist:

``NOT_CONNECTED``
    No producer yet (before ``setup``, or its first connection failed).
``CONNECTED``
    The producer is built and a broker answered: the sink is ready.
``LOST``
    No connection to any broker was seen. A broker that comes back may be a new one (restarted
    empty), so the sink waits for evidence that one answers again.
``RECONNECTING``
    Connections are open again, but no broker has answered a request yet.
``FAILING``
    The last delivery failed with an error the client retries; a delivery clears it.
``BROKEN``
    The producer cannot go on (a fatal error kafka-python keeps for ever, a broker that refuses
    idempotence, its sender thread is gone): a new producer replaces it.
``CLOSED``
    For good.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from inspector.errors import InspectorError


class Link(enum.Enum):
    """The sink's state (see the module docstring)."""

    NOT_CONNECTED = "not connected"
    CONNECTED = "connected"
    LOST = "lost"
    RECONNECTING = "reconnecting"
    FAILING = "failing"
    BROKEN = "broken"
    CLOSED = "closed"


#: Moves while the same producer stays in use. ``BROKEN`` has no way back to ``CONNECTED``
#: here: a success of the producer being replaced must not cancel its replacement; only
#: :meth:`Health.adopted` (a new producer) leaves it.
_MOVES: dict[Link, frozenset[Link]] = {
    Link.NOT_CONNECTED: frozenset({Link.CLOSED}),
    Link.CONNECTED: frozenset({Link.LOST, Link.FAILING, Link.BROKEN, Link.CLOSED}),
    Link.LOST: frozenset(
        {Link.RECONNECTING, Link.CONNECTED, Link.FAILING, Link.BROKEN, Link.CLOSED}
    ),
    Link.RECONNECTING: frozenset(
        {Link.LOST, Link.CONNECTED, Link.FAILING, Link.BROKEN, Link.CLOSED}
    ),
    Link.FAILING: frozenset({Link.FAILING, Link.CONNECTED, Link.BROKEN, Link.CLOSED}),
    Link.BROKEN: frozenset({Link.CLOSED}),
    Link.CLOSED: frozenset(),
}
#: States a new producer may be adopted from (it starts ``CONNECTED``: it just bootstrapped).
_ADOPT_FROM = frozenset({Link.NOT_CONNECTED, Link.BROKEN})


class IllegalTransitionError(InspectorError):
    """A move the state table does not allow (a bug in the sink, or a late event)."""


class SenderThreadDiedError(InspectorError):
    """kafka-python's sender thread of a producer ended while the sink still uses it.

    That thread alone sends records and reads answers: what the producer holds would never be
    delivered nor failed, and no broker would ever be heard from again.
    """


@dataclass(frozen=True)
class Health:
    """The sink's state, immutable: replaced as a whole, never changed in place.

    Attributes:
        link: The state.
        generation: Which producer it is about (1 for the first, +1 per replacement; 0: none).
            Events carry the generation of the producer they come from, so one from a replaced
            producer is told apart.
        since: Monotonic time the state began.
        failure: What made it ``FAILING`` or ``BROKEN`` (``None`` otherwise).
    """

    link: Link
    generation: int = 0
    since: float = 0.0
    failure: BaseException | None = None

    def allows(self, link: Link) -> bool:
        """Whether :meth:`moved` to ``link`` is allowed from here."""
        return link in _MOVES[self.link]

    def moved(self, link: Link, now: float, failure: BaseException | None = None) -> Health:
        """This state after a move to ``link`` (same producer).

        Raises:
            IllegalTransitionError: The table does not allow it.
        """
        if not self.allows(link):
            raise IllegalTransitionError(f"kafka sink: no move from {self.link} to {link}")
        keeps_failure = link in (Link.FAILING, Link.BROKEN)
        return replace(self, link=link, since=now, failure=failure if keeps_failure else None)

    def adopted(self, now: float) -> Health:
        """The state of a new producer that just connected (next generation, ``CONNECTED``).

        Raises:
            IllegalTransitionError: The sink is closed, or its producer was not to be replaced.
        """
        if self.link not in _ADOPT_FROM:
            raise IllegalTransitionError(f"kafka sink: no new producer while {self.link}")
        return Health(Link.CONNECTED, self.generation + 1, now)


def describe(health: Health, where: str, now: float, connections: float | None) -> str | None:
    """The readiness reason of ``health`` (``None``: ready as far as the state goes).

    Args:
        health: The state.
        where: ``kafka sink (servers)``, the start of every reason.
        now: Monotonic time, for how long a state has lasted.
        connections: Open broker connections now (``None``: unknown).
    """
    link = health.link
    lasted = f"{max(0.0, now - health.since):.0f} s"
    failure = health.failure
    failed = f"{type(failure).__name__}: {failure}" if failure is not None else "an error"
    if link is Link.CLOSED:
        return f"{where}: closed"
    if link is Link.NOT_CONNECTED:
        return f"{where}: not connected"
    if link is Link.BROKEN:
        if isinstance(failure, SenderThreadDiedError):
            return (
                f"{where}: {failure}; building a new producer, the records it held are sent "
                "again (their frames stay uncommitted meanwhile)"
            )
        return f"{where}: rebuilding the producer after {failed}"
    if link is Link.FAILING:
        return f"{where}: deliveries failing ({failed}); retrying"
    if link in (Link.LOST, Link.RECONNECTING):
        # The live count says more than the last check: the watch looks once a second.
        if connections == 0 or (connections is None and link is Link.LOST):
            return f"{where}: no connection to any broker (for {lasted})"
        return (
            f"{where}: reconnected after losing the brokers; ready once a broker answers a "
            "metadata request"
        )
    if connections == 0:
        # An idle producer keeps its connection (metadata is refreshed every 5 minutes, before
        # the 9-minute idle close), so none means the brokers are gone.
        return f"{where}: no connection to any broker"
    return None
