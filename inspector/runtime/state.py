"""The line's runtime state, saved on every control API change and restored on restart.

A line changed through the control API (a camera added, one paused) must come back as it was
after a restart, not as the YAML file described it on the first day. The state file
(``daemon.state_path``) holds what the API can change, validated by the same models as the
YAML file; it is written atomically (a temporary file, fsync, rename), so a crash mid-write
leaves the previous state, never half a file.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inspector.errors import ConfigError
from inspector.runtime.config import SourceConfig
from inspector.runtime.recipes import CameraRecipe

log = logging.getLogger(__name__)


class SavedModel(BaseModel):
    """A model loaded through the control API: loaded again at start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    checkpoint: Path


class RuntimeState(BaseModel):
    """What the control API changed.

    Attributes:
        version: Format version of the file.
        sources: The running sources, as in the YAML file's ``sources``.
        paused: Ids of the sources paused by an operator.
        models: Models served besides the configured one.
        cameras: The cameras' recipes (replace the YAML file's ``cameras``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    sources: tuple[Annotated[SourceConfig, Field(discriminator="type")], ...] = ()
    paused: tuple[str, ...] = ()
    models: tuple[SavedModel, ...] = ()
    cameras: dict[str, CameraRecipe] = {}


def load_state(path: Path) -> RuntimeState | None:
    """The saved state, or ``None`` when the file does not exist (a first start).

    Raises:
        ConfigError: The file cannot be read or is not a valid state (names the file).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"daemon.state_path: cannot read {path}: {exc}") from exc
    try:
        return RuntimeState.model_validate_json(text)
    except ValidationError as exc:
        raise ConfigError(
            f"daemon.state_path: {path} is not a valid state file ({exc.error_count()} "
            f"error(s), first: {exc.errors()[0]['msg']} at "
            f"{'.'.join(map(str, exc.errors()[0]['loc']))}); fix or delete it to start from "
            "the YAML file's sources"
        ) from exc


def restore_state(path: Path | None) -> RuntimeState | None:
    """The line as the control API left it (``daemon.state_path``), if it was saved before.

    Raises:
        ConfigError: The file exists but cannot be read or is not a valid state.
    """
    state = load_state(path) if path is not None else None
    if state is not None:
        log.info(
            "restoring the line from %s: %d source(s) (%d paused), %d more model(s), %d "
            "recipe(s) instead of the config's",
            path,
            len(state.sources),
            len(state.paused),
            len(state.models),
            len(state.cameras),
        )
    return state


def save_state(path: Path, state: RuntimeState) -> None:
    """Write ``state`` to ``path`` atomically.

    Raises:
        OSError: The folder is not writable or the disk is full (the old file stays).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(state.model_dump(mode="json"), indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself durable too (POSIX: fsync the folder)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
