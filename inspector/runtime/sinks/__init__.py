"""Result sinks: Kafka (results and dead letters), JSON-lines, overlays, MQTT, OPC UA."""

from __future__ import annotations

from collections.abc import Callable

from inspector.runtime.config import InspectorConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.sinks.base import Sink

#: A camera's ``deadline_ms`` now (``None``: it has none), e.g. ``Recipes.deadline_ms``.
DeadlineFn = Callable[[str], int | None]


def build_sinks(
    config: InspectorConfig, metrics: Metrics, deadline_ms: DeadlineFn | None = None
) -> list[Sink]:
    """The sinks the config enables (the daemon's only way to make them).

    Args:
        config: The daemon's configuration.
        metrics: Where the sinks count.
        deadline_ms: The live recipes' deadlines, for the plant sinks' ``late`` (a recipe set
            over the control API or restored from the state file counts from its next frame);
            by default the configured cameras' deadlines.
    """
    if deadline_ms is None:
        from inspector.runtime.recipes import Recipes

        deadline_ms = Recipes(config.cameras).deadline_ms
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
    if config.sinks.mqtt.host is not None:
        from inspector.runtime.sinks.mqtt import MqttSink

        # The plant sink judges `late` by the PUBACK's time against the camera's deadline.
        sinks.append(MqttSink(config.sinks.mqtt, metrics, deadline_ms=deadline_ms))
    if config.sinks.opcua.enabled:
        from inspector.runtime.sinks.opcua import OpcuaSink

        # Ready mirrors the inspector_ready gauge (what /readyz last answered), read from the
        # metrics rather than from the control plane, which the data path never imports.
        sinks.append(OpcuaSink(config.sinks.opcua, metrics, deadline_ms=deadline_ms))
    return sinks


__all__ = ["DeadlineFn", "Sink", "build_sinks"]
