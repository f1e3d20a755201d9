from __future__ import annotations

import queue
import threading
import time

import numpy as np
from fakes import make_frame
from prometheus_client import CollectorRegistry

from inspector.runtime.batcher import Batcher
from inspector.runtime.config import BatcherConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Frame


def _setup(max_batch: int, wait_ms: float) -> tuple[queue.Queue[Frame], Batcher, CollectorRegistry]:
    registry = CollectorRegistry()
    frames: queue.Queue[Frame] = queue.Queue(100)
    batcher = Batcher(
        frames, BatcherConfig(max_batch_size=max_batch, max_wait_ms=wait_ms), Metrics(registry)
    )
    return frames, batcher, registry


def _frame(i: int) -> Frame:
    return make_frame(np.zeros((4, 4, 3), np.uint8), f"f{i}")


def test_full_batch_closes_without_waiting() -> None:
    frames, batcher, registry = _setup(4, wait_ms=10_000)
    for i in range(6):
        frames.put(_frame(i))
    t0 = time.monotonic()
    batch = batcher.next_batch(threading.Event())
    assert [f.meta.frame_id for f in batch] == ["f0", "f1", "f2", "f3"]
    assert time.monotonic() - t0 < 1.0
    assert registry.get_sample_value("inspector_batch_size_count") == 1
    assert registry.get_sample_value("inspector_batch_size_sum") == 4


def test_partial_batch_closes_after_max_wait() -> None:
    frames, batcher, _ = _setup(8, wait_ms=50)
    frames.put(_frame(0))
    frames.put(_frame(1))
    t0 = time.monotonic()
    batch = batcher.next_batch(threading.Event())
    elapsed = time.monotonic() - t0
    assert len(batch) == 2
    assert 0.04 <= elapsed < 1.0


def test_late_frame_joins_within_the_wait() -> None:
    frames, batcher, _ = _setup(8, wait_ms=300)
    frames.put(_frame(0))
    threading.Timer(0.05, lambda: frames.put(_frame(1))).start()
    assert len(batcher.next_batch(threading.Event())) == 2


def test_stop_returns_empty_only_when_nothing_is_queued() -> None:
    frames, batcher, _ = _setup(4, wait_ms=0)
    stop = threading.Event()
    stop.set()
    frames.put(_frame(0))
    assert len(batcher.next_batch(stop)) == 1  # queued frames still drain
    assert batcher.next_batch(stop) == []
