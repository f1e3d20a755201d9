"""The end-to-end benchmark's rate: frames per second from the results' timestamps."""

from __future__ import annotations

import random

import pytest

from inspector.tools.benchmark.traffic import result_rate


def test_batched_results_are_not_credited_a_free_first_batch() -> None:
    # Eight batches of eight, one per second; a batch's results leave within 3 ms.
    stamps = [1000.0 * b + 0.4 * i for b in range(8) for i in range(8)]
    assert result_rate(stamps) == pytest.approx(8.0, rel=0.01)
    # First-to-last counting says 9 frames/s: 63 frames over the 7 s between the bursts.
    assert (len(stamps) - 1) / ((max(stamps) - min(stamps)) / 1e3) == pytest.approx(9.0, 0.01)


def test_one_by_one_results_and_any_order() -> None:
    stamps = [100.0 * i for i in range(50)]
    assert result_rate(stamps) == pytest.approx(10.0)
    random.Random(0).shuffle(stamps)
    assert result_rate(stamps) == pytest.approx(10.0)


def test_a_slower_second_half_lowers_the_rate() -> None:
    fast = [100.0 * i for i in range(20)]
    slow = [fast[-1] + 200.0 * (i + 1) for i in range(20)]
    assert 5.0 < result_rate(fast + slow) < 10.0
