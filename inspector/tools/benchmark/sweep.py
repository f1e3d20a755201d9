"""Batch-size tuning: which ``batcher.max_batch_size`` to run, from a sweep of model-mode runs.

Throughput grows with the batch size until the device is busy, while every frame of a batch
waits for the whole batch: past the knee a larger batch buys latency, not frames per second.
``bench/batch_sweep.py`` runs ``inspector bench --mode model`` once per batch size and asks
:func:`recommend_batch_size` for the smallest batch size that is close to the best throughput
within a latency budget.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BatchChoice:
    """The batch size to configure and why.

    Attributes:
        batch_size: Recommended ``batcher.max_batch_size``; ``None`` when no run succeeded.
        images_per_s: Its measured throughput.
        p95_ms: Its 95th-percentile batch latency (every frame of a batch waits this long).
        best_images_per_s: Highest throughput among the batch sizes within the budget.
        reason: One line for people.
    """

    batch_size: int | None
    images_per_s: float | None
    p95_ms: float | None
    best_images_per_s: float | None
    reason: str

    @classmethod
    def of(cls, run: Mapping[str, Any], best: float | None, reason: str) -> BatchChoice:
        """The choice of the batch size that ``run`` (a benchmark result) measured."""
        return cls(
            int(run["batch_size"]), float(run["images_per_s"]), float(run["p95_ms"]), best, reason
        )

    def as_json(self) -> dict[str, Any]:
        """JSON-ready fields, prefixed so they cannot clash with a benchmark result's."""
        return {
            "recommended_batch_size": self.batch_size,
            "recommended_images_per_s": self.images_per_s,
            "recommended_p95_ms": self.p95_ms,
            "best_images_per_s": self.best_images_per_s,
            "reason": self.reason,
        }


def recommend_batch_size(
    results: Sequence[Mapping[str, Any]],
    *,
    tolerance: float = 0.05,
    latency_budget_ms: float | None = None,
) -> BatchChoice:
    """Pick the smallest batch size within ``tolerance`` of the best throughput.

    Args:
        results: ``inspector bench --mode model`` results (``batch_size``, ``images_per_s``,
            ``p95_ms`` per batch); failed or skipped runs (no ``images_per_s``) are ignored.
        tolerance: Share of the best throughput that may be given up for a smaller batch
            (lower latency, less memory), e.g. 0.05.
        latency_budget_ms: Largest acceptable p95 batch latency; batch sizes above it are not
            considered. ``None``: no budget.

    Returns:
        The choice; ``batch_size`` is ``None`` when no run succeeded. When no batch size meets
        the budget, the one with the lowest p95 latency is returned and the reason says so.

    Raises:
        ValueError: ``tolerance`` is not in [0, 1) or the budget is not positive.
    """
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    if latency_budget_ms is not None and latency_budget_ms <= 0:
        raise ValueError(f"latency budget must be positive, got {latency_budget_ms} ms")
    measured = sorted(
        (r for r in results if isinstance(r.get("images_per_s"), int | float)),
        key=lambda r: int(r["batch_size"]),
    )
    if not measured:
        return BatchChoice(None, None, None, None, "no batch size was measured successfully")
    within = [r for r in measured if latency_budget_ms is None or r["p95_ms"] <= latency_budget_ms]
    if not within:
        fastest = min(measured, key=lambda r: float(r["p95_ms"]))
        return BatchChoice.of(
            fastest,
            None,
            f"no batch size meets the {latency_budget_ms:g} ms budget; batch "
            f"{fastest['batch_size']} has the lowest p95 ({fastest['p95_ms']:.1f} ms)",
        )
    best = max(float(r["images_per_s"]) for r in within)
    chosen = next(r for r in within if r["images_per_s"] >= (1 - tolerance) * best)
    budget = "" if latency_budget_ms is None else f" within the {latency_budget_ms:g} ms budget"
    return BatchChoice.of(
        chosen,
        best,
        f"smallest batch size reaching {100 * (1 - tolerance):g} % of the best throughput "
        f"({best:.1f} images/s){budget}",
    )


def run_isolated(
    flags: Sequence[str], *, timeout_s: float = 1800.0, verbose: bool = False
) -> dict[str, Any]:
    """``inspector bench FLAGS`` in a fresh process; its JSON result.

    A fresh process per run keeps allocator, thread-pool and compilation state of one
    configuration from carrying over into the next.

    Args:
        flags: ``inspector bench`` flags.
        timeout_s: Longest run.
        verbose: Pass the run's log through to stderr (else only a failure's tail is shown).

    Returns:
        The result, or ``{"failed": True, "rc": ..., "args": ...}`` when the run failed.
    """
    command = [sys.executable, "-m", "inspector", "bench", *flags]
    print(f"+ inspector bench {' '.join(flags)}", file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        proc = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=None if verbose else subprocess.PIPE,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"  timed out after {timeout_s:g} s", file=sys.stderr, flush=True)
        return {"failed": True, "rc": None, "args": " ".join(flags)}
    if proc.returncode != 0:
        tail = (proc.stderr or "")[-2000:]
        print(f"  failed (exit {proc.returncode}):\n{tail}", file=sys.stderr, flush=True)
        return {"failed": True, "rc": proc.returncode, "args": " ".join(flags)}
    print(f"  done in {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def format_table(rows: Sequence[Sequence[str]]) -> str:
    """Right-aligned columns, the first row being the header."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    )
