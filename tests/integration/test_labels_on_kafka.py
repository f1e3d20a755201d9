"""Labels on a real broker: the daemon's wiring sends each label to ``kafka.labels_topic``.

The retention sink, the label publisher (a real ``KafkaProducer`` with the daemon's producer
settings) and the HTTP server, wired as the daemon wires them; a label set over HTTP is read
back from the topic and checked against the published ``inspector.label/v1`` schema.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from fakes import make_inspection
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

import inspector
from inspector.runtime.config import InspectorConfig
from inspector.runtime.control.results_wiring import ResultsWiring
from inspector.runtime.control.server import HttpServer
from inspector.runtime.metrics import Metrics

pytestmark = pytest.mark.integration

ADMIN = "admin-token-for-labels-0123456"
SCHEMA = json.loads((Path(inspector.__file__).parent / "schemas" / "label.v1.json").read_text())


def test_a_label_set_over_http_reaches_the_labels_topic(
    bootstrap: str,
    make_topic: Callable[..., str],
    read_topic: Callable[..., list[Any]],
    tmp_path: Path,
) -> None:
    topic = make_topic()
    config = InspectorConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": bootstrap, "labels_topic": topic},
            "retention": {"enabled": True, "path": str(tmp_path / "retained")},
        }
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    wiring = ResultsWiring(config, metrics)
    sinks = wiring.sinks()
    for sink in sinks:
        sink.setup()
    assert wiring.retention is not None and wiring.publisher is not None
    wiring.retention.write(make_inspection("line1/cam2/000042", "cam2", anomalous=True))
    server = HttpServer(
        "127.0.0.1",
        0,
        registry,
        lambda: [],
        metrics,
        admin_token=SecretStr(ADMIN),
        results=wiring.access(),
    )
    server.start()
    try:
        response = requests.post(
            f"http://127.0.0.1:{server.port}/v1/results/line1%2Fcam2%2F000042/label",
            json={"label": "defect", "kind": "scratch"},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        assert wiring.publisher.flush(60.0)
        [record] = read_topic(topic, 1, timeout=30.0)
    finally:
        server.stop()
        wiring.close()
        for sink in sinks:
            sink.close()
    assert record.key == b"cam2"
    message = json.loads(record.value)
    jsonschema.validate(message, SCHEMA)
    assert (message["frame_id"], message["label"], message["kind"]) == (
        "line1/cam2/000042",
        "defect",
        "scratch",
    )
    delivered = {"result": "delivered"}
    assert registry.get_sample_value("inspector_label_publishes_total", delivered) == 1
