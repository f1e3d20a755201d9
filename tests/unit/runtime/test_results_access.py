"""The results routes' access rules, labels on Kafka, and the console's live data.

The daemon's HTTP server over a real retention store (frames written by the real retention
sink), without a model: the read token, retention off and starting, the label publisher with a
recording producer (the real broker is ``tests/integration/test_labels_on_kafka.py``), the
published label schema's use; the pure parts are in ``test_console_data.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
import requests
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from retention_helpers import SinkMaker, inspection

import inspector
from inspector.runtime.config import InspectorConfig, KafkaConfig
from inspector.runtime.control.api_results import ResultsAccess
from inspector.runtime.control.console import CONTENT_SECURITY_POLICY
from inspector.runtime.control.labels import (
    LabelMetrics,
    LabelPublisher,
    label_message,
    once_per_registry,
)
from inspector.runtime.control.results_wiring import ResultsWiring
from inspector.runtime.control.server import HttpServer
from inspector.runtime.metrics import CameraLabels, Metrics

ADMIN = "admin-token-0123456789abcdef"
READER = "reader-token-0123456789abcdef"
LABEL_SCHEMA = Path(inspector.__file__).parent / "schemas" / "label.v1.json"
#: Every test here serves HTTP on a socket.
pytestmark = pytest.mark.component


class Server:
    def __init__(self, registry: CollectorRegistry, metrics: Metrics, **kw: Any) -> None:
        self.server = HttpServer("127.0.0.1", 0, registry, lambda: [], metrics, **kw)
        self.server.start()
        self.base = f"http://127.0.0.1:{self.server.port}"

    def get(self, path: str, token: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.base + path, headers=headers, timeout=10)

    def post(self, path: str, body: object, token: str | None = ADMIN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.base + path, json=body, headers=headers, timeout=10)

    def delete(self, path: str, token: str | None = ADMIN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.delete(self.base + path, headers=headers, timeout=10)


@pytest.fixture
def sinks(tmp_path: Path) -> Iterator[SinkMaker]:
    maker = SinkMaker(tmp_path)
    yield maker
    maker.close_all()


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for server in made:
        server.server.stop()


def test_with_retention_off_every_results_route_says_so(servers: list[Server]) -> None:
    registry = CollectorRegistry()
    server = Server(registry, Metrics(registry), admin_token=SecretStr(ADMIN))
    servers.append(server)
    for response in (
        server.get("/v1/results"),
        server.get("/v1/results/a/b/detail"),
        server.get("/v1/results/a/image?view=mask"),
        server.post("/v1/results/a/label", {"label": "defect"}),
        server.delete("/v1/results/a/label"),
    ):
        assert response.status_code == 404, response.text
        assert "retention.enabled is off" in response.json()["error"]
    assert server.post("/v1/results/a/label", {"label": "defect"}, token=None).status_code == 401
    page = server.get("/")
    assert page.status_code == 200 and "Retention is off" in page.text
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_without_an_admin_token_labels_are_off_and_say_which_setting(
    servers: list[Server], sinks: SinkMaker
) -> None:
    sink, _ = sinks()
    sink.write(inspection("f1"))
    registry = CollectorRegistry()
    server = Server(
        registry, Metrics(registry), results=ResultsAccess(retention=lambda: sink.store)
    )
    servers.append(server)
    refused = server.post("/v1/results/f1/label", {"label": "defect"}, token=None)
    assert refused.status_code == 403 and "INSPECTOR_HTTP__ADMIN_TOKEN" in refused.json()["error"]
    assert sink.store.get("f1").label is None  # type: ignore[union-attr]
    sink.store.label("f1", "defect")
    refused = server.delete("/v1/results/f1/label", token=None)
    assert refused.status_code == 403 and "INSPECTOR_HTTP__ADMIN_TOKEN" in refused.json()["error"]
    assert sink.store.get("f1").label == "defect"  # type: ignore[union-attr]
    assert server.get("/v1/results").status_code == 200  # reads stay open
    assert server.get("/v1/sources").status_code == 404  # the control API is off as before


def test_while_retention_opens_the_routes_answer_503(servers: list[Server], tmp_path: Path) -> None:
    config = InspectorConfig.model_validate(
        {
            "retention": {"enabled": True, "path": str(tmp_path / "r")},
            "sinks": {"kafka": {"enabled": False}},
        }
    )
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    wiring = ResultsWiring(config, metrics)  # its sinks not set up yet: the daemon is starting
    server = Server(registry, metrics, results=wiring.access())
    servers.append(server)
    starting = server.get("/v1/results")
    assert starting.status_code == 503 and "starting" in starting.json()["error"]
    assert server.get("/").status_code == 200


def test_the_read_token_guards_every_read_but_not_the_pages(
    servers: list[Server], sinks: SinkMaker, caplog: pytest.LogCaptureFixture
) -> None:
    sink, _ = sinks()
    sink.write(inspection("cam/f1"))
    registry = CollectorRegistry()
    server = Server(
        registry,
        Metrics(registry),
        admin_token=SecretStr(ADMIN),
        read_token=SecretStr(READER),
        results=ResultsAccess(retention=lambda: sink.store),
    )
    servers.append(server)
    reads = [
        "/v1/results",
        "/v1/results/cam%2Ff1/detail",
        "/v1/results/cam%2Ff1/image?view=overlay",
        "/v1/console/overview",
    ]
    for path in reads:
        for token in (None, "wrong-wrong-wrong-wrong"):
            refused = server.get(path, token)
            assert refused.status_code == 401, path
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            assert "http.read_token" in refused.json()["error"]
        assert server.get(path, READER).status_code == 200, path
        assert server.get(path, ADMIN).status_code == 200, path  # the admin token reads too
    # The pages and their script are open: they hold no data and ask for the token.
    for page in ("/", "/review", "/frame?id=cam%2Ff1", "/console/static/console.js"):
        response = server.get(page)
        assert response.status_code == 200, page
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "cam/f1" not in response.text or page.startswith("/frame")
    # The read token does not write.
    assert server.post("/v1/results/cam%2Ff1/label", {"label": "defect"}, READER).status_code == 401
    assert server.delete("/v1/results/cam%2Ff1/label", READER).status_code == 401
    assert (
        READER not in caplog.text and ADMIN not in caplog.text and "wrong-wrong" not in caplog.text
    )


def test_static_files_are_a_fixed_list(servers: list[Server]) -> None:
    registry = CollectorRegistry()
    server = Server(registry, Metrics(registry))
    servers.append(server)
    script = server.get("/console/static/console.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "innerHTML" not in script.text.replace("no innerHTML anywhere", "")
    for name in ("..%2Fapi.py", "..%2F..%2Fconfig.py", "console.js%00.py", "templates"):
        assert server.get(f"/console/static/{name}").status_code == 404, name


class Delivered:
    """A send's future that the broker confirmed."""

    def get(self, timeout: float | None = None) -> None:
        return None


