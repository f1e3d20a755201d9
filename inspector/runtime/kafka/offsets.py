"""At-least-once offset accounting: which Kafka offsets may be committed.

A Kafka consumer hands out records in offset order, but their results are delivered out of
order (batches, several sinks, producer retries). An offset may only be committed once every
offset before it on the same partition is done, or a crash would skip frames whose results
were never written. :class:`OffsetTracker` keeps that bookkeeping; it is thread-safe because
acks arrive on producer callback threads while commits happen on the consumer's thread.
"""

from __future__ import annotations

import heapq
import threading
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

#: A partition key: ``kafka.TopicPartition`` in production, anything hashable in tests.
P = TypeVar("P", bound=Hashable)


@dataclass
class _Partition:
    """Bookkeeping of one partition since it was assigned."""

    #: Offsets handed out and not yet done.
    pending: set[int] = field(default_factory=set)
    #: Min-heap over ``pending``, cleaned lazily (done offsets are popped when on top).
    heap: list[int] = field(default_factory=list)
    #: Highest offset handed out.
    high: int = -1
    #: Last committed position, or the first offset handed out (the consumer started there,
    #: so the group's committed position is at least that far: committing it gains nothing).
    committed: int = -1

    def position(self) -> int:
        """Next offset to commit: lowest offset not done, else one past the highest done."""
        while self.heap and self.heap[0] not in self.pending:
            heapq.heappop(self.heap)
        return self.heap[0] if self.heap else self.high + 1


class OffsetTracker(Generic[P]):
    """Per-partition record of offsets handed out and done, for at-least-once commits.

    Protocol: :meth:`track` each offset when its message enters the pipeline (in the order the
    consumer returns them), :meth:`done` when its result or dead letter is acknowledged,
    periodically commit :meth:`committable` and report it back with :meth:`mark_committed`,
    and :meth:`revoke` partitions taken away by a rebalance.

    The commit position never passes an offset that is tracked and not done, and never moves
    backwards: offsets tracked again after a rewind (a seek) were committed before, so reading
    them again is a harmless duplicate.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[P, _Partition] = {}

    def track(self, tp: P, offset: int) -> None:
        """Record that ``offset`` of ``tp`` was handed to the pipeline."""
        with self._lock:
            part = self._parts.get(tp)
            if part is None:
                part = self._parts[tp] = _Partition(committed=offset)
            if offset in part.pending:
                return  # the same record handed out twice: one ack settles it
            part.pending.add(offset)
            heapq.heappush(part.heap, offset)
            part.high = max(part.high, offset)

    def done(self, tp: P, offset: int) -> None:
        """Record that ``offset`` of ``tp`` was delivered; unknown offsets are ignored.

        Unknown means: never tracked, already done, or of a partition revoked since (a late
        ack after a rebalance: the partition's new owner re-reads from the committed offset).
        May be called from any thread.
        """
        with self._lock:
            part = self._parts.get(tp)
            if part is not None:
                part.pending.discard(offset)
                # One offset that never completes would keep every later (done) offset in the
                # heap; rebuild it from the pending set when it is mostly garbage.
                if len(part.heap) > 2 * len(part.pending) + 64:
                    part.heap = sorted(part.pending)

    def committable(self, partitions: Iterable[P] | None = None) -> dict[P, int]:
        """Commit positions that advanced since the last :meth:`mark_committed`.

        Args:
            partitions: Restrict to these partitions (default: all tracked ones).

        Returns:
            ``{partition: next offset to consume}``: the lowest offset not yet done, or one
            past the highest done offset when all are done; only partitions whose position
            moved beyond the last committed one.
        """
        with self._lock:
            keys = list(self._parts) if partitions is None else list(partitions)
            out: dict[P, int] = {}
            for tp in keys:
                part = self._parts.get(tp)
                if part is None:
                    continue
                position = part.position()
                if position > part.committed:
                    out[tp] = position
            return out

    def mark_committed(self, offsets: dict[P, int]) -> None:
        """Record a successful commit of ``offsets`` (as returned by :meth:`committable`)."""
        with self._lock:
            for tp, offset in offsets.items():
                part = self._parts.get(tp)
                if part is not None:
                    part.committed = max(part.committed, offset)

    def committed(self, tp: P) -> int | None:
        """Last committed position of ``tp`` (or where consumption started); ``None``: unknown."""
        with self._lock:
            part = self._parts.get(tp)
            return None if part is None else part.committed

    def pending(self, tp: P) -> int:
        """Offsets of ``tp`` handed out and not yet done."""
        with self._lock:
            part = self._parts.get(tp)
            return 0 if part is None else len(part.pending)

    def in_flight(self) -> int:
        """Offsets handed out and not yet done, over all partitions."""
        with self._lock:
            return sum(len(p.pending) for p in self._parts.values())

    def revoke(self, partitions: Iterable[P]) -> None:
        """Forget ``partitions`` (after a rebalance); their late acks are ignored."""
        with self._lock:
            for tp in partitions:
                self._parts.pop(tp, None)
