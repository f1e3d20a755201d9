"""A camera's shadow model on a small line, promoted and rolled back over the control API.

The session's trained model serves; the same checkpoint under another name, with a very low
image threshold in the recipe, is a deliberately worse shadow (it flags good frames). Real
directory source, pipeline, HTTP server and state file.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from fakes import FakeSink, serve_control
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.ml.trainer import TrainResult
from inspector.runtime.config import (
    BatcherConfig,
    DirectorySourceConfig,
    KafkaConfig,
    explicit_config,
)
from inspector.runtime.control.restore import starting_line
from inspector.runtime.control.state import load_state
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelSet, load_served_model
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.recipes import CameraRecipe, Recipes
from inspector.runtime.sources import build_source

# A server and the trained model: the component tier.
pytestmark = pytest.mark.component

TOKEN = "t0ken-for-the-shadow-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CAMERA = "cam"


@dataclass
class Line:
    base: str
    sink: FakeSink
    registry: CollectorRegistry
    pipeline: Pipeline
    state_path: Path
    models: ModelSet

    def post(self, path: str, auth: bool = True) -> requests.Response:
        return requests.post(self.base + path, headers=AUTH if auth else {}, timeout=60)

    def results(self) -> list[Any]:
        return [r.message for r in self.sink.results]

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def _frames(data_root: Path, out: Path) -> Path:
    """Good and defective test frames of the session's dataset, in one folder."""
    out.mkdir()
    test = next(p for p in data_root.rglob("test") if p.is_dir())
    for kind in ("good", "scratch", "crack"):
        for image in sorted((test / kind).glob("*.png"))[:4]:
            shutil.copy(image, out / f"{kind}-{image.name}")
    return out


@pytest.fixture
def line(trained: TrainResult, data_root: Path, tmp_path: Path) -> Iterator[Line]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    serving = explicit_config({"model": {"device": "cpu", "warmup_batches": 0}})
    models = ModelSet(load_served_model("good", trained.checkpoint, serving, metrics), metrics)
    models.add(load_served_model("eager", trained.checkpoint, serving, metrics))
    recipes = Recipes(
        {
            CAMERA: CameraRecipe(model="good", shadow_model="eager", shadow_image_threshold=0.001),
            "plain": CameraRecipe(model="good"),
        }
    )
    # Slow enough that a shadow job mostly finds the thread idle.
    config = DirectorySourceConfig(
        path=str(_frames(data_root, tmp_path / "frames")), camera_id=CAMERA, loop=True, fps=4
    )
    source = build_source(config, KafkaConfig(), metrics)
    source.setup()
    sink = FakeSink()
    pipeline = Pipeline(
        [source],
        BatcherConfig(max_batch_size=4, max_wait_ms=5),
        models,
        [sink],
        metrics,
        recipes=recipes,
        source_ids=[CAMERA],
        keep_open=True,
    )
    pipeline.start()
    state_path = tmp_path / "state.json"
    server = serve_control(
        pipeline,
        models,
        registry,
        metrics,
        serving,
        TOKEN,
        {CAMERA: config},
        state_path=state_path,
        shadows=pipeline.shadows,
    )
    try:
        yield Line(f"http://127.0.0.1:{server.port}", sink, registry, pipeline, state_path, models)
    finally:
        server.stop()
        pipeline.stop_fetching()
        pipeline.close()


def _wait_results(line: Line, n: int) -> None:
    wait_until(lambda: len(line.sink.results) >= n, 180, f"{n} results")


