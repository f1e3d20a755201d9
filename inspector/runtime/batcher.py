"""Batcher stage: micro-batches frames by size or by a maximum wait."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from inspector.runtime.config import BatcherConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Frame


class Batcher:
    """Pulls frames from a bounded queue into batches for the model.

    A batch closes when it holds ``max_batch_size`` frames or ``max_wait_ms`` after its first
    frame arrived, whichever comes first: a busy line gets full batches, a quiet one gets
    low latency.

    Args:
        frames: The bounded queue sources put frames into.
        config: Batch size and wait.
        metrics: For ``inspector_batch_size``.
        clock: Monotonic clock (tests inject a fake).
    """

    def __init__(
        self,
        frames: queue.Queue[Frame],
        config: BatcherConfig,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.frames = frames
        self.config = config
        self.metrics = metrics
        self.clock = clock

    def next_batch(self, stop: threading.Event, poll_s: float = 0.05) -> list[Frame]:
        """Block until a batch is ready, or return ``[]`` once ``stop`` is set and nothing waits.

        Args:
            stop: Set when no more frames will come (drain); queued frames are still batched.
            poll_s: How often to look at ``stop`` while the queue is empty.

        Returns:
            One to ``max_batch_size`` frames, in arrival order; ``[]`` only when stopping.
        """
        first: Frame | None = None
        while first is None:
            try:
                first = self.frames.get(timeout=poll_s)
            except queue.Empty:
                if stop.is_set():
                    return []
        batch = [first]
        deadline = self.clock() + self.config.max_wait_ms / 1000.0
        while len(batch) < self.config.max_batch_size:
            remaining = deadline - self.clock()
            try:
                # Take what is already queued without waiting; wait only while time remains.
                batch.append(
                    self.frames.get(timeout=remaining)
                    if remaining > 0
                    else self.frames.get_nowait()
                )
            except queue.Empty:
                break
        self.metrics.batch_size.observe(len(batch))
        return batch

    def ready_batch(self) -> list[Frame]:
        """The frames queued now, up to ``max_batch_size``, without waiting (maybe ``[]``).

        For an inference thread that has work in hand: it takes what arrived between two
        model batches and waits for nothing, so a frame that arrived joins the schedule at
        once and no batch is held back to fill.
        """
        batch: list[Frame] = []
        while len(batch) < self.config.max_batch_size:
            try:
                batch.append(self.frames.get_nowait())
            except queue.Empty:
                break
        if batch:
            self.metrics.batch_size.observe(len(batch))
        return batch
