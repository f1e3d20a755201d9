"""A slow sink pushes back to Kafka: memory stays bounded and the lag shows in metrics."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
import torch
from fakes import FakeSink, small_models
from kafka_helpers import Topics, create_topics, produce
from prometheus_client import CollectorRegistry

from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import (
    BatcherConfig,
    KafkaConfig,
    KafkaSourceConfig,
)
from inspector.runtime.metrics import Metrics
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.sources.kafka import KafkaSource

pytestmark = pytest.mark.integration


def test_slow_sink_bounds_memory_and_lag_is_visible(bootstrap: str) -> None:
    topics = Topics.unique()
    create_topics(bootstrap, topics, partitions=1)
    rng = np.random.default_rng(0)
    png = cv2.imencode(".png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))[1].tobytes()
    n = 40
    produce(bootstrap, topics.frames, [(f"f{i}", png) for i in range(n)])

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    kafka = KafkaConfig(
        bootstrap_servers=bootstrap,
        frames_topic=topics.frames,
        group_id=topics.group,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        commit_interval_ms=100,
    )
    source = KafkaSource(kafka, KafkaSourceConfig(max_poll_records=16), metrics)
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64))
    models = small_models(model, metrics, max_batch_size=2)
    sink = FakeSink(delay_s=0.15)
    pipeline = Pipeline(
        [source],
        BatcherConfig(max_batch_size=2, max_wait_ms=5, queue_size=2),
        models,
        [sink],
        metrics,
        max_in_flight=4,
    )
    source.setup()
    pipeline.start()
    lags: list[float] = []
    try:
        deadline = time.monotonic() + 90
        while len(sink.results) < n and time.monotonic() < deadline:
            lag = registry.get_sample_value(
                "inspector_consumer_lag", {"topic": topics.frames, "partition": "0"}
            )
            if lag is not None:
                lags.append(lag)
            time.sleep(0.05)
        # Once the sink has caught up, commits bring the visible lag back down.
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            final = registry.get_sample_value(
                "inspector_consumer_lag", {"topic": topics.frames, "partition": "0"}
            )
            if final == 0:
                break
            time.sleep(0.1)
    finally:
        pipeline.stop_fetching()
        pipeline.wait_drained(30)
        pipeline.close()
    assert len(sink.results) == n
    assert sink.max_outstanding <= 4  # never more than the in-flight bound in memory
    assert max(lags) >= 10  # while the sink was slow the backlog stayed in Kafka, visibly
    assert final == 0  # and went back to zero as the sink caught up and offsets were committed