def test_shadow_scores_every_frame_and_promotion_swaps_with_evidence(line: Line) -> None:
    _wait_results(line, 12)
    # Every frame carries the shadow's verdict, but for those whose shadow job would have
    # delayed a served one (counted; rare at this pace, but the machine is shared).
    first = line.results()[:12]
    shadowed = [m for m in first if m.shadow is not None]
    skipped = line.metric("inspector_shadow_skipped_total", camera=CAMERA)
    assert len(shadowed) >= 12 - skipped and len(shadowed) > 6
    assert all(m.shadow.model == "eager" for m in shadowed)
    assert all(m.model.name == "good" for m in first)
    # The eager shadow flags good frames the served model passes: disagreements in the metric.
    disagree = line.metric(
        "inspector_shadow_decisions_total", camera=CAMERA, served="good", shadow="anomalous"
    )
    assert disagree >= sum(1 for m in shadowed if not m.is_anomalous and m.shadow.is_anomalous) > 0

    # Writes need the token; an unknown camera is a 404; a camera without a shadow a 409.
    assert line.post(f"/v1/cameras/{CAMERA}/promote", auth=False).status_code == 401
    assert line.post("/v1/cameras/nobody/promote").status_code == 404
    assert line.post("/v1/cameras/plain/promote").status_code == 409
    assert line.post(f"/v1/cameras/{CAMERA}/rollback").status_code == 409  # nothing promoted

    answer = line.post(f"/v1/cameras/{CAMERA}/promote")
    assert answer.status_code == 200, answer.text
    promoted = answer.json()
    seen = len(line.sink.results)
    compared = [m for m in line.results() if m.shadow is not None and m.model.name == "good"]
    evidence = promoted["evidence"]
    assert (promoted["served"], promoted["shadow"]) == ("eager", "good")
    assert (evidence["served"], evidence["shadow"]) == ("good", "eager")
    # Results delivered after the answer was built may add to the list, never take away.
    assert len(shadowed) <= evidence["frames_compared"] <= len(compared)
    assert 0 <= evidence["agreement"] < 1
    assert promoted["labelled"] is None  # no retention on this line
    assert promoted["recipe"]["model"] == "eager" and promoted["recipe"]["image_threshold"] == 0.001
    saved = load_state(line.state_path)
    assert saved is not None and saved.promoted == (CAMERA,)
    assert saved.cameras[CAMERA].model == "eager" and saved.cameras[CAMERA].shadow_model == "good"

    _wait_results(line, seen + 8)
    rolled = line.post(f"/v1/cameras/{CAMERA}/rollback")
    assert rolled.status_code == 200, rolled.text
    assert (rolled.json()["served"], rolled.json()["shadow"]) == ("good", "eager")
    assert rolled.json()["evidence"]["served"] == "eager"
    saved = load_state(line.state_path)
    assert saved is not None and saved.promoted == ()
    assert saved.cameras[CAMERA] == CameraRecipe(
        model="good", shadow_model="eager", shadow_image_threshold=0.001
    )
    # The saved line comes back as saved.
    restarted = starting_line(
        explicit_config({"daemon": {"state_path": str(line.state_path)}}), line.models
    )
    assert restarted.recipes[CAMERA].model == "good"
    seen = len(line.sink.results)
    _wait_results(line, seen + 8)
    stopped = requests.delete(f"{line.base}/v1/sources/{CAMERA}", headers=AUTH, timeout=60)
    assert stopped.status_code == 200, stopped.text
    wait_until(lambda: line.pipeline.in_flight == 0, 60, "every frame delivered")

    # Every frame ended as exactly one result, naming the model that served it, and the shadow
    # (when present) is the other model; the served model changed only between batches.
    messages = line.results()
    ids = [m.frame_id for m in messages]
    assert len(ids) == len(set(ids))
    assert not line.sink.dead_letters
    served = [m.model.name for m in messages]
    assert served[0] == "good" and "eager" in served and served[-1] == "good"
    runs = [name for i, name in enumerate(served) if i == 0 or served[i - 1] != name]
    assert runs == ["good", "eager", "good"]
    for m in messages:
        assert m.shadow is None or {m.model.name, m.shadow.model} == {"good", "eager"}
        if m.model.name == "eager":
            assert m.threshold.image == 0.001 and m.threshold.source == "recipe"
    with_shadow = sum(1 for m in messages if m.shadow is not None)
    skipped = line.metric("inspector_shadow_skipped_total", camera=CAMERA)
    assert with_shadow + skipped == len(messages)
    decisions = sum(
        line.metric("inspector_shadow_decisions_total", camera=CAMERA, served=a, shadow=b)
        for a in ("anomalous", "good")
        for b in ("anomalous", "good")
    )
    assert decisions == with_shadow
