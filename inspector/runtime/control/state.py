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

from inspector.errors import StateFileError
from inspector.regular_files import read_regular
from inspector.runtime.config import SourceConfig
from inspector.runtime.ids import Id
from inspector.runtime.recipes import CameraRecipe
from inspector.runtime.sources import source_ids

log = logging.getLogger(__name__)

#: A state file holds a few hundred bytes per source, model and recipe: one larger than this
#: was not written by inspector, and is not read.
_MAX_STATE_BYTES = 16 * 1024 * 1024
_DELETE = "delete the file to start from the YAML file's sources"


class SavedModel(BaseModel):
    """A model loaded through the control API: loaded again at start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Id
    checkpoint: Path


class RuntimeState(BaseModel):
    """What the control API changed.

    Attributes:
        version: Format version of the file.
        sources: The running sources, as in the YAML file's ``sources``.
        paused: Ids of the sources paused by an operator.
        models: Models served besides the configured one.
        cameras: The cameras' recipes (replace the YAML file's ``cameras``).
        promoted: Cameras whose recipe is a shadow promotion that a rollback may undo.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    sources: tuple[Annotated[SourceConfig, Field(discriminator="type")], ...] = ()
    paused: tuple[Id, ...] = ()
    models: tuple[SavedModel, ...] = ()
    cameras: dict[Id, CameraRecipe] = {}
    promoted: tuple[Id, ...] = ()


def _refuse(message: str) -> StateFileError:
    return StateFileError(f"daemon.state_path: {message}")


def load_state(path: Path) -> RuntimeState | None:
    """The saved state, or ``None`` when the file does not exist (a first start).

    The whole file is checked before anything starts: a state file that cannot be restored
    as it is stops the start (exit code 2) naming the file and the entry; only a ``paused``
    id that no saved source runs under is let through with a warning (it pauses nothing).

    Raises:
        StateFileError: Not a regular file or too large, unreadable, not UTF-8 JSON, not a
            valid state, or two entries that cannot both run (names the file and the entry).
    """
    try:
        data = read_regular(path, _refuse, "state file", _MAX_STATE_BYTES)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _refuse(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _refuse(
            f"{path} is not valid UTF-8 (line {line}, column {column}: byte "
            f"{data[exc.start]:#04x}): not a state file inspector wrote; fix that entry or "
            f"{_DELETE}"
        ) from None
    try:
        state = RuntimeState.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "(root)"
        raise _refuse(
            f"{path} is not a valid state file ({exc.error_count()} error(s), first: "
            f"{first['msg']} at {where}); fix that entry or {_DELETE}"
        ) from None
    _check(path, state)
    return state


def _check(path: Path, state: RuntimeState) -> None:
    """Refuse entries that cannot run side by side; warn of ``paused`` ids of no saved source.

    Raises:
        StateFileError: Two sources under one id, or two models under one name.
    """
    ids = source_ids(state.sources)
    for index, sid in enumerate(ids):
        if (first := ids.index(sid)) != index:
            raise _refuse(
                f"{path}: sources.{index} runs under id {sid!r}, as sources.{first} does; two "
                f"sources cannot share a camera id: remove one of the entries, or {_DELETE}"
            )
    names = [m.name for m in state.models]
    for index, name in enumerate(names):
        if (first := names.index(name)) != index:
            raise _refuse(
                f"{path}: models.{index} is named {name!r}, as models.{first} is; remove one of "
                f"the entries, or {_DELETE}"
            )
    unknown = [sid for sid in state.paused if sid not in ids]
    if unknown:
        # A pause of a source that is not there changes nothing: the line can run as saved.
        log.warning(
            "daemon.state_path: %s: paused names %s, which no saved source runs under; ignored",
            path,
            ", ".join(repr(sid) for sid in unknown),
        )


def restore_state(path: Path | None) -> RuntimeState | None:
    """The line as the control API left it (``daemon.state_path``), if it was saved before.

    Raises:
        StateFileError: The file exists but cannot be restored (see :func:`load_state`).
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
