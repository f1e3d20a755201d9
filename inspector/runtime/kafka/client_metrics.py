"""Reading kafka-python clients' own metrics (shared by the Kafka source and sink).

A leaf: imports nothing from inspector, so both stages can use it.
"""

from __future__ import annotations

from typing import Any


def connection_count(client: Any) -> float | None:
    """Open broker connections per kafka-python's own metrics; ``None`` when unavailable.

    kafka-python 3's ``bootstrap_connected()`` is only true *while* bootstrapping, and a
    consumer group's state stays "stable" with the broker gone, so the connection count is
    the signal that a client is connected.

    Args:
        client: A ``KafkaConsumer`` or ``KafkaProducer`` (or a fake without metrics).
    """
    try:
        groups = client.metrics()
    except Exception:  # fakes without metrics, or metrics disabled
        return None
    if not isinstance(groups, dict):
        return None
    for values in groups.values():
        if isinstance(values, dict) and "connection-count" in values:
            return float(values["connection-count"])
    return None
