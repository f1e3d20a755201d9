from __future__ import annotations

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from inspector.config import ModelConfig
from inspector.metrics import Metrics
from inspector.model import ReverseDistillation
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.worker import ModelWorker


def _worker(registry: CollectorRegistry, warmup: int = 1) -> ModelWorker:
    torch.manual_seed(0)
    model = ReverseDistillation(ModelConfig(backbone="resnet18", image_size=64))
    return ModelWorker(
        model, torch.device("cpu"), Metrics(registry), warmup_batches=warmup, max_batch_size=2
    )


def test_not_ready_until_warmed_up() -> None:
    registry = CollectorRegistry()
    worker = _worker(registry)
    assert not worker.ready
    worker.warm_up()
    assert worker.ready
    assert registry.get_sample_value("inspector_stage_seconds_count", {"stage": "inference"}) == 1


def test_mixed_frame_sizes_are_preprocessed_like_training() -> None:
    worker = _worker(CollectorRegistry(), warmup=0)
    rng = np.random.default_rng(1)
    images = [
        rng.integers(0, 255, (100, 150, 3), dtype=np.uint8),
        rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
    ]
    out = worker.infer(images)
    assert out.anomaly_map.shape == (2, 1, 64, 64) and out.pred_score.shape == (2,)
    with torch.inference_mode():
        reference = worker.model(preprocess(to_tensor_rgb(images[0]).unsqueeze(0), (64, 64)))
    torch.testing.assert_close(out.anomaly_map[:1], reference.anomaly_map)
    assert not out.anomaly_map.requires_grad
