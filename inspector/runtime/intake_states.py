"""The lifecycle of a source in the intake, and of the intake in a shutdown: states, moves.

Each source's lifecycle is one :class:`SourcePhase`, moved by a :class:`SourceEvent` through
one table (:func:`next_phase`) under the intake's lock; a move the table does not allow (a
pause of a source being removed, a thread's "exhausted" after an operator removed it) changes
nothing, so a late event never undoes a newer state. Who moves what (``Intake`` is
:class:`~inspector.runtime.intake.Intake`):

================  =============================================  =========================
event             moves                                          sent by
================  =============================================  =========================
``START``         ``STARTING`` to ``RUNNING``                    ``Intake.start``
``START_PAUSED``  ``STARTING`` to ``PAUSED``                     ``Intake.start``
``PAUSE``         ``RUNNING``, ``EXHAUSTED`` to ``PAUSED``       ``Intake.pause_source``
``RESUME``        ``PAUSED`` to ``RUNNING``                      ``Intake.resume_source``
``EXHAUST``       ``RUNNING`` to ``EXHAUSTED``                   the source's thread
``REMOVE``        ``RUNNING``, ``PAUSED``, ``EXHAUSTED`` to      ``Intake.remove``
                  ``STOPPING``
``END``           any started phase to ``STOPPED``               the source's thread
================  =============================================  =========================

The intake's own :class:`IntakePhase` follows the daemon's shutdown, forward only
(:func:`intake_may_move`): ``OPEN`` to ``DRAINING`` (``Intake.input_stopped``: no source
takes a new frame) to ``CLOSING`` (``Intake.stop_all``: every source commits, closes, ends);
``OPEN`` to ``CLOSING`` directly when the pipeline closes without a drain.
"""

from __future__ import annotations

import enum
import logging
import threading
from dataclasses import dataclass, field

from inspector.runtime.sources.base import Source

log = logging.getLogger(__name__)


class SourcePhase(enum.Enum):
    """Where a source is in its lifecycle (the value is what ``GET /v1/sources`` says)."""

    #: Registered (``Intake.add(start=False)``); its thread has not started.
    STARTING = "starting"
    #: Its thread takes frames.
    RUNNING = "running"
    #: Paused by an operator: its thread keeps polling (connection, commits), admits nothing.
    PAUSED = "paused"
    #: A finite source (a file, a folder) has nothing more to give, for good. An operator may
    #: still pause it (as before it ended): it is exhausted again once resumed.
    EXHAUSTED = "exhausted"
    #: Removed alone: its frames in flight finish, then it commits and closes.
    STOPPING = "stopping"
    #: Its thread closed the source and ended.
    STOPPED = "stopped"


class SourceEvent(enum.Enum):
    """What moves a source from one :class:`SourcePhase` to another (see the module table)."""

    START = "start"
    START_PAUSED = "start paused"
    PAUSE = "pause"
    RESUME = "resume"
    EXHAUST = "exhaust"
    REMOVE = "remove"
    END = "end"


_P, _E = SourcePhase, SourceEvent
#: Every allowed move; a pair that is not here is refused. A finite source does not refill:
#: ``EXHAUSTED`` leads back to ``RUNNING`` only through a pause and a resume, after which its
#: thread finds it exhausted again. A paused source stays paused whatever its source says (the
#: operator's pause is what the state file keeps). ``STOPPING`` leads only to ``STOPPED``.
_NEXT: dict[tuple[SourcePhase, SourceEvent], SourcePhase] = {
    (_P.STARTING, _E.START): _P.RUNNING,
    (_P.STARTING, _E.START_PAUSED): _P.PAUSED,
    (_P.RUNNING, _E.PAUSE): _P.PAUSED,
    (_P.PAUSED, _E.RESUME): _P.RUNNING,
    (_P.EXHAUSTED, _E.PAUSE): _P.PAUSED,
    (_P.RUNNING, _E.EXHAUST): _P.EXHAUSTED,
    **{(p, _E.REMOVE): _P.STOPPING for p in (_P.RUNNING, _P.PAUSED, _P.EXHAUSTED)},
    **{(p, _E.END): _P.STOPPED for p in (_P.RUNNING, _P.PAUSED, _P.EXHAUSTED, _P.STOPPING)},
}
#: Phases in which a source takes nothing more: the input may close without it.
IDLE = frozenset({_P.EXHAUSTED, _P.STOPPING, _P.STOPPED})


def next_phase(phase: SourcePhase, event: SourceEvent) -> SourcePhase | None:
    """The phase ``event`` moves a source in ``phase`` to; ``None``: the table refuses it."""
    return _NEXT.get((phase, event))


class IntakePhase(enum.Enum):
    """Where the intake is in the daemon's shutdown; it only moves forward."""

    #: Sources take frames.
    OPEN = "open"
    #: Shutdown began (or a stage died): no source takes a new frame; sources keep polling
    #: (commits, group membership) while what was admitted is delivered.
    DRAINING = "draining"
    #: Every source thread commits (by the deadline given), closes its source and ends.
    CLOSING = "closing"


_INTAKE_NEXT: dict[IntakePhase, frozenset[IntakePhase]] = {
    IntakePhase.OPEN: frozenset({IntakePhase.DRAINING, IntakePhase.CLOSING}),
    IntakePhase.DRAINING: frozenset({IntakePhase.CLOSING}),
    IntakePhase.CLOSING: frozenset(),
}


def intake_may_move(phase: IntakePhase, to: IntakePhase) -> bool:
    """Whether the intake may move from ``phase`` to ``to`` (forward only)."""
    return to in _INTAKE_NEXT[phase]


@dataclass(eq=False)
class SourceSlot:
    """One running source and its phase.

    Attributes:
        id: Unique id (the camera id of camera and directory sources).
        source: The source (owned by :attr:`thread` once it runs).
        thread: The thread that runs it (``None`` until started).
    """

    id: str
    source: Source
    thread: threading.Thread | None = None
    _phase: SourcePhase = field(default=SourcePhase.STARTING, init=False)

    @property
    def state(self) -> SourcePhase:
        """Its phase now (a snapshot; only the intake moves it)."""
        return self._phase

    def move(self, event: SourceEvent) -> bool:
        """Apply ``event`` if the table allows it (call under the intake's lock).

        Returns:
            Whether the phase changed.
        """
        to = next_phase(self._phase, event)
        if to is None:
            log.debug("source %s: %s refused while %s", self.id, event.value, self._phase.value)
            return False
        self._phase = to
        return True
