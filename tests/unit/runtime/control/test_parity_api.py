"""The control API refuses a model whose probe-set scores moved: 422 naming the difference.

The real control API over a running pipeline (a directory source, the daemon's HTTP server),
loading real checkpoint files through the daemon's loader.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
import torch
from fakes import FakeSink, serve_control, small_models
from probed import tamper, write_probed
from prometheus_client import CollectorRegistry

from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import (
    BatcherConfig,
    DirectorySourceConfig,
    KafkaConfig,
    explicit_config,
)
from inspector.runtime.metrics import Metrics
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.sources import build_source

# Serves the control API over HTTP (uvicorn): the component tier.
pytestmark = pytest.mark.component

TOKEN = "t0ken-for-the-parity-check-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    base: str
    registry: CollectorRegistry

    def add_model(self, name: str, checkpoint: Path) -> requests.Response:
        body = {"name": name, "checkpoint": str(checkpoint)}
        return requests.post(self.base + "/v1/models", json=body, headers=AUTH, timeout=120)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    models = small_models(model, metrics)
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.png"), rng.integers(0, 255, (40, 56, 3), dtype=np.uint8))
    config = DirectorySourceConfig(path=str(frames), camera_id="cam-a", loop=False, fps=20)
    source = build_source(config, KafkaConfig(), metrics)
    source.setup()
    pipeline = Pipeline(
        [source],
        BatcherConfig(max_batch_size=4, max_wait_ms=5),
        models,
        [FakeSink()],
        metrics,
        source_ids=["cam-a"],
        keep_open=True,
    )
    pipeline.start()
    serving = explicit_config({"model": {"device": "cpu", "warmup_batches": 0}})
    server = serve_control(pipeline, models, registry, metrics, serving, TOKEN, {"cam-a": config})
    try:
        yield Api(f"http://127.0.0.1:{server.port}", registry)
    finally:
        server.stop()
        pipeline.stop_fetching()
        pipeline.close()


def test_a_tampered_checkpoint_is_refused_with_a_422_naming_the_difference(
    api: Api, tmp_path: Path
) -> None:
    honest = write_probed(tmp_path / "honest.safetensors")
    changed = tamper(honest, tmp_path / "tampered.safetensors", probe=2, by=0.25)

    refused = api.add_model("tampered", tmp_path / "tampered.safetensors")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert f"probe 2 map_mean: recorded {changed:.6g}, measured " in error
    assert "difference" in error and "exceeds the tolerance" in error
    assert "torch fp32" in error and "inspector export" in error
    refusals = api.registry.get_sample_value(
        "inspector_model_parity_checks_total", {"result": "refused"}
    )
    assert refusals == 1

    added = api.add_model("honest", honest)
    assert added.status_code == 201, added.text
    names = [m["name"] for m in requests.get(api.base + "/v1/models", timeout=30).json()]
    assert "honest" in names and "tampered" not in names
