"""The control API on a running pipeline: sources added, paused, resumed and removed over HTTP.

Real directory sources, a small model and the daemon's HTTP server; every response is checked
against the daemon's own ``/v1/openapi.json`` (schemathesis), and a schemathesis run sends
generated requests to every operation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import requests
import schemathesis
import torch
from fakes import FakeSink, serve_control, small_models
from hypothesis import HealthCheck, given, settings
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import (
    BatcherConfig,
    DirectorySourceConfig,
    KafkaConfig,
    explicit_config,
)
from inspector.runtime.control.server import HttpServer
from inspector.runtime.metrics import Metrics
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.sources import build_source

# Serves the control API over HTTP (uvicorn), schemathesis against it: the component tier.
pytestmark = pytest.mark.component

TOKEN = "t0ken-for-the-line-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _folder(root: Path, name: str, n: int) -> Path:
    folder = root / name
    folder.mkdir()
    rng = np.random.default_rng(len(name))
    for i in range(n):
        image = rng.integers(0, 255, (40, 56, 3), dtype=np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder


@dataclass
class Line:
    base: str
    pipeline: Pipeline
    sink: FakeSink
    registry: CollectorRegistry
    schema: Any

    def call(self, method: str, path: str, auth: bool = True, **kw: Any) -> requests.Response:
        headers = AUTH if auth else {}
        response = requests.request(method, self.base + path, headers=headers, timeout=30, **kw)
        # Every answer the test sees must be one the published contract allows.
        self.schema[path_template(path)][method].validate_response(response)
        return response

    def results_of(self, camera: str) -> int:
        return sum(1 for r in self.sink.results if r.message.camera_id == camera)


def path_template(path: str) -> str:
    parts = path.split("/")
    if len(parts) >= 4:
        names = {"sources": "{source_id}", "models": "{name}", "cameras": "{camera_id}"}
        parts[3] = names[parts[2]]
    return "/".join(parts)


@pytest.fixture
def line(tmp_path: Path) -> Iterator[Line]:
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = small_models(model, metrics)
    first = DirectorySourceConfig(
        path=str(_folder(tmp_path, "a", 6)), camera_id="cam-a", loop=True, fps=20
    )
    source = build_source(first, KafkaConfig(), metrics)
    source.setup()
    sink = FakeSink()
    pipeline = Pipeline(
        [source],
        BatcherConfig(max_batch_size=4, max_wait_ms=5),
        models,
        [sink],
        metrics,
        source_ids=["cam-a"],
        keep_open=True,
    )
    pipeline.start()
    serving = explicit_config({"model": {"device": "cpu", "warmup_batches": 0}})
    server = serve_control(pipeline, models, registry, metrics, serving, TOKEN, {"cam-a": first})
    base = f"http://127.0.0.1:{server.port}"
    spec = requests.get(base + "/v1/openapi.json", timeout=10).json()
    try:
        yield Line(base, pipeline, sink, registry, schemathesis.openapi.from_dict(spec))
    finally:
        server.stop()
        pipeline.stop_fetching()
        pipeline.close()


def _standstill(line: Line, stopped: str, running: str) -> int:
    """``stopped``'s result count once it no longer moves while ``running`` delivers 4 more."""
    counts: list[int] = []

    def still() -> bool:
        counts.append(line.results_of(stopped))
        start = line.results_of(running)
        wait_until(lambda: line.results_of(running) >= start + 4, 60, f"4 more of {running}")
        return line.results_of(stopped) == counts[-1]

    wait_until(still, 120, f"{stopped} to stand still")
    return counts[-1]