class RecordingProducer:
    """Stands in for kafka.KafkaProducer: keeps what is sent, or fails every send."""

    made: ClassVar[list[RecordingProducer]] = []

    def __init__(self, fail: bool = False, **settings: Any) -> None:
        self.settings = settings
        self.fail = fail
        self.sent: list[tuple[str, bytes, bytes]] = []
        self.closed = False
        RecordingProducer.made.append(self)

    def send(self, topic: str, value: bytes, key: bytes) -> Any:
        if self.fail:
            raise ConnectionError("broker gone")
        self.sent.append((topic, value, key))
        return Delivered()

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def test_labels_go_to_the_labels_topic_as_versioned_json(
    servers: list[Server], sinks: SinkMaker
) -> None:
    sink, _ = sinks()
    sink.write(inspection("line1/cam2/000042", camera_id="cam2"))
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    kafka = KafkaConfig(labels_topic="plant.labels")
    publisher = LabelPublisher(
        kafka,
        once_per_registry(registry, LabelMetrics),
        {"bootstrap_servers": ["broker:9092"]},
        producer_factory=RecordingProducer,
    )
    server = Server(
        registry,
        metrics,
        admin_token=SecretStr(ADMIN),
        results=ResultsAccess(retention=lambda: sink.store, publish=publisher.publish),
    )
    servers.append(server)
    body = {"label": "defect", "kind": "scratch", "note": "near the hole"}
    assert server.post("/v1/results/line1%2Fcam2%2F000042/label", body).status_code == 200
    assert publisher.flush(10.0)
    publisher.close()
    producer = RecordingProducer.made[-1]
    assert producer.settings == {"bootstrap_servers": ["broker:9092"]} and producer.closed
    [(topic, value, key)] = producer.sent
    assert (topic, key) == ("plant.labels", b"cam2")
    message = json.loads(value)
    jsonschema.validate(message, json.loads(LABEL_SCHEMA.read_text()))
    assert message["schema"] == "inspector.label/v1"
    assert (message["frame_id"], message["label"], message["kind"]) == (
        "line1/cam2/000042",
        "defect",
        "scratch",
    )
    assert message["labelled_at"].endswith("Z") and message["is_anomalous"] is True
    assert (
        registry.get_sample_value("inspector_label_publishes_total", {"result": "delivered"}) == 1
    )


