"""The control API under hostile input: every answer is a documented status, never a traceback.

A real pipeline (a looping folder and a small CPU model), the daemon's HTTP server and real
requests, as an attacker would send them: non-finite numbers, ids no URL can address, ids that
would forge log lines, writes during shutdown, bugs. Recipe removal is here too (it had no
route).
"""

from __future__ import annotations

import io
import json
import logging
import re
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Union, get_args, get_origin
from urllib.parse import quote

import cv2
import numpy as np
import pytest
import requests
import torch
from fakes import small_models
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, SecretStr

from inspector.errors import InspectorError
from inspector.logs import console_handler
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.model.region_config import RoiConfig
from inspector.runtime.config import (
    BatcherConfig,
    CameraSourceConfig,
    DirectorySourceConfig,
    KafkaConfig,
    SourceConfig,
)
from inspector.runtime.config_genicam import GenicamSourceConfig
from inspector.runtime.control.line import LineControl, NewModel
from inspector.runtime.control.server import HttpServer
from inspector.runtime.ids import MAX_ID_CHARS, valid_id
from inspector.runtime.metrics import Metrics
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.recipes import CameraRecipe
from inspector.runtime.sources import build_source

# Serves the control API over HTTP (uvicorn): the component tier (make component), not make unit.
pytestmark = pytest.mark.component

TOKEN = "t0ken-for-the-line-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
#: What JSON parsers turn into NaN or an infinity (``1e999`` overflows to one).
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]
LINE_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")
BATCHER = BatcherConfig(max_batch_size=4, max_wait_ms=5)


@pytest.fixture(scope="module")
def model() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()


def _folder(root: Path, name: str, n: int = 3) -> Path:
    folder = root / name
    folder.mkdir()
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((40, 56, 3), 40 * i, np.uint8))
    return folder


@dataclass
class Line:
    base: str
    pipeline: Pipeline
    control: LineControl
    registry: CollectorRegistry
    state_path: Path
    folder: Path

    def call(self, method: str, path: str, auth: bool = True, **kw: Any) -> requests.Response:
        headers = {**(AUTH if auth else {}), **kw.pop("headers", {})}
        return requests.request(method, self.base + path, headers=headers, timeout=30, **kw)

    def raw(self, method: str, path: str, body: str) -> requests.Response:
        """A request with a JSON body as written (``NaN`` is not what ``json=`` would send)."""
        headers = {"Content-Type": "application/json"}
        return self.call(method, path, data=body.encode("utf-8"), headers=headers)


@pytest.fixture
def line(tmp_path: Path, model: ReverseDistillation) -> Iterator[Line]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = small_models(model, metrics)
    first = DirectorySourceConfig(
        path=str(_folder(tmp_path, "a")), camera_id="cam-a", loop=True, fps=5
    )
    source = build_source(first, KafkaConfig(), metrics)
    source.setup()
    pipeline = Pipeline(
        [source], BATCHER, models, [], metrics, source_ids=["cam-a"], keep_open=True
    )
    pipeline.start()
    state_path = tmp_path / "state.json"
    control = LineControl(
        pipeline.intake,
        models,
        pipeline.recipes,
        KafkaConfig(),
        metrics,
        {"cam-a": first},
        state_path=state_path,
    )
    server = _server(registry, metrics, lambda: control)
    try:
        yield Line(
            f"http://127.0.0.1:{server.port}",
            pipeline,
            control,
            registry,
            state_path,
            _folder(tmp_path, "more"),
        )
    finally:
        server.stop()
        pipeline.stop_fetching()
        pipeline.close()


def _server(
    registry: CollectorRegistry, metrics: Metrics, control: Callable[[], LineControl]
) -> HttpServer:
    server = HttpServer(
        "127.0.0.1", 0, registry, lambda: [], metrics, admin_token=SecretStr(TOKEN), control=control
    )
    server.start()
    return server


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """What the daemon's console would show: the CLI's handler on the root logger, at INFO."""
    stream = io.StringIO()
    handler = console_handler(stream)
    handler.setLevel(logging.INFO)  # as the records counted against its lines
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not bad, [r.getMessage() for r in bad]


# --- 1: non-finite numbers ---------------------------------------------------------------------


