"""Result sinks: Kafka (results and dead letters), JSON-lines file, overlay images."""

from __future__ import annotations

from inspector.runtime.config import InspectorConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.sinks.base import Sink


def build_sinks(config: InspectorConfig, metrics: Metrics) -> list[Sink]:
    """The sinks the config enables (the daemon's only way to make them)."""
    sinks: list[Sink] = []
    if config.sinks.kafka.enabled:
        from inspector.runtime.sinks.kafka import KafkaSink

        sinks.append(KafkaSink(config.kafka, metrics))
    if config.sinks.jsonl.path is not None:
        from inspector.runtime.sinks.jsonl import JsonlSink

        sinks.append(JsonlSink(config.sinks.jsonl, metrics))
    if config.sinks.overlays.directory is not None:
        from inspector.runtime.sinks.overlays import OverlaySink

        sinks.append(OverlaySink(config.sinks.overlays, metrics))
    return sinks


__all__ = ["Sink", "build_sinks"]
