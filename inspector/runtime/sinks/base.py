"""The sink stage: where results and dead letters go."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

from inspector.runtime.records import DeadLetter, Inspection

#: Delivery callback: ``None`` on success, the error otherwise. May run on any thread.
DoneFn = Callable[[BaseException | None], None]


class Sink(ABC):
    """A destination for inspections.

    :meth:`publish` may return before delivery; it must call ``done`` exactly once when the
    item is durably written (or has failed). The pipeline acks a frame to its source only after
    every sink said done; a failure is retried with backoff until the sink takes the item,
    except a :class:`~inspector.errors.RecordRefusedError` (this record can never be written:
    the frame becomes a dead letter).

    Attributes:
        name: Label for logs and metrics.
    """

    name: str = "sink"

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Connect or open; raise an :class:`~inspector.errors.InspectorError` on failure."""

    @abstractmethod
    def publish(self, inspection: Inspection, done: DoneFn) -> None:
        """Deliver one result."""

    def publish_dead_letter(self, letter: DeadLetter, done: DoneFn) -> None:
        """Deliver one dead letter; sinks that do not keep them just say done."""
        done(None)

    def flush(self, timeout: float) -> bool:
        """Wait until everything published is delivered; ``False`` on timeout."""
        return True

    def ready(self) -> bool:
        """Whether the sink is connected (for ``/readyz``)."""
        return True

    def unready_reason(self) -> str | None:
        """Why the sink is not ready, for ``/readyz`` (``None`` when it is)."""
        return None if self.ready() else f"sink {self.name} not connected"

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush what can be flushed and release connections."""
