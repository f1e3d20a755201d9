"""Timing a batch function: the leaf that the model-only and the anomalib comparison share."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from inspector.runtime.worker import ModelWorker

#: One batch of decoded BGR frames ``(h, w, 3)`` uint8.
Batch = list[np.ndarray]


def timed(run: Callable[[Batch], Any], batch: Batch) -> tuple[Any, float]:
    """``run(batch)`` and its wall time in seconds (``run`` returns host tensors, synchronised)."""
    t0 = time.perf_counter()
    out = run(batch)
    return out, time.perf_counter() - t0


def measure_worker(worker: ModelWorker, batches: Sequence[Batch], warmup: int) -> list[float]:
    """Per-batch seconds of ``worker.score`` over ``batches`` after ``warmup`` untimed batches.

    ``score`` is the daemon's call. Without a map filter every map comes back to the host: the
    daemon's worst case (on a healthy line only frames that may be anomalous bring theirs).
    """
    for i in range(warmup):
        worker.score(batches[i % len(batches)])
    return [timed(worker.score, batch)[1] for batch in batches]


def throughput(seconds: Sequence[float], batch_size: int) -> float:
    """Images per second over the timed batches."""
    return len(seconds) * batch_size / float(sum(seconds))