def test_a_removed_label_goes_to_the_labels_topic_as_a_clear_once(
    servers: list[Server], sinks: SinkMaker
) -> None:
    sink, _ = sinks()
    sink.write(inspection("line1/cam2/000043", camera_id="producer-camera-9000"))
    registry = CollectorRegistry()
    metrics = Metrics(registry, cameras=CameraLabels(max_seen=0))
    publisher = LabelPublisher(
        KafkaConfig(labels_topic="plant.labels"),
        once_per_registry(registry, LabelMetrics),
        {},
        producer_factory=RecordingProducer,
    )
    server = Server(
        registry,
        metrics,
        admin_token=SecretStr(ADMIN),
        results=ResultsAccess(retention=lambda: sink.store, publish=publisher.publish),
    )
    servers.append(server)
    path = "/v1/results/line1%2Fcam2%2F000043/label"
    body = {"label": "missed_defect", "kind": "crack", "note": "wrong frame"}
    assert server.post(path, body).status_code == 200
    for _ in range(2):  # the second finds no label: nothing is sent or counted
        assert server.delete(path).status_code == 200
    assert publisher.flush(10.0)
    publisher.close()
    producer = RecordingProducer.made[-1]
    assert [(topic, key) for topic, _, key in producer.sent] == [
        ("plant.labels", b"producer-camera-9000")
    ] * 2
    schema = json.loads(LABEL_SCHEMA.read_text())
    set_, clear = (json.loads(value) for _, value, _ in producer.sent)
    for message in (set_, clear):
        jsonschema.validate(message, schema)
    assert (set_["action"], set_["label"]) == ("set", "missed_defect")
    assert clear["action"] == "clear" and clear["frame_id"] == "line1/cam2/000043"
    assert (clear["label"], clear["kind"], clear["note"]) == (None, None, None)
    assert clear["labelled_at"].endswith("Z") and clear["processed_at"] == set_["processed_at"]
    # A clear that claimed a label is not valid: subscribers that validate refuse it.
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**clear, "label": "defect"}, schema)
    assert registry.get_sample_value("inspector_label_clears_total", {"camera": "other"}) == 1
    assert (
        registry.get_sample_value("inspector_label_publishes_total", {"result": "delivered"}) == 2
    )


def test_a_failed_or_dropped_publish_is_counted_and_the_label_stays(
    servers: list[Server], sinks: SinkMaker, caplog: pytest.LogCaptureFixture
) -> None:
    sink, _ = sinks()
    for frame_id in ("a", "b"):
        sink.write(inspection(frame_id))
    registry = CollectorRegistry()
    metrics = once_per_registry(registry, LabelMetrics)
    failing = LabelPublisher(
        KafkaConfig(), metrics, {}, producer_factory=lambda **kw: RecordingProducer(True, **kw)
    )
    full = LabelPublisher(KafkaConfig(), metrics, {}, max_pending=0)
    server = Server(
        registry,
        Metrics(registry),
        admin_token=SecretStr(ADMIN),
        results=ResultsAccess(retention=lambda: sink.store, publish=failing.publish),
    )
    servers.append(server)
    assert server.post("/v1/results/a/label", {"label": "false_alarm"}).status_code == 200
    assert failing.flush(10.0)
    failing.close()
    full.publish(label_message(sink.store.label("b", "defect")))
    assert sink.store.get("a").label == "false_alarm"  # type: ignore[union-attr]
    for result, n in (("failed", 1), ("dropped", 1), ("delivered", 0)):
        assert registry.get_sample_value("inspector_label_publishes_total", {"result": result}) == n
    assert "broker gone" in caplog.text and "it stays stored" in caplog.text


def test_label_counts_use_the_bounded_camera_label(servers: list[Server], sinks: SinkMaker) -> None:
    sink, _ = sinks()
    sink.write(inspection("x", camera_id="producer-camera-9000"))
    registry = CollectorRegistry()
    metrics = Metrics(registry, cameras=CameraLabels(max_seen=0))
    server = Server(
        registry,
        metrics,
        admin_token=SecretStr(ADMIN),
        results=ResultsAccess(retention=lambda: sink.store),
    )
    servers.append(server)
    assert server.post("/v1/results/x/label", {"label": "defect"}).status_code == 200
    assert (
        registry.get_sample_value("inspector_labels_total", {"camera": "other", "label": "defect"})
        == 1
    )
