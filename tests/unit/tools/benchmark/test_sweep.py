"""Batch-size tuning: the recommendation and the isolated runs it is made from."""

from __future__ import annotations

from typing import Any

import pytest

from inspector.tools.benchmark.sweep import format_table, recommend_batch_size, run_isolated


def _run(batch: int, images_per_s: float, p95_ms: float) -> dict[str, Any]:
    return {"batch_size": batch, "images_per_s": images_per_s, "p95_ms": p95_ms}


# Throughput saturates at batch 8 (as on a busy device); latency keeps growing with the batch.
SWEEP = [
    _run(16, 101.0, 160.0),
    _run(1, 40.0, 25.0),
    _run(2, 70.0, 29.0),
    _run(4, 92.0, 44.0),
    _run(8, 99.0, 81.0),
    {"batch_size": 32, "failed": True, "rc": 1},
]


def test_smallest_batch_near_the_best_throughput_wins() -> None:
    choice = recommend_batch_size(SWEEP, tolerance=0.05)
    assert (choice.batch_size, choice.images_per_s, choice.p95_ms) == (8, 99.0, 81.0)
    assert choice.best_images_per_s == 101.0
    assert "95 % of the best throughput (101.0 images/s)" in choice.reason
    # With no tolerance the fastest one is chosen; with a generous one a smaller batch.
    assert recommend_batch_size(SWEEP, tolerance=0.0).batch_size == 16
    assert recommend_batch_size(SWEEP, tolerance=0.1).batch_size == 4


def test_the_latency_budget_excludes_slow_batches() -> None:
    choice = recommend_batch_size(SWEEP, tolerance=0.0, latency_budget_ms=50)
    assert (choice.batch_size, choice.best_images_per_s) == (4, 92.0)
    assert "within the 50 ms budget" in choice.reason
    assert choice.as_json()["recommended_batch_size"] == 4


def test_no_batch_meets_the_budget_or_nothing_was_measured() -> None:
    choice = recommend_batch_size(SWEEP, latency_budget_ms=10)
    assert (choice.batch_size, choice.best_images_per_s) == (1, None)
    assert "no batch size meets the 10 ms budget" in choice.reason
    nothing = recommend_batch_size([{"batch_size": 8, "failed": True}])
    assert nothing.batch_size is None and "no batch size" in nothing.reason


@pytest.mark.parametrize(
    "kwargs", [{"tolerance": 1.0}, {"tolerance": -0.1}, {"latency_budget_ms": 0}]
)
def test_nonsense_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        recommend_batch_size(SWEEP, **kwargs)


@pytest.mark.component  # runs `inspector bench` in a subprocess
def test_run_isolated_returns_the_result_or_the_failure() -> None:
    flags = ["--backbone", "resnet18", "--image-size", "64", "--batch-size", "2", "--frames", "2"]
    result = run_isolated([*flags, "--device", "cpu", "--warmup", "0"], timeout_s=300)
    assert (result["batch_size"], result["frames"], result["mode"]) == (2, 2, "model")
    assert result["images_per_s"] > 0
    failed = run_isolated([*flags, "--image-size", "65"], timeout_s=300)
    assert failed == {"failed": True, "rc": 2, "args": " ".join([*flags, "--image-size", "65"])}


def test_format_table_aligns_columns() -> None:
    text = format_table([("batch", "img/s"), ("1", "40.00"), ("16", "101.00")])
    assert text.splitlines() == ["batch   img/s", "    1   40.00", "   16  101.00"]
