"""The source stage: where frames come from."""

from __future__ import annotations

from abc import ABC, abstractmethod

from inspector.errors import NotTriggerableError
from inspector.runtime.records import DeadLetter, Frame


class Source(ABC):
    """A producer of frames (and of dead letters for input it cannot decode).

    One thread at a time uses a source, so client libraries that are not thread-safe stay on
    one thread. Until its intake thread starts, a source belongs to whoever adds it: the
    daemon's start-up (:meth:`setup` on a passing thread, so that SIGTERM is answered
    meanwhile, and :meth:`close` on the main thread if the start fails) or a control API
    request's thread (both). Starting the intake thread hands it over (``Thread.start`` orders
    the two); from then on only that thread calls :meth:`poll`, :meth:`pause`,
    :meth:`resume`, :attr:`exhausted`, :meth:`in_flight`, :meth:`final_commit` and :meth:`close`.
    Other threads only call the frames' ack callbacks, :meth:`trigger` and the readiness
    queries (:meth:`ready`, :meth:`unready_reason`, :meth:`readiness_note`), which must
    therefore be thread-safe.

    Attributes:
        name: Label for logs and the ``source`` metric label.
        source_id: The id the daemon runs it under (set by the intake when it is added;
            ``None`` before), so that readiness reasons can say which source they mean.
    """

    name: str = "source"
    source_id: str | None = None

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Connect or open; raise an :class:`~inspector.errors.InspectorError` on failure."""

    @abstractmethod
    def poll(self, timeout: float) -> list[Frame | DeadLetter]:
        """Return what arrived within ``timeout`` seconds (possibly nothing).

        Also where periodic work of the owning thread happens (offset commits, reconnects).
        """

    def pause(self) -> None:  # noqa: B027 - optional hook
        """Stop fetching (backpressure); :meth:`poll` keeps the connection alive."""

    def resume(self) -> None:  # noqa: B027 - optional hook
        """Fetch again after :meth:`pause`."""

    def in_flight(self) -> int:
        """Items handed out and not yet acked (what a removal waits for before committing)."""
        return 0

    def trigger(self) -> None:
        """Take one frame now (cameras in software-trigger mode).

        Raises:
            NotTriggerableError: This source takes no triggers.
        """
        raise NotTriggerableError(f"source {self.name} takes no software triggers")

    def final_commit(self, timeout: float) -> None:  # noqa: B027 - optional hook
        """Called on shutdown once in-flight frames are acked: commit what is delivered."""

    @property
    def exhausted(self) -> bool:
        """``True`` when a finite source (a file, a folder) has nothing more to give."""
        return False

    def ready(self) -> bool:
        """Whether the source is connected (for ``/readyz``)."""
        return True

    def unready_reason(self) -> str | None:
        """Why the source is not ready, for ``/readyz`` (``None`` when it is)."""
        return None if self.ready() else f"source {self.name} not connected"

    def readiness_note(self) -> str | None:
        """What ``/readyz`` should add to a 200 answer about this source (``None``: nothing)."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and devices."""


class LocalSource(Source):
    """A source whose backpressure is a flag its own :meth:`poll` checks (cameras, folders).

    While paused, :meth:`poll` hands out nothing; a live camera keeps reading (and counts what
    goes stale) so it never serves an old frame after :meth:`resume`.
    """

    _paused: bool = False

    def pause(self) -> None:
        """Hand out nothing until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Hand out frames again."""
        self._paused = False
