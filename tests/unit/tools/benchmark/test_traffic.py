"""The end-to-end benchmark's rate and latencies, from what comes back on the results topic."""

from __future__ import annotations

import json
import random

import pytest

from inspector.tools.benchmark.report import named_latency_fields
from inspector.tools.benchmark.traffic import Collected, Paced, paced_results, result_rate


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


def _result_json(offset: int, total_ms: float, captured_at: str | None, processed_at: str) -> bytes:
    return json.dumps(
        {
            "latency_ms": {"total": total_ms, "inference": 1.0},
            "source": {"offset": offset},
            "is_anomalous": False,
            "captured_at": captured_at,
            "processed_at": processed_at,
        }
    ).encode()


def test_results_name_the_daemons_latency_and_capture_to_verdict() -> None:
    got = Collected()
    for i in range(4):
        # Captured (produced) at 0 s; the verdict at 1.i s; the daemon's own part 10 ms.
        stamp = f"2025-01-01T00:00:01.{i}00+00:00"
        got.add_result(1000 + i, _result_json(i, 10.0, "2025-01-01T00:00:00+00:00", stamp))
    got.add_result(2000, _result_json(4, 10.0, None, "2025-01-01T00:00:02+00:00"))
    assert got.latencies_ms == [10.0] * 5
    assert got.capture_to_verdict_ms() == pytest.approx([1000.0, 1100.0, 1200.0, 1300.0])
    fields = named_latency_fields("capture_to_verdict", got.capture_to_verdict_ms())
    assert fields["capture_to_verdict_p50_ms"] == pytest.approx(1150.0)
    assert named_latency_fields("capture_to_verdict", []) == {
        "capture_to_verdict_p50_ms": None,
        "capture_to_verdict_p95_ms": None,
        "capture_to_verdict_p99_ms": None,
    }

    # Paced: only the paced frames count, and each keeps its own capture time.
    paced = Paced("localhost:9092", "frames", [], rate=1.0, sent_ms={1: 901.0, 4: 1900.0})
    kept, paced_fields = paced_results(got, paced)
    assert kept.capture_ms == [pytest.approx(1100.0), None]
    assert paced_fields["produce_to_result_p50_ms"] == pytest.approx(100.0)
