"""The one id rule: the same verdict in the YAML file, the API's models and the state file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from inspector.errors import ConfigError
from inspector.runtime.config import explicit_config
from inspector.runtime.control.line import NewModel
from inspector.runtime.control.state import load_state
from inspector.runtime.ids import MAX_ID_CHARS, id_problem, valid_frame_id, valid_id
from inspector.runtime.recipes import CameraRecipe

GOOD = ["cam-01", "Kamera-Süd", "*", "line1.cam2", "...", "a:b@c", "ключ", "x" * MAX_ID_CHARS]
BAD = [
    "",
    ".",
    "..",
    "line/1",
    "a\\b",
    "a?b",
    "a#b",
    "a%2Fb",
    "a b",
    "a\nb",
    "a\rb",
    "a\tb",
    "nul\x00",
    "c1\x85",
    "sep\u2028",
    "sep\u2029",
    "nbsp\xa0",
    "bad\ufffd",
    "lone\ud800",
    "x" * (MAX_ID_CHARS + 1),
]


@pytest.mark.parametrize("good", GOOD)
def test_good_ids(good: str) -> None:
    assert valid_id(good) and id_problem(good) is None


@pytest.mark.parametrize("bad", BAD)
def test_bad_ids_are_refused_with_a_reason_that_does_not_echo_them(bad: str) -> None:
    problem = id_problem(bad)
    assert not valid_id(bad) and problem is not None
    if len(bad) > 1:
        assert bad not in problem


@given(st.text(max_size=MAX_ID_CHARS + 2))
def test_every_valid_id_is_exactly_one_url_path_segment(text: str) -> None:
    # What the rule promises: an accepted id comes back whole from one quoted path segment,
    # and nothing a client or proxy resolves away (dot segments) or splits on.
    assert (id_problem(text) is None) == valid_id(text)
    if valid_id(text):
        segment = quote(text, safe="")
        assert "/" not in segment and unquote(segment) == text
        assert text not in (".", "..") and text.isprintable()
        assert not any(ch.isspace() for ch in text)
        assert valid_frame_id(text)  # a frame id's rule is the looser one


def _loc_of(info: pytest.ExceptionInfo[ValidationError]) -> list[tuple[Any, ...]]:
    return [tuple(e["loc"]) for e in info.value.errors()]


@pytest.mark.parametrize("bad", ["line/1", "", "a\nb", ".."])
def test_the_yaml_file_refuses_bad_ids_in_every_id_field(bad: str) -> None:
    cases: list[tuple[dict[str, Any], tuple[Any, ...]]] = [
        (
            {"sources": [{"type": "camera", "camera_id": bad, "uri": "0"}]},
            ("sources", 0, "camera", "camera_id"),
        ),
        (
            {"sources": [{"type": "directory", "camera_id": bad, "path": "/f"}]},
            ("sources", 0, "directory", "camera_id"),
        ),
        (
            {"sources": [{"type": "genicam", "camera_id": bad}]},
            ("sources", 0, "genicam", "camera_id"),
        ),
        ({"cameras": {bad: {}}}, ("cameras", bad, "[key]")),
        ({"models": {bad: "/m.safetensors"}}, ("models", bad, "[key]")),
        ({"cameras": {"cam": {"model": bad}}}, ("cameras", "cam", "model")),
        ({"metrics": {"cameras": [bad]}}, ("metrics", "cameras", 0)),
    ]
    for values, loc in cases:
        with pytest.raises(ValidationError) as info:
            explicit_config(values)
        assert loc in _loc_of(info), (values, _loc_of(info))


def test_the_api_models_refuse_bad_ids() -> None:
    with pytest.raises(ValidationError, match="not a valid id"):
        NewModel.model_validate({"name": "a/b", "checkpoint": "/m.safetensors"})
    with pytest.raises(ValidationError, match="not a valid id"):
        CameraRecipe.model_validate({"model": "a b"})
    assert NewModel.model_validate({"name": "Modell-Süd", "checkpoint": "/m"}).name == "Modell-Süd"


def test_a_state_file_holding_an_unaddressable_source_is_refused(tmp_path: Path) -> None:
    # A state file written before the rule (or by hand): its sources go through the same model.
    path = tmp_path / "line.json"
    state = {"version": 1, "sources": [{"type": "directory", "camera_id": "line/1", "path": "/f"}]}
    path.write_text(json.dumps(state), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"daemon\.state_path: .*camera_id"):
        load_state(path)


@pytest.mark.parametrize(
    "entry",
    [
        {"paused": ["line/1"]},
        {"cameras": {"a b": {}}},
        {"models": [{"name": "m/1", "checkpoint": "/m.safetensors"}]},
    ],
    ids=["paused", "camera key", "model name"],
)
def test_every_id_of_a_state_file_follows_the_rule(tmp_path: Path, entry: dict[str, Any]) -> None:
    path = tmp_path / "line.json"
    path.write_text(json.dumps({"version": 1, **entry}), encoding="utf-8")
    with pytest.raises(ConfigError, match=rf"daemon\.state_path: .*{next(iter(entry))}"):
        load_state(path)
