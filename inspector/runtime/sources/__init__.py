"""Frame sources: Kafka, OpenCV cameras, GenICam cameras, folders of recorded frames."""

from __future__ import annotations

from collections.abc import Iterable

from inspector.runtime.config import (
    CameraSourceConfig,
    DirectorySourceConfig,
    KafkaConfig,
    KafkaSourceConfig,
    SourceConfig,
)
from inspector.runtime.config_genicam import GenicamSourceConfig
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
    if isinstance(config, GenicamSourceConfig):
        from inspector.runtime.sources.genicam import GenicamSource

        return GenicamSource(config, metrics)
    raise TypeError(f"unknown source config {type(config).__name__}")


def source_id(config: SourceConfig, taken: Iterable[str] = ()) -> str:
    """The id a source runs under: its camera id, or ``kafka`` numbered past ``taken`` ids."""
    if not isinstance(config, KafkaSourceConfig):
        return config.camera_id
    used = set(taken)
    n = 1
    while (candidate := "kafka" if n == 1 else f"kafka-{n}") in used:
        n += 1
    return candidate


def source_ids(configs: Iterable[SourceConfig]) -> list[str]:
    """The ids of the configured sources, in order (see :func:`source_id`)."""
    ids: list[str] = []
    for config in configs:
        ids.append(source_id(config, ids))
    return ids


__all__ = ["Source", "build_source", "source_id", "source_ids"]
