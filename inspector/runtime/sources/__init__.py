"""Frame sources: Kafka, OpenCV cameras, folders of recorded frames."""

from __future__ import annotations

from inspector.runtime.config import (
    CameraSourceConfig,
    DirectorySourceConfig,
    KafkaConfig,
    KafkaSourceConfig,
    SourceConfig,
)
from inspector.runtime.metrics import Metrics
from inspector.runtime.sources.base import Source


def build_source(config: SourceConfig, kafka: KafkaConfig, metrics: Metrics) -> Source:
    """Create the source a config entry describes (the daemon's only way to make one).

    Args:
        config: One entry of ``sources``.
        kafka: Broker settings (used by Kafka sources).
        metrics: Metrics to report to.

    Returns:
        The source, not yet set up.
    """
    # Imported here so a camera-only daemon never imports the Kafka client and vice versa.
    if isinstance(config, KafkaSourceConfig):
        from inspector.runtime.sources.kafka import KafkaSource

        return KafkaSource(kafka, config, metrics)
    if isinstance(config, CameraSourceConfig):
        from inspector.runtime.sources.camera import CameraSource

        return CameraSource(config, metrics)
    if isinstance(config, DirectorySourceConfig):
        from inspector.runtime.sources.directory import DirectorySource

        return DirectorySource(config, metrics)
    raise TypeError(f"unknown source config {type(config).__name__}")


__all__ = ["Source", "build_source"]
