"""Reading the connection count from kafka-python's client metrics."""

from __future__ import annotations

from typing import Any

from inspector.runtime.kafka.client_metrics import connection_count


class Client:
    def __init__(self, metrics: Any) -> None:
        self._metrics = metrics

    def metrics(self) -> Any:
        if isinstance(self._metrics, Exception):
            raise self._metrics
        return self._metrics


def test_reads_the_connection_count_from_any_metric_group() -> None:
    groups = {"consumer-metrics": {"x": 1.0}, "consumer-node-metrics": {"connection-count": 2}}
    assert connection_count(Client(groups)) == 2.0
    assert connection_count(Client({"producer-metrics": {"connection-count": 0}})) == 0.0


def test_none_when_the_client_cannot_say() -> None:
    assert connection_count(Client({"producer-metrics": {"other": 1}})) is None
    assert connection_count(Client(None)) is None
    assert connection_count(Client(RuntimeError("metrics disabled"))) is None
    assert connection_count(object()) is None
