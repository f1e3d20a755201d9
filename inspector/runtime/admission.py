"""How much the pipeline holds: frames admitted and not yet delivered, and their bytes.

Two bounds on what is in flight, so that a slow sink or a burst of large frames pushes back
on the sources (Kafka pauses its partitions) instead of growing memory: a count, and a byte
budget for decoded pixels plus original messages. One item always fits, however large, so a
frame above the budget still runs, alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import torch

from inspector.runtime.records import DeadLetter, Frame


def footprint(item: Frame | DeadLetter) -> int:
    """Bytes an admitted item holds: decoded pixels plus the original message."""
    raw = len(item.raw.value) if item.raw is not None else 0
    if isinstance(item, DeadLetter):
        return raw
    image = item.image
    if isinstance(image, torch.Tensor):
        return int(image.numel() * image.element_size()) + raw
    return int(image.nbytes) + raw


class Admission:
    """Thread-safe in-flight bookkeeping with a count and a byte bound.

    Args:
        max_items: Items in flight at most.
        max_bytes: Bytes in flight at most (one item always fits).
        clock: Monotonic clock (:attr:`busy_since`).

    Attributes:
        busy_since: When the pipeline last went from nothing in flight to something.
    """

    def __init__(
        self, max_items: int, max_bytes: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_items = max_items
        self.max_bytes = max_bytes
        self._clock = clock
        self._cond = threading.Condition()
        self._items = 0
        self._bytes = 0
        self.busy_since = clock()

    @property
    def items(self) -> int:
        """Items admitted and not yet freed."""
        return self._items

    @property
    def bytes(self) -> int:
        """Their bytes."""
        return self._bytes

    def reserve(self, nbytes: int, wait_s: float = 0.1) -> bool:
        """Take a place for an item of ``nbytes``; ``False`` if none freed within ``wait_s``."""
        with self._cond:
            if not self._fits(nbytes):
                self._cond.wait(wait_s)
                if not self._fits(nbytes):
                    return False
            if self._items == 0:
                self.busy_since = self._clock()
            self._items += 1
            self._bytes += nbytes
            return True

    def free(self, nbytes: int) -> None:
        """Give back the place of a delivered item of ``nbytes``."""
        with self._cond:
            self._items -= 1
            self._bytes -= nbytes
            self._cond.notify_all()

    def _fits(self, nbytes: int) -> bool:
        return self._items < self.max_items and (
            self._items == 0 or self._bytes + nbytes <= self.max_bytes
        )