def test_sources_start_pause_resume_and_stop_without_touching_the_others(
    line: Line, tmp_path: Path
) -> None:
    assert [s["id"] for s in line.call("GET", "/v1/sources").json()] == ["cam-a"]
    folder = _folder(tmp_path, "b", 4)
    body = {"type": "directory", "path": str(folder), "camera_id": "cam-b", "loop": True, "fps": 20}
    created = line.call("POST", "/v1/sources", json=body)
    assert created.status_code == 201, created.text
    assert created.json()["id"] == "cam-b" and created.json()["state"] == "running"
    wait_until(
        lambda: line.results_of("cam-b") >= 4 and line.results_of("cam-a") >= 4, 60, "both cameras"
    )

    assert line.call("POST", "/v1/sources/cam-a/pause").json()["state"] == "paused"
    # What cam-a had admitted before the pause is still delivered (how many of cam-b's frames
    # pass meanwhile depends on the batches): wait until cam-a stands still while cam-b runs.
    a_paused = _standstill(line, "cam-a", "cam-b")
    b_before = line.results_of("cam-b")
    wait_until(lambda: line.results_of("cam-b") >= b_before + 8, 60, "cam-b to keep flowing")
    assert line.results_of("cam-a") == a_paused
    assert line.call("POST", "/v1/sources/cam-a/resume").json()["state"] == "running"
    wait_until(lambda: line.results_of("cam-a") > a_paused, 60, "cam-a after its resume")

    removed = line.call("DELETE", "/v1/sources/cam-b")
    assert removed.status_code == 200 and removed.json()["state"] == "stopped"
    assert [s["id"] for s in line.call("GET", "/v1/sources").json()] == ["cam-a"]
    # Frames cam-b had admitted still finish (delivered, not lost), ahead of cam-a's next ones.
    b_final = _standstill(line, "cam-b", "cam-a")
    a_now = line.results_of("cam-a")
    wait_until(lambda: line.results_of("cam-a") >= a_now + 4, 60, "cam-a to keep running")
    assert line.results_of("cam-b") == b_final
    changes = {
        (s.labels["action"], s.labels["result"]): s.value
        for m in line.registry.collect()
        if m.name == "inspector_control_changes"
        for s in m.samples
        if s.name.endswith("_total")
    }
    assert changes == {
        ("add_source", "ok"): 1,
        ("pause_source", "ok"): 1,
        ("resume_source", "ok"): 1,
        ("remove_source", "ok"): 1,
    }


def test_writes_need_the_token_and_bad_requests_name_the_field(
    line: Line, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"type": "directory", "path": str(tmp_path), "camera_id": "cam-x"}
    for headers in ({}, {"Authorization": "Bearer wrong-token-wrong-token"}):
        response = requests.post(line.base + "/v1/sources", json=body, headers=headers, timeout=10)
        line.schema["/v1/sources"]["POST"].validate_response(response)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text
    assert "refused: no bearer token" in caplog.text

    bad = line.call("POST", "/v1/sources", json={**body, "fps": -1})
    assert bad.status_code == 422 and "fps" in bad.text
    unknown = line.call("POST", "/v1/sources", json={**body, "type": "ftp"})
    assert unknown.status_code == 422 and "type" in unknown.text
    empty = line.call("POST", "/v1/sources", json=body)  # a folder without images
    assert empty.status_code == 422 and "no image files" in empty.json()["error"]
    taken = line.call("POST", "/v1/sources", json={**body, "camera_id": "cam-a"})
    assert taken.status_code == 409
    assert line.call("GET", "/v1/sources/nope").status_code == 404
    assert line.call("POST", "/v1/sources/nope/pause").status_code == 404
    assert line.call("DELETE", "/v1/sources/nope").status_code == 404
    not_a_camera = line.call("POST", "/v1/sources/cam-a/trigger")  # a folder takes no triggers
    assert not_a_camera.status_code == 409 and "software triggers" in not_a_camera.json()["error"]
    # The daemon kept running through all of it.
    assert [s["state"] for s in line.call("GET", "/v1/sources").json()] == ["running"]


def test_the_control_api_is_off_without_a_token() -> None:
    registry = CollectorRegistry()
    server = HttpServer("127.0.0.1", 0, registry, lambda: [], Metrics(registry))
    server.start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        for method, path in (("GET", "/v1/sources"), ("GET", "/v1/openapi.json")):
            response = requests.request(method, base + path, headers=AUTH, timeout=10)
            assert response.status_code == 404
            assert "INSPECTOR_HTTP__ADMIN_TOKEN" in response.json()["error"]
        assert requests.get(base + "/healthz", timeout=10).status_code == 200
    finally:
        server.stop()