def _leaves(annotation: Any) -> list[Any]:
    """The types inside an annotation (unions, Optional, Annotated and sequences unwrapped)."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _leaves(get_args(annotation)[0])
    if origin in (Union, types.UnionType, tuple, list):
        return [leaf for arg in get_args(annotation) if arg is not ... for leaf in _leaves(arg)]
    return [annotation]


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    return [
        leaf
        for leaf in _leaves(annotation)
        if isinstance(leaf, type) and issubclass(leaf, BaseModel)
    ]


def _number_paths(model: type[BaseModel]) -> list[tuple[str, ...]]:
    """Every int and float field of ``model``, nested models included, as a path of names."""
    paths: list[tuple[str, ...]] = []
    for name, field in model.model_fields.items():
        if float in _leaves(field.annotation) or int in _leaves(field.annotation):
            paths.append((name,))
        for inner_model in _models_in(field.annotation):
            paths += [(name, *inner) for inner in _number_paths(inner_model)]
    return sorted(set(paths))


#: Valid values of the required fields of the request models (a model all of whose fields have
#: defaults needs none): so that the number under test is a body's only fault.
_REQUIRED: dict[type[BaseModel], dict[str, Any]] = {
    NewModel: {"name": "m2", "checkpoint": "/nowhere/m.safetensors"},
    CameraSourceConfig: {"camera_id": "c1", "uri": "/nowhere/video.mp4"},
    DirectorySourceConfig: {"camera_id": "d1", "path": "/nowhere"},
    GenicamSourceConfig: {"camera_id": "g1"},
    RoiConfig: {"x": 0, "y": 0, "width": 64, "height": 64},
}


def _valid(model: type[BaseModel]) -> dict[str, Any]:
    # A source's discriminator is its ``type`` field's default.
    tag = model.model_fields.get("type")
    body = {"type": tag.default} if tag is not None else {}
    if all(not field.is_required() for field in model.model_fields.values()):
        return {**body, **_REQUIRED.get(model, {})}
    return {**body, **_REQUIRED[model]}  # a KeyError: add the new model's required fields above


def _body(model: type[BaseModel], path: tuple[str, ...], token: str) -> str:
    """A valid JSON body of ``model`` but for ``token``, written as is, at ``path``."""
    body = _valid(model)
    inner = body
    for name in path[:-1]:
        (model,) = _models_in(model.model_fields[name].annotation)
        inner[name] = _valid(model)
        inner = inner[name]
    inner[path[-1]] = "@VALUE@"
    return json.dumps(body).replace('"@VALUE@"', token)


#: Each request body model and where it is sent.
_BODIES: list[tuple[type[BaseModel], str, str]] = [
    (CameraRecipe, "PUT", "/v1/cameras/cam-a"),
    (NewModel, "POST", "/v1/models"),
    *[(variant, "POST", "/v1/sources") for variant in get_args(get_args(SourceConfig)[0])],
]
_CASES = [
    pytest.param(model, method, url, path, id=f"{model.__name__}.{'.'.join(path)}")
    for model, method, url in _BODIES
    for path in _number_paths(model)
]


def test_the_cases_cover_the_fields_of_the_issue() -> None:
    named = {case.id for case in _CASES}
    for field in ("CameraRecipe.image_threshold", "CameraRecipe.deadline_ms"):
        assert field in named
    assert "CameraRecipe.roi.angle" in named and "CameraSourceConfig.fps" in named
    assert "GenicamSourceConfig.exposure_us" in named and len(named) >= 25


@pytest.mark.parametrize(("body_model", "method", "url", "path"), _CASES)
def test_non_finite_numbers_are_a_422_naming_the_field(
    line: Line,
    caplog: pytest.LogCaptureFixture,
    body_model: type[BaseModel],
    method: str,
    url: str,
    path: tuple[str, ...],
) -> None:
    for token in NON_FINITE:
        response = line.raw(method, url, _body(body_model, path, token))
        assert response.status_code == 422, (token, response.text)
        answer = response.json()
        (error,) = answer["errors"]  # the number is the body's only fault
        assert tuple(error["loc"][-len(path) :]) == path, (token, answer)
        assert ".".join(path) in answer["error"]
        assert "input" not in error and "ctx" not in error
    _no_traceback(caplog)
    assert [s["id"] for s in line.call("GET", "/v1/sources").json()] == ["cam-a"]


def test_a_422_never_echoes_the_input(line: Line, caplog: pytest.LogCaptureFixture) -> None:
    huge = "x" * 200_000
    tag = line.call("POST", "/v1/sources", json={"type": huge})  # echoed by pydantic's message
    assert tag.status_code == 422 and len(tag.content) < 4000, len(tag.content)
    # A lone surrogate cannot be written as UTF-8 (pydantic's error carried it as its input).
    for body in (
        '{"type": "camera", "camera_id": "c1", "uri": "0", "\\ud800": 1}',
        '{"type": "camera", "camera_id": "\\ud800", "uri": "0"}',
    ):
        surrogate = line.raw("POST", "/v1/sources", body)
        assert surrogate.status_code == 422 and surrogate.json()["errors"], surrogate.text
    # An unknown key is named in the error's location: cut and escaped there.
    key = "k\n" * 50_000
    extra = line.call("POST", "/v1/sources", json={"type": "camera", "uri": "0", key: 1})
    assert extra.status_code == 422 and len(extra.content) < 4000, len(extra.content)
    assert any(e["loc"][-1].startswith("k\\nk\\n") for e in extra.json()["errors"])
    many = line.call("PUT", "/v1/cameras/cam-a", json={f"k{i}": i for i in range(5000)})
    assert many.status_code == 422 and len(many.json()["errors"]) == 20
    assert "(and 4997 more)" in many.json()["error"]
    _no_traceback(caplog)


# --- 3: ids no URL could address ---------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "line/1", ".", "..", "a b", "a\nb", "a?b", "a#b", "a%b"])
def test_a_source_whose_id_no_url_could_address_is_refused(line: Line, bad: str) -> None:
    body = {"type": "directory", "path": str(line.folder), "camera_id": bad}
    refused = line.call("POST", "/v1/sources", json=body)
    assert refused.status_code == 422, refused.text
    assert refused.json()["errors"][0]["loc"] == ["body", "directory", "camera_id"]
    assert [s["id"] for s in line.call("GET", "/v1/sources").json()] == ["cam-a"]
    assert not line.state_path.exists()  # nothing was saved either


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(camera=st.text(min_size=1, max_size=12).filter(lambda t: valid_id(t) and t != "cam-a"))
def test_every_accepted_id_can_be_addressed_again(line: Line, camera: str) -> None:
    body = {"type": "directory", "path": str(line.folder), "camera_id": camera}
    created = line.call("POST", "/v1/sources", json=body)
    assert created.status_code == 201, created.text
    segment = quote(camera, safe="")
    assert line.call("POST", f"/v1/sources/{segment}/pause").json()["state"] == "paused"
    assert line.call("GET", f"/v1/sources/{segment}").json()["id"] == camera
    assert line.call("DELETE", f"/v1/sources/{segment}").status_code == 200
    assert [s["id"] for s in line.call("GET", "/v1/sources").json()] == ["cam-a"]


def test_path_parameters_follow_the_same_rule(line: Line) -> None:
    for method, url in (
        ("GET", "/v1/sources/a%0Ab"),
        ("POST", "/v1/sources/a%20b/pause"),
        ("DELETE", "/v1/models/a%3Fb"),
        ("PUT", "/v1/cameras/a%23b"),
        ("DELETE", "/v1/cameras/" + "x" * (MAX_ID_CHARS + 1)),
    ):
        response = line.call(method, url, json={})
        assert response.status_code == 422, (url, response.text)
        assert response.json()["errors"][0]["loc"][0] == "path"


# --- 4: log injection --------------------------------------------------------------------------


def test_hostile_ids_and_paths_write_one_log_line_per_record(
    line: Line, log_lines: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    forged = "x\n2026-01-01 00:00:00,000 WARNING inspector: inspector stopped: forged\x00"
    line.call("POST", "/v1/sources/" + quote(forged, safe="") + "/pause", auth=False)
    line.call("PUT", "/v1/cameras/" + quote(forged, safe=""), json={})
    folder = line.folder.parent / "no-images"
    folder.mkdir()
    odd_path = str(folder) + "\ninspector stopped: forged\u2028"
    body = {"type": "directory", "path": odd_path, "camera_id": "cam-z"}
    assert line.call("POST", "/v1/sources", json=body).status_code == 422  # logged, cannot start
    records = [r for r in caplog.records if r.levelno >= logging.INFO]
    written = log_lines.getvalue()
    assert "\x00" not in written and "\u2028" not in written
    lines = written.splitlines()
    assert all(LINE_START.match(text) for text in lines), lines
    assert len(lines) == len(records) >= 2
    assert not any("inspector stopped" in text.split(": ", 1)[0] for text in lines)


# --- 5: one status table, no tracebacks --------------------------------------------------------


def test_writes_during_shutdown_are_503(line: Line, caplog: pytest.LogCaptureFixture) -> None:
    line.pipeline.stop_fetching()  # what SIGTERM does first
    assert line.pipeline.intake.closed.wait(30)
    body = {"type": "directory", "path": str(line.folder), "camera_id": "cam-b"}
    for method, url, sent in (
        ("POST", "/v1/sources", body),
        ("PUT", "/v1/cameras/cam-a", {}),
        ("POST", "/v1/sources/cam-a/pause", None),
        ("DELETE", "/v1/cameras/cam-a", None),
    ):
        refused = line.call(method, url, json=sent)
        assert refused.status_code == 503, refused.text
        assert "shutting down" in refused.json()["error"]
    assert line.call("GET", "/v1/sources").status_code == 200  # reads still answer
    _no_traceback(caplog)


def test_a_source_added_as_shutdown_begins_is_503_and_closed(
    model: ReverseDistillation, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The race: the request passes the first check, then shutdown refuses the source's start.
    # A registered source that never ran keeps the input from closing: the window stays open.
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    pipeline = Pipeline([], BATCHER, small_models(model, metrics), [], metrics, keep_open=True)
    first = DirectorySourceConfig(path=str(_folder(tmp_path, "a")), camera_id="held")
    pipeline.intake.add("held", build_source(first, KafkaConfig(), metrics), start=False)
    pipeline.stop_fetching()
    assert not pipeline.intake.closed.is_set()
    control = LineControl(
        pipeline.intake, pipeline.models, pipeline.recipes, KafkaConfig(), metrics, {}
    )
    server = _server(registry, metrics, lambda: control)
    try:
        body = {"type": "directory", "path": str(_folder(tmp_path, "b")), "camera_id": "cam-b"}
        url = f"http://127.0.0.1:{server.port}/v1/sources"
        refused = requests.post(url, json=body, headers=AUTH, timeout=30)
        assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
        assert [s.id for s in pipeline.intake.slots()] == ["held"]
        changes = {"action": "add_source", "result": "rejected"}
        assert registry.get_sample_value("inspector_control_changes_total", changes) == 1
    finally:
        server.stop()
        pipeline.close()
    _no_traceback(caplog)


# InspectorError itself: an expected kind of error that the status table does not list.
@pytest.mark.parametrize("failure", [RuntimeError, ValueError, KeyError, InspectorError])
def test_a_bug_is_one_escaped_log_line_and_a_500(
    failure: type[Exception], log_lines: io.StringIO, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()

    def broken() -> LineControl:
        raise failure("internal state\nWARNING forged line")

    server = _server(registry, Metrics(registry), broken)
    try:
        answer = requests.get(f"http://127.0.0.1:{server.port}/v1/sources/cam-a", timeout=30)
    finally:
        server.stop()
    assert answer.status_code == 500
    assert answer.json() == {
        "error": f"internal error ({failure.__name__}): the daemon's log has the details"
    }
    _no_traceback(caplog)
    errors = [text for text in log_lines.getvalue().splitlines() if " ERROR " in text]
    assert len(errors) == 1, log_lines.getvalue()
    assert f"GET /v1/sources/{{source_id}} failed: {failure.__name__}" in errors[0]
    assert "\\nWARNING forged line" in errors[0]
    assert all(LINE_START.match(text) for text in log_lines.getvalue().splitlines())


# --- 7: recipes can be removed -----------------------------------------------------------------


def test_a_recipe_is_removed_and_the_saved_state_follows(line: Line) -> None:
    assert line.call("PUT", "/v1/cameras/cam-a", json={"deadline_ms": 250}).status_code == 200
    assert line.call("PUT", "/v1/cameras/*", json={"deadline_ms": 900}).status_code == 200
    saved = json.loads(line.state_path.read_text(encoding="utf-8"))
    assert set(saved["cameras"]) == {"cam-a", "*"}

    assert line.call("DELETE", "/v1/cameras/cam-a", auth=False).status_code == 401
    removed = line.call("DELETE", "/v1/cameras/cam-a")
    assert removed.status_code == 200 and removed.json()["deadline_ms"] == 250
    assert set(line.call("GET", "/v1/cameras").json()) == {"*"}
    saved = json.loads(line.state_path.read_text(encoding="utf-8"))
    assert set(saved["cameras"]) == {"*"}  # a restart does not bring it back
    assert line.pipeline.recipes.deadline_ms("cam-a") == 900  # its frames follow "*" now

    again = line.call("DELETE", "/v1/cameras/cam-a")
    assert again.status_code == 404 and "cam-a" in again.json()["error"]
    changes = {
        result: line.registry.get_sample_value(
            "inspector_control_changes_total", {"action": "remove_recipe", "result": result}
        )
        for result in ("ok", "rejected")
    }
    assert changes == {"ok": 1, "rejected": 1}
