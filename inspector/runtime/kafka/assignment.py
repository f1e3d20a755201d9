"""Whether a Kafka source owns partitions yet: its share of ``/readyz``.

A consumer that is connected but has not joined its group fetches nothing, so frames produced
meanwhile wait in the topic and reach their verdict late. A Kafka source is therefore ready
only once its group has assigned it partitions.

A member the group assigns nothing is either a standby (more members than partitions: healthy,
and it must not hold a rolling update back forever) or a member of a group whose leader did
not know the topic's partitions yet (Apache Kafka answers CreateTopics before it publishes the
new topic's metadata; the leader's next metadata refresh, within ``metadata_max_age``, starts a
rebalance that assigns them). From inside one member the two look alike, so an empty
assignment keeps the source waiting for ``standby_after_s`` (that refresh and a rejoin), and
only then is it ready as a standby, which :meth:`AssignmentReadiness.note` says (``/readyz``
shows it in its 200 answer). Once a source has owned partitions, later rebalances never make it
unready again: moving partitions between members is normal operation, not an outage.

The rebalance listener (kafka-python's IO thread) reports assignments and ``/readyz`` (the HTTP
thread) reads the state, so a lock keeps them apart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence


class AssignmentReadiness:
    """The partition-assignment state of one consumer, as readiness reasons and notes.

    States: *waiting* (no join completed yet), *joined empty* (a join assigned nothing;
    waiting at most ``standby_after_s`` more), *owning* (partitions assigned) and *standby*
    (nothing assigned for ``standby_after_s``, or nothing left after a later rebalance).

    Args:
        topics: The subscribed topics (named in the reasons).
        group: The consumer group id.
        standby_after_s: How long a member with an empty assignment waits for partitions
            before it counts as a standby.
        clock: Monotonic clock (tests pass a fake one).
    """

    def __init__(
        self,
        topics: Sequence[str],
        group: str,
        standby_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = f"{', '.join(topics)} (group {group})"
        self._group = group
        self._topics = ", ".join(topics)
        self.standby_after_s = standby_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._owned_once = False
        self._owned_now = 0
        self._empty_since: float | None = None

    def assigned(self, partitions: int) -> None:
        """A rebalance completed and assigned this member ``partitions`` partitions."""
        with self._lock:
            self._owned_now = partitions
            if partitions:
                self._owned_once = True
                self._empty_since = None
            elif self._empty_since is None:
                self._empty_since = self._clock()

    def reason(self) -> str | None:
        """Why the source is not ready for lack of partitions (``None``: it is ready)."""
        with self._lock:
            if self._owned_once:
                return None
            waiting = f"waiting for a partition assignment of {self._what}"
            if self._empty_since is None:
                return waiting
            left = self.standby_after_s - (self._clock() - self._empty_since)
            if left <= 0:
                return None
            return (
                f"{waiting}: the group's last join assigned it none; ready as a standby in "
                f"{left:.0f} s if none comes"
            )

    def note(self) -> str | None:
        """What a ready source with no partition should say (``None``: nothing to say)."""
        if self.reason() is not None:
            return None
        with self._lock:
            if self._owned_now:
                return None
            return (
                f"standby: group {self._group} assigns it no partition of {self._topics} "
                "(more members than partitions); it takes over partitions when a member leaves"
            )