def test_generated_requests_get_only_documented_answers(line: Line) -> None:
    # Property-based: schemathesis makes requests from the schema for every operation (writes
    # without the token: 401, never a 500 or an undocumented answer; a generated source must
    # not open the host's cameras).
    checks = [
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.status_code_conformance,
        schemathesis.checks.response_schema_conformance,
        schemathesis.checks.content_type_conformance,
    ]
    answers: dict[str, set[int]] = {}
    for operation in line.schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def run(case: Any) -> None:
            response = case.call_and_validate(base_url=line.base, checks=checks)
            answers.setdefault(case.operation.label, set()).add(response.status_code)

        run()
    # Every operation was exercised (counted from the published document: routes are added).
    assert len(answers) == len(list(line.schema.get_all_operations())) >= 19
    assert {"POST /v1/cameras/{camera_id}/promote", "POST /v1/cameras/{camera_id}/rollback"} <= set(
        answers
    )
    writes = [label for label in answers if not label.startswith("GET")]
    assert all(answers[label] == {401} for label in writes), answers  # no token, no change
    assert [s["id"] for s in line.call("GET", "/v1/sources").json()] == ["cam-a"]


def test_a_camera_switches_product_mid_stream_without_losing_frames(
    line: Line, tmp_path: Path, checkpoint: LoadedCheckpoint
) -> None:
    wait_until(lambda: line.results_of("cam-a") >= 4, 60, "4 results of cam-a")
    new = {"name": "product-b", "checkpoint": str(checkpoint.path)}
    loaded = line.call("POST", "/v1/models", json=new)
    assert loaded.status_code == 201, loaded.text
    assert loaded.json()["checkpoint_sha256"] == checkpoint.sha256
    assert loaded.json()["memory_bytes"] > 0 and not loaded.json()["default"]
    assert line.call("POST", "/v1/models", json=new).status_code == 409
    missing = {"name": "product-c", "checkpoint": str(tmp_path / "none.safetensors")}
    refused = line.call("POST", "/v1/models", json=missing)
    assert refused.status_code == 422 and "none.safetensors" in refused.json()["error"]
    assert line.call("PUT", "/v1/cameras/cam-a", json={"model": "nope"}).status_code == 422

    switched = line.call("PUT", "/v1/cameras/cam-a", json={"model": "product-b"})
    assert switched.status_code == 200 and switched.json()["model"] == "product-b"
    before = line.results_of("cam-a")
    wait_until(lambda: line.results_of("cam-a") >= before + 8, 60, "8 more of cam-a")
    names = [
        r.message.model.name
        for r in sorted(line.sink.results, key=lambda r: r.message.processed_at)
        if r.message.camera_id == "cam-a"
    ]
    first_b = names.index("product-b")
    # Before the switch the default model, after it the new one: never back, nothing lost.
    assert set(names[:first_b]) == {"m"} and set(names[first_b:]) == {"product-b"}
    assert first_b >= 4 and not line.sink.dead_letters
    models = {m["name"]: m for m in line.call("GET", "/v1/models").json()}
    assert models["product-b"]["used_by"] == ["cam-a"] and models["m"]["default"]
    assert line.call("DELETE", "/v1/models/product-b").status_code == 409  # cam-a uses it
    assert line.call("DELETE", "/v1/models/m").status_code == 409  # the default
    memory = line.registry.get_sample_value("inspector_model_memory_bytes", {"model": "product-b"})
    assert memory == models["product-b"]["memory_bytes"]

    # A recipe's own threshold: everything of cam-a flagged, with its map, by the recipe.
    line.call("PUT", "/v1/cameras/cam-a", json={"model": "product-b", "image_threshold": 0.0})
    seen = line.results_of("cam-a")
    wait_until(lambda: line.results_of("cam-a") >= seen + 8, 60, "8 more of cam-a")
    last = [r for r in line.sink.results if r.message.camera_id == "cam-a"][-4:]
    assert all(r.message.threshold.source == "recipe" for r in last)
    assert all(r.message.is_anomalous and r.heatmap is not None for r in last)

    line.call("PUT", "/v1/cameras/cam-a", json={})  # back to the default model
    assert line.call("DELETE", "/v1/models/product-b").status_code == 200
    assert [m["name"] for m in line.call("GET", "/v1/models").json()] == ["m"]
