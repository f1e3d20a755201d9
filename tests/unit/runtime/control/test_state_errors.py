"""A state file that cannot be restored: exit code 2 naming the file and the entry, never a
traceback, and ``/readyz`` never 200 while the failing start runs.

The daemon runs for real (``python -m inspector run --config``, a subprocess) on a small
calibrated checkpoint and a folder of frames; the state file (``daemon.state_path``) is broken
in one way per case. The loader's own rules (what stops the start, what is only a warning) are
checked on :func:`load_state` directly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from fakes import UNIT_CALIBRATION

from inspector.checkpoint import CheckpointMeta, save_checkpoint
from inspector.errors import ConfigError, StateFileError
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.control.state import load_state

#: Hang guards (a FIFO once blocked the reader for good), not speed assertions.
HANG_GUARD_S = 20.0
DAEMON_GUARD_S = 180.0


def _directory_source(camera_id: str, path: Path | str) -> dict[str, Any]:
    return {"type": "directory", "camera_id": camera_id, "path": str(path)}


def _state(*sources: dict[str, Any], **more: Any) -> str:
    return json.dumps({"version": 1, "sources": list(sources), **more}, ensure_ascii=False)


def _load_within_guard(path: Path) -> Any:
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = load_state(path)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD_S)
    assert not thread.is_alive(), f"load_state({path}) did not return"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _unblock(fifo: Path) -> None:
    with contextlib.suppress(OSError):  # a reader stuck on it (a regression) gets an EOF
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


# --- the loader's rules ------------------------------------------------------------------------


@dataclass(frozen=True)
class Broken:
    """A state file broken one way, and what its error must say."""

    name: str
    make: Callable[[Path, Path], None]  # (state path, a folder of frames)
    says: str


def _fifo(path: Path, frames: Path) -> None:
    os.mkfifo(path)


def _folder(path: Path, frames: Path) -> None:
    path.mkdir()


def _dev_zero(path: Path, frames: Path) -> None:
    path.symlink_to("/dev/zero")


def _huge(path: Path, frames: Path) -> None:
    path.write_bytes(b" " * (16 * 1024 * 1024 + 1))


def _latin1(path: Path, frames: Path) -> None:
    # Written by an editor in Latin-1: "café" is one byte 0xe9, not UTF-8.
    path.write_bytes(_state(_directory_source("café", frames)).encode("latin-1"))


def _same_camera_twice(path: Path, frames: Path) -> None:
    path.write_text(_state(_directory_source("cam", frames), _directory_source("cam", frames)))


def _same_model_twice(path: Path, frames: Path) -> None:
    model = {"name": "b", "checkpoint": "/models/b.safetensors"}
    path.write_text(_state(_directory_source("cam", frames), models=[model, model]))


def _invalid_entry(path: Path, frames: Path) -> None:
    path.write_text(_state(_directory_source("cam", frames), {"type": "directory"}))


FILE_PROBLEMS = [
    Broken("fifo", _fifo, "is a FIFO (named pipe), not a regular file"),
    Broken("directory", _folder, "is a directory, not a regular file"),
    Broken("dev-zero", _dev_zero, "is a character device, not a regular file"),
    Broken("huge", _huge, "is 16777217 bytes, more than a state file can be"),
    Broken("latin-1", _latin1, "is not valid UTF-8 (line 1, column"),
    Broken("same-camera", _same_camera_twice, "sources.1 runs under id 'cam', as sources.0 does"),
    Broken("same-model", _same_model_twice, "models.1 is named 'b', as models.0 is"),
    Broken("invalid-entry", _invalid_entry, "at sources.1.directory.path"),
]


@pytest.mark.parametrize("broken", FILE_PROBLEMS, ids=lambda b: b.name)
def test_load_state_refuses_naming_the_file_and_the_entry(tmp_path: Path, broken: Broken) -> None:
    path = tmp_path / "line.json"
    broken.make(path, tmp_path)
    try:
        with pytest.raises(StateFileError) as raised:
            _load_within_guard(path)
    finally:
        _unblock(path)
    message = str(raised.value)
    assert message.startswith(f"daemon.state_path: {path}"), message
    assert broken.says in message
    assert isinstance(raised.value, ConfigError) and raised.value.exit_code == 2


def test_a_kafka_source_and_a_camera_named_kafka_cannot_both_run(tmp_path: Path) -> None:
    path = tmp_path / "line.json"
    path.write_text(_state({"type": "kafka"}, _directory_source("kafka", tmp_path)))
    with pytest.raises(StateFileError, match=r"sources\.1 runs under id 'kafka', as sources\.0"):
        load_state(path)


def test_a_paused_id_of_no_saved_source_is_only_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "line.json"
    path.write_text(_state(_directory_source("cam", tmp_path), paused=["cam", "gone"]))
    with caplog.at_level(logging.WARNING):
        state = load_state(path)
    assert state is not None and state.paused == ("cam", "gone")  # the line runs as saved
    assert f"{path}: paused names 'gone', which no saved source runs under" in caplog.text


# --- the daemon ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def line_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small calibrated checkpoint and a folder with one frame."""
    root = tmp_path_factory.mktemp("line")
    config = ArchitectureConfig(backbone="resnet18", image_size=(64, 64))
    checkpoint = root / "model.safetensors"
    meta = CheckpointMeta(name="line-model", model=config, calibration=UNIT_CALIBRATION)
    save_checkpoint(checkpoint, ReverseDistillation(config).eval(), meta)
    frames = root / "frames"
    frames.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    cv2.imwrite(str(frames / "000.png"), image)
    return checkpoint, frames


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _readyz(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:  # not listening (yet, or any more)
        return None


@dataclass(frozen=True)
class Run:
    code: int
    stderr: str
    readyz: list[int]  # every /readyz answer seen while it ran


def _run_daemon(tmp_path: Path, checkpoint: Path, frames: Path, state_path: Path) -> Run:
    port = _free_port()
    config = {
        "sources": [_directory_source("yaml-cam", frames)],
        "model": {
            "checkpoint": str(checkpoint),
            "device": "cpu",
            "precision": "fp32",
            "warmup_batches": 1,
        },
        "sinks": {"kafka": {"enabled": False}, "jsonl": {"path": str(tmp_path / "out.jsonl")}},
        "http": {"host": "127.0.0.1", "port": port},
        "daemon": {"state_path": str(state_path), "drain_timeout_s": 10},
    }
    config_path = tmp_path / "daemon.yaml"
    config_path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "inspector", "run", "--config", str(config_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    pipe = process.stderr
    assert pipe is not None
    # Read while it runs: a full pipe would block the daemon's logging.
    reader = threading.Thread(target=lambda: stderr.append(pipe.read()), daemon=True)
    reader.start()
    answers: list[int] = []
    give_up = time.monotonic() + DAEMON_GUARD_S
    try:
        while True:  # poll /readyz for as long as the failing start runs
            status = _readyz(port)
            if status is not None:
                answers.append(status)
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = process.wait(0.05)
                break
            assert time.monotonic() < give_up, "the daemon neither started nor exited"
    finally:
        if process.poll() is None:
            process.kill()
    reader.join(DAEMON_GUARD_S)
    pipe.close()
    return Run(code, "".join(stderr), answers)


def _gone_folder(path: Path, frames: Path) -> None:
    # Saved while its folder existed; the folder went away before the restart.
    path.write_text(
        _state(_directory_source("cam", frames), _directory_source("gone", frames / "gone"))
    )


DAEMON_CASES = [
    *(b for b in FILE_PROBLEMS if b.name in {"fifo", "directory", "latin-1", "same-camera"}),
    Broken("invalid-entry", _invalid_entry, "at sources.1.directory.path"),
    Broken(
        "folder-gone",
        _gone_folder,
        "sources.1 (id 'gone') cannot start: directory source 'gone': no image files",
    ),
]


@pytest.mark.component  # runs `inspector run` in a subprocess
@pytest.mark.parametrize("broken", DAEMON_CASES, ids=lambda b: b.name)
def test_the_daemon_exits_2_naming_the_state_file_and_is_never_ready(
    tmp_path: Path, line_files: tuple[Path, Path], broken: Broken
) -> None:
    checkpoint, frames = line_files
    state_path = tmp_path / "state" / "line.json"
    state_path.parent.mkdir()
    broken.make(state_path, frames)
    try:
        run = _run_daemon(tmp_path, checkpoint, frames, state_path)
    finally:
        _unblock(state_path)
    assert run.code == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert f"daemon.state_path: {state_path}" in errors[0] and broken.says in errors[0]
    assert "sources: " not in errors[0]  # the state file's entry, not the YAML key
    assert "Traceback" not in run.stderr
    # Answered while it loaded the model and read the file, and never "ready".
    assert run.readyz, "the daemon's HTTP server never answered"
    assert set(run.readyz) == {503}, run.readyz
