"""What the control API can change in a running daemon: today its sources.

:class:`LineControl` is the one place that turns an API request into a change of the running
pipeline: it builds and sets up a new source on the request's thread (so a camera that cannot
open is a 422 with the reason, and the daemon keeps running), starts it beside the others,
pauses, resumes and removes them. Every change is logged (who and what, never a credential)
and counted in ``inspector_control_changes_total``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from inspector.errors import InspectorError
from inspector.runtime.config import KafkaConfig, SourceConfig
from inspector.runtime.intake import DuplicateSourceError, Intake, SourceSlot, UnknownSourceError
from inspector.runtime.metrics import Metrics
from inspector.runtime.sources import build_source, source_id
from inspector.runtime.sources.base import Source
from inspector.runtime.state import RuntimeState, save_state

log = logging.getLogger(__name__)

#: Actions of ``inspector_control_changes_total`` (a fixed set: bounded labels).
Action = Literal["add_source", "remove_source", "pause_source", "resume_source"]


class SourceSetupError(InspectorError):
    """A source given through the API could not start (its camera, folder or broker)."""


class SourceState(BaseModel):
    """One source as ``GET /v1/sources`` lists it.

    Attributes:
        id: Unique id: the camera id of camera and directory sources, ``kafka`` (numbered
            when several) for Kafka sources.
        type: ``kafka``, ``camera`` or ``directory``.
        state: ``running``, ``paused``, ``exhausted`` (a folder read to its end),
            ``stopping`` or ``stopped``.
        ready: Connected (``/readyz`` counts it).
        config: The source's settings, as in the YAML file.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    state: str
    ready: bool
    config: dict[str, Any]


class LineControl:
    """Changes the running line for the control API (thread-safe).

    Args:
        intake: The running pipeline's sources.
        kafka: Broker settings for Kafka sources added later.
        metrics: ``inspector_control_changes_total``.
        configs: The settings of the sources running at start, by id.
        builder: Makes a source from its settings (default :func:`build_source`).
        state_path: Where every change is saved (``daemon.state_path``; ``None``: nowhere).
    """

    def __init__(
        self,
        intake: Intake,
        kafka: KafkaConfig,
        metrics: Metrics,
        configs: dict[str, SourceConfig],
        builder: Callable[[SourceConfig, KafkaConfig, Metrics], Source] = build_source,
        state_path: Path | None = None,
    ) -> None:
        self.intake = intake
        self.kafka = kafka
        self.metrics = metrics
        self._configs = dict(configs)
        self._builder = builder
        self._state_path = state_path
        self._save_lock = threading.Lock()

    def sources(self) -> list[SourceState]:
        """Every source and its state."""
        return [self._state(slot) for slot in self.intake.slots()]

    def source(self, sid: str) -> SourceState:
        """One source (:class:`~inspector.runtime.intake.UnknownSourceError` if none)."""
        return self._state(self.intake.slot(sid))

    def add_source(self, config: SourceConfig, who: str) -> SourceState:
        """Build, set up and start a source beside the running ones.

        Raises:
            DuplicateSourceError: Its id is taken (nothing was opened).
            SourceSetupError: It cannot start (the message says why).
        """
        sid = source_id(config, [s.id for s in self.intake.slots()])
        try:
            self.intake.slot(sid)
        except UnknownSourceError:
            pass
        else:
            self._count("add_source", "rejected")
            raise DuplicateSourceError(f"a source {sid!r} already runs")
        source = self._builder(config, self.kafka, self.metrics)
        try:
            source.setup()
        except Exception as exc:  # any failure to open is the caller's 422, never a crash
            self._count("add_source", "failed")
            log.warning("control: %s added source %s: it cannot start: %s", who, sid, exc)
            source.close()
            raise SourceSetupError(f"source {sid} cannot start: {exc}") from exc
        try:
            slot = self.intake.add(sid, source)
        except InspectorError:
            source.close()
            self._count("add_source", "rejected")
            raise
        self._configs[sid] = config
        self._count("add_source", "ok")
        log.info("control: %s added source %s (%s)", who, sid, config.type)
        self.save()
        return self._state(slot)

    def remove_source(self, sid: str, who: str) -> SourceState:
        """Stop one source; it commits what was delivered. The others keep running."""
        slot = self._changed("remove_source", sid, who, self.intake.remove)
        self._configs.pop(sid, None)
        self.save()
        return self._state(slot)

    def pause_source(self, sid: str, who: str) -> SourceState:
        """Stop taking frames from one source (it stays connected and commits)."""
        return self._state(self._changed("pause_source", sid, who, self.intake.hold))

    def resume_source(self, sid: str, who: str) -> SourceState:
        """Take frames from a paused source again."""
        return self._state(self._changed("resume_source", sid, who, self.intake.release))

    def _changed(
        self, action: Action, sid: str, who: str, change: Callable[[str], SourceSlot]
    ) -> SourceSlot:
        try:
            slot = change(sid)
        except UnknownSourceError:
            self._count(action, "rejected")
            raise
        self._count(action, "ok")
        log.info("control: %s %s %s", who, action.replace("_source", "d source"), sid)
        if action != "remove_source":
            self.save()
        return slot

    def runtime_state(self) -> RuntimeState:
        """What a restart must bring back: the running sources and which are paused."""
        slots = [s for s in self.intake.slots() if s.id in self._configs]
        return RuntimeState(
            sources=tuple(self._configs[s.id] for s in slots),
            paused=tuple(s.id for s in slots if s.held),
        )

    def save(self) -> None:
        """Write the runtime state to ``daemon.state_path``.

        A failure is logged: the change itself stands, but a restart would not bring it back.
        """
        if self._state_path is None:
            return
        with self._save_lock:
            try:
                save_state(self._state_path, self.runtime_state())
            except OSError as exc:
                log.error(
                    "control: cannot save the line's state to %s (daemon.state_path): %s; "
                    "a restart would start from the previous state",
                    self._state_path,
                    exc,
                )

    def _count(self, action: Action, result: str) -> None:
        self.metrics.control_changes.labels(action=action, result=result).inc()

    def _state(self, slot: SourceSlot) -> SourceState:
        config = self._configs.get(slot.id)
        return SourceState(
            id=slot.id,
            type=config.type if config is not None else slot.source.name,
            state=slot.state,
            ready=slot.source.ready(),
            config=config.model_dump(mode="json") if config is not None else {},
        )
