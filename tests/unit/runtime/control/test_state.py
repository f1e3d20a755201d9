"""The runtime state file: round trip, atomic replacement, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from inspector.errors import ConfigError
from inspector.runtime.config import DirectorySourceConfig, KafkaSourceConfig
from inspector.runtime.control.state import RuntimeState, load_state, save_state


def test_round_trip_and_a_missing_file_is_a_first_start(tmp_path: Path) -> None:
    path = tmp_path / "a" / "line.json"
    assert load_state(path) is None
    state = RuntimeState(
        sources=(KafkaSourceConfig(), DirectorySourceConfig(path="/data", camera_id="cam")),
        paused=("cam",),
    )
    save_state(path, state)
    assert load_state(path) == state
    assert [p.name for p in path.parent.iterdir()] == ["line.json"]  # no temporary left


def test_a_failed_write_keeps_the_previous_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "line.json"
    save_state(path, RuntimeState(paused=("old",)))

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", disk_full)  # the last step of the write fails
    with pytest.raises(OSError, match="No space"):
        save_state(path, RuntimeState(paused=("new",)))
    monkeypatch.undo()
    state = load_state(path)
    assert state is not None and state.paused == ("old",)
    assert [p.name for p in tmp_path.iterdir()] == ["line.json"]  # the temporary is gone


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{not json", r"line\.json is not a valid state file"),
        ('{"version": 2}', r"version"),
        ('{"version": 1, "sources": [{"type": "directory"}]}', r"sources\.0"),
    ],
)
def test_a_broken_file_names_itself_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "line.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_state(path)
