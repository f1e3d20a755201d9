"""What the control API lists and takes: its answers' and its request bodies' models.

:class:`~inspector.runtime.control.line.LineControl` builds them;
:mod:`inspector.runtime.control.api` publishes them in ``/v1/openapi.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from inspector.runtime.ids import Id


class ModelState(BaseModel):
    """One served model as ``GET /v1/models`` lists it.

    Attributes:
        name: Its name in recipes.
        checkpoint: The file it was loaded from.
        checkpoint_sha256: The file's digest (as in results).
        backbone: Its encoder.
        default: The configured model (cameras without a model in their recipe use it).
        memory_bytes: Bytes of its parameters and buffers.
        used_by: Cameras whose recipe names it.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    checkpoint: str
    checkpoint_sha256: str
    backbone: str
    default: bool
    memory_bytes: int
    used_by: list[str]


class NewModel(BaseModel):
    """``POST /v1/models``: a checkpoint to serve beside the others."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    name: Id
    checkpoint: Path


class SourceState(BaseModel):
    """One source as ``GET /v1/sources`` lists it.

    Attributes:
        id: Unique id: the camera id of camera and directory sources, ``kafka`` (numbered
            when several) for Kafka sources.
        type: ``kafka``, ``camera`` or ``directory``.
        state: Its :class:`~inspector.runtime.intake_states.SourcePhase`: ``starting``,
            ``running``, ``paused``, ``exhausted`` (a folder read to its end), ``stopping``
            or ``stopped``.
        ready: Ready as ``/readyz`` counts it (connected; a Kafka source also owns
            partitions, or is a standby).
        config: The source's settings, as in the YAML file.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    type: str
    state: str
    ready: bool
    config: dict[str, Any]
