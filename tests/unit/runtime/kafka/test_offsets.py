"""OffsetTracker: commit positions for at-least-once delivery."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.runtime.kafka.offsets import OffsetTracker

TP = ("frames", 0)
TP1 = ("frames", 1)


def test_nothing_committable_until_the_first_offset_is_done() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    for offset in range(5, 10):
        tracker.track(TP, offset)
    assert tracker.committable() == {}
    assert tracker.pending(TP) == 5
    tracker.done(TP, 5)
    assert tracker.committable() == {TP: 6}


def test_out_of_order_completion_commits_only_the_contiguous_prefix() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    for offset in range(4):
        tracker.track(TP, offset)
    tracker.done(TP, 2)
    tracker.done(TP, 3)
    assert tracker.committable() == {}  # offset 0 is still in flight
    tracker.done(TP, 1)
    assert tracker.committable() == {}
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 4}  # all done: one past the last
    assert tracker.in_flight() == 0


def test_partial_progress_commits_the_lowest_pending_offset() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    for offset in range(10, 15):
        tracker.track(TP, offset)
    for offset in (10, 11, 13):
        tracker.done(TP, offset)
    assert tracker.committable() == {TP: 12}


def test_only_advanced_partitions_are_reported() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.track(TP, 0)
    tracker.track(TP1, 0)
    tracker.done(TP, 0)
    tracker.done(TP1, 0)
    assert tracker.committable() == {TP: 1, TP1: 1}
    tracker.mark_committed({TP: 1})
    assert tracker.committable() == {TP1: 1}
    tracker.mark_committed({TP1: 1})
    assert tracker.committable() == {}
    assert tracker.committed(TP) == 1
    tracker.track(TP, 1)
    tracker.done(TP, 1)
    assert tracker.committable() == {TP: 2}
    assert tracker.committable([TP1]) == {}


def test_gaps_in_offsets_are_fine() -> None:
    # Compacted topics and transaction markers leave holes: the next offset is not always +1.
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    for offset in (3, 7, 8):
        tracker.track(TP, offset)
    tracker.done(TP, 3)
    assert tracker.committable() == {TP: 7}
    tracker.done(TP, 8)
    assert tracker.committable() == {TP: 7}
    tracker.done(TP, 7)
    assert tracker.committable() == {TP: 9}


def test_unknown_and_repeated_acks_are_ignored() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.done(TP, 0)  # never tracked
    tracker.track(TP, 0)
    tracker.track(TP, 0)  # handed out twice (a rewind): one ack settles it
    tracker.track(TP, 1)
    tracker.done(TP, 1)
    tracker.done(TP, 1)
    assert tracker.pending(TP) == 1
    assert tracker.committable() == {}
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 2}


def test_revoked_partitions_are_forgotten_and_late_acks_ignored() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.track(TP, 0)
    tracker.track(TP1, 0)
    tracker.revoke([TP])
    tracker.done(TP, 0)  # arrives after the rebalance
    assert list(tracker._parts) == [TP1]
    assert tracker.committable() == {}
    assert tracker.pending(TP) == 0
    assert tracker.committed(TP) is None
    assert tracker.in_flight() == 1


def test_position_never_moves_backwards_after_a_rewind() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    for offset in range(3):
        tracker.track(TP, offset)
        tracker.done(TP, offset)
    tracker.mark_committed(tracker.committable())
    tracker.track(TP, 1)  # re-delivered after a seek
    assert tracker.committable() == {}
    tracker.done(TP, 1)
    assert tracker.committable() == {}
    assert tracker.committed(TP) == 3


def test_a_stuck_offset_does_not_grow_memory_without_bound() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    tracker.track(TP, 0)  # never done
    for offset in range(1, 10_000):
        tracker.track(TP, offset)
        tracker.done(TP, offset)
    assert tracker.committable() == {}
    assert len(tracker._parts[TP].heap) < 200
    tracker.done(TP, 0)
    assert tracker.committable() == {TP: 10_000}


def test_acks_from_many_threads() -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    n = 4000
    for offset in range(n):
        tracker.track(TP, offset)

    def ack(start: int) -> None:
        for offset in range(start, n, 4):
            tracker.done(TP, offset)

    threads = [threading.Thread(target=ack, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert tracker.committable() == {TP: n}
    assert tracker.in_flight() == 0


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(min_value=1, max_value=60),
    start=st.integers(min_value=0, max_value=1000),
    data=st.data(),
)
def test_commit_position_never_passes_an_offset_not_done(
    n: int, start: int, data: st.DataObject
) -> None:
    tracker: OffsetTracker[tuple[str, int]] = OffsetTracker()
    offsets = [start + i for i in range(n)]
    for offset in offsets:
        tracker.track(TP, offset)
    order = data.draw(st.permutations(offsets))
    cut = data.draw(st.integers(min_value=0, max_value=n))
    done: set[int] = set()
    last = start
    for i, offset in enumerate(order[:cut]):
        tracker.done(TP, offset)
        done.add(offset)
        position = tracker.committable().get(TP, last)
        # Everything below the position is done, and the position only moves forward.
        assert all(o in done for o in offsets if o < position)
        assert position >= last
        expected = next((o for o in offsets if o not in done), offsets[-1] + 1)
        assert position == expected
        if data.draw(st.booleans(), label=f"commit after ack {i}"):
            tracker.mark_committed({TP: position})
        last = position
    assert tracker.pending(TP) == n - cut
