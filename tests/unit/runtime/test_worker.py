from __future__ import annotations

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.runtime.metrics import Metrics
from inspector.runtime.worker import ModelWorker


def _worker(registry: CollectorRegistry, warmup: int = 1) -> ModelWorker:
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64))
    return ModelWorker(
        model, torch.device("cpu"), Metrics(registry), warmup_batches=warmup, max_batch_size=2
    )


def test_not_ready_until_warmed_up() -> None:
    registry = CollectorRegistry()
    worker = _worker(registry)
    assert not worker.ready
    worker.warm_up()
    assert worker.ready


def test_warm_up_is_not_production_traffic_and_inference_counts_per_frame() -> None:
    registry = CollectorRegistry()
    worker = _worker(registry, warmup=2)
    worker.warm_up()
    # Warm-up batches (with compile time, at every start and reload) are left out...
    assert registry.get_sample_value("inspector_inference_batch_seconds_count") == 0
    per_frame = {"stage": "inference"}
    assert registry.get_sample_value("inspector_stage_seconds_count", per_frame) is None
    # ...and a batch of 3 is one batch and 3 frames, each having spent the batch's time.
    worker.score([np.zeros((64, 64, 3), np.uint8)] * 3)
    assert registry.get_sample_value("inspector_inference_batch_seconds_count") == 1
    assert registry.get_sample_value("inspector_stage_seconds_count", per_frame) == 3
    batch_sum = registry.get_sample_value("inspector_inference_batch_seconds_sum")
    frames_sum = registry.get_sample_value("inspector_stage_seconds_sum", per_frame)
    assert batch_sum is not None and frames_sum == 3 * batch_sum


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


def test_score_brings_back_only_the_maps_asked_for() -> None:
    worker = _worker(CollectorRegistry(), warmup=0)
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    full = worker.infer(images)
    asked: list[torch.Tensor] = []

    def middle_only(scores: torch.Tensor) -> torch.Tensor:
        asked.append(scores)
        return torch.tensor([False, True, False])

    worker.map_filter = middle_only
    scored = worker.score(images)
    torch.testing.assert_close(asked[0], full.pred_score)  # the filter sees the raw scores
    torch.testing.assert_close(scored.scores, full.pred_score)
    assert scored.maps[0] is None and scored.maps[2] is None
    assert scored.maps[1] is not None
    torch.testing.assert_close(scored.maps[1], full.anomaly_map[1, 0])


def test_score_without_a_filter_returns_every_map() -> None:
    worker = _worker(CollectorRegistry(), warmup=0)
    images = [np.zeros((64, 64, 3), np.uint8), np.full((64, 64, 3), 200, np.uint8)]
    scored = worker.score(images)
    assert all(m is not None and m.shape == (64, 64) for m in scored.maps)
