"""MqttSink on a real Eclipse Mosquitto (TLS, a password file) on a free loopback port.

Each result must end as one message on ``<prefix>/<camera>/result``, done once the broker's
PUBACK came, with the camera's last verdict retained; ``late`` is judged again when sent; a
wrong password and an untrusted broker are said, not hidden; a broker that goes away holds
results back (done with an error, so the delivery layer retries) until it is back.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import trustme
from fakes import make_inspection
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.errors import ConfigError, InspectorError, RecordRefusedError
from inspector.runtime.config import MqttSinkConfig
from inspector.runtime.kafka.produced import result_record
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import Inspection
from inspector.runtime.sinks.mqtt import MqttSink
from inspector.tools.benchmark.mosquitto import Mosquitto, Subscriber, start_mosquitto

pytestmark = pytest.mark.component


class Done:
    """The outcomes a sink reports for one result, from any thread."""

    def __init__(self) -> None:
        self.calls: list[BaseException | None] = []
        self.called = threading.Event()

    def __call__(self, exc: BaseException | None) -> None:
        self.calls.append(exc)
        self.called.set()


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    started = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    try:
        yield started
    finally:
        started.stop()


def _prefix() -> str:
    return f"test/{uuid.uuid4().hex[:8]}"


def _sink(broker: Mosquitto, prefix: str, metrics: Metrics, **kwargs: object) -> MqttSink:
    settings = broker.sink_settings(topic_prefix=prefix, client_id=f"sink-{prefix[-8:]}")
    deadline = kwargs.pop("deadline_ms", None)
    config = MqttSinkConfig.model_validate({**settings, **kwargs})
    sink = MqttSink(config, metrics, deadline_ms=lambda _: deadline)  # type: ignore[arg-type, return-value]
    sink.setup()
    wait_until(lambda: sink.unready_reason() is None, 15, "the sink connected")
    return sink


def _inspection(
    frame_id: str, camera: str, captured: datetime, processed: datetime | None = None
) -> Inspection:
    inspection = make_inspection(frame_id, camera, anomalous=frame_id.endswith("1"))
    update = {"captured_at": captured.isoformat()}
    if processed is not None:
        update["processed_at"] = processed.isoformat()
    return dataclasses.replace(inspection, message=inspection.message.model_copy(update=update))


def _publish(sink: MqttSink, inspection: Inspection) -> BaseException | None:
    done = Done()
    sink.publish(inspection, done)
    assert done.called.wait(15), "no PUBACK"
    assert len(done.calls) == 1
    return done.calls[0]


def test_every_result_ends_as_one_mqtt_result_and_the_last_verdict_is_retained(
    broker: Mosquitto,
) -> None:
    prefix, registry = _prefix(), CollectorRegistry()
    subscriber = Subscriber(broker, prefix, client_id=f"sub-{prefix[-8:]}")
    sink = _sink(broker, prefix, Metrics(registry), deadline_ms=60_000)
    now = datetime.now(UTC)
    sent = [_inspection(f"f{i}", ("cam-a", "cam+b")[i % 2], now) for i in range(6)]
    try:
        assert [_publish(sink, s) for s in sent] == [None] * 6
        results = subscriber.wait_for(6)
    finally:
        sink.close()
        subscriber.close()
    # One result per frame, in order per camera, the Kafka sink's JSON (on time: late false).
    assert (
        sorted(r.topic for r in results)
        == [f"{prefix}/cam%2Bb/result"] * 3 + [f"{prefix}/cam-a/result"] * 3
    )
    by_frame = {r.json()["frame_id"]: r.json() for r in results}
    for inspection in sent:
        kafka = json.loads(result_record(inspection).value)
        assert by_frame[inspection.message.frame_id] == {**kafka, "late": False}
    assert registry.get_sample_value("inspector_plant_latency_seconds_count", {"sink": "mqtt"}) == 6
    assert registry.get_sample_value("inspector_plant_late_total", {"sink": "mqtt"}) == 0
    # A client that subscribes later gets each camera's last verdict at once (retained).
    late_comer = Subscriber(broker, prefix, client_id=f"late-{prefix[-8:]}")
    try:
        verdicts = late_comer.wait_for(2, "/verdict")
    finally:
        late_comer.close()
    assert all(v.retain for v in verdicts)
    assert {v.json()["camera_id"]: v.json()["frame_id"] for v in verdicts} == {
        "cam-a": "f4",
        "cam+b": "f5",
    }
    last = next(v.json() for v in verdicts if v.json()["camera_id"] == "cam+b")
    assert last["is_anomalous"] is False and last["late"] is False and "part_id" in last


def test_a_verdict_past_its_deadline_says_late_and_counts(broker: Mosquitto) -> None:
    prefix, registry = _prefix(), CollectorRegistry()
    subscriber = Subscriber(broker, prefix, client_id=f"sub-{prefix[-8:]}")
    sink = _sink(broker, prefix, Metrics(registry), deadline_ms=1000)
    try:
        # Its verdict was on time, but it reaches the broker 5 s after capture (held back).
        held = _inspection("held", "cam", datetime.now(UTC) - timedelta(seconds=5))
        assert held.message.late is None
        assert _publish(sink, held) is None
        [result] = subscriber.wait_for(1)
    finally:
        sink.close()
        subscriber.close()
    assert result.json()["late"] is True
    assert registry.get_sample_value("inspector_plant_late_total", {"sink": "mqtt"}) == 1
    waited = registry.get_sample_value("inspector_plant_latency_seconds_sum", {"sink": "mqtt"})
    assert waited is not None and waited >= 5


def test_an_older_result_sent_again_leaves_the_newer_verdict_retained(broker: Mosquitto) -> None:
    prefix = _prefix()
    sink = _sink(broker, prefix, Metrics(CollectorRegistry()))
    now = datetime.now(UTC)
    try:
        assert _publish(sink, _inspection("new", "cam", now, now)) is None
        # A retry of an earlier frame (the delivery layer's backoff) comes after it.
        assert _publish(sink, _inspection("old", "cam", now, now - timedelta(seconds=1))) is None
        subscriber = Subscriber(broker, prefix, client_id=f"sub-{prefix[-8:]}")
        try:
            [verdict] = subscriber.wait_for(1, "/verdict")
        finally:
            subscriber.close()
    finally:
        sink.close()
    assert verdict.json()["frame_id"] == "new"


def test_a_wrong_password_is_said_without_the_secret(
    broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    prefix = _prefix()
    settings = broker.sink_settings(topic_prefix=prefix, password="wrong-horse-battery")
    sink = MqttSink(MqttSinkConfig.model_validate(settings), Metrics(CollectorRegistry()))
    try:
        sink.setup()
        wait_until(
            lambda: "refused the connection" in (sink.unready_reason() or ""), 15, "the refusal"
        )
        reason = sink.unready_reason() or ""
        assert "INSPECTOR_SINKS__MQTT__PASSWORD" in reason, reason
        error = _publish(sink, _inspection("f", "cam", datetime.now(UTC)))
    finally:
        sink.close()
    # Not a refusal of the record: the delivery layer retries until the password is fixed.
    assert isinstance(error, InspectorError) and not isinstance(error, RecordRefusedError)
    assert "wrong-horse-battery" not in caplog.text + reason + str(error)


def test_an_untrusted_broker_certificate_stops_the_start(broker: Mosquitto, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    settings = broker.sink_settings(tls={"ca_file": str(other_ca)})
    sink = MqttSink(MqttSinkConfig.model_validate(settings), Metrics(CollectorRegistry()))
    try:
        with pytest.raises(ConfigError, match=r"not trusted.*sinks\.mqtt\.tls\.ca_file"):
            sink.setup()
    finally:
        sink.close()


def test_results_are_held_back_while_the_broker_is_away(tmp_path: Path) -> None:
    broker = start_mosquitto(tmp_path)
    prefix = _prefix()
    sink = _sink(broker, prefix, Metrics(CollectorRegistry()))
    try:
        broker.stop()
        wait_until(lambda: "connection lost" in (sink.unready_reason() or ""), 15, "the loss")
        assert "held back" in (sink.unready_reason() or "")
        # Refused at once, not queued without end: the delivery layer retries with backoff.
        error = _publish(sink, _inspection("away", "cam", datetime.now(UTC)))
        assert isinstance(error, InspectorError) and not isinstance(error, RecordRefusedError)
        broker.start()
        wait_until(lambda: sink.unready_reason() is None, 15, "the sink back")
        subscriber = Subscriber(broker, prefix, client_id=f"sub-{prefix[-8:]}")
        try:
            assert _publish(sink, _inspection("back", "cam", datetime.now(UTC))) is None
            [result] = subscriber.wait_for(1)
        finally:
            subscriber.close()
        assert result.json()["frame_id"] == "back"
    finally:
        sink.close()
        broker.stop()
