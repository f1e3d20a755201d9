"""``sinks.mqtt``: its configuration, the environment override of its password, its wiring.

No broker here (the fast tier): the sink's behaviour against a real Mosquitto is in
``test_mqtt_sink.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from inspector.runtime.config import InspectorConfig, MqttSinkConfig, load_config
from inspector.runtime.metrics import Metrics
from inspector.runtime.sinks import build_sinks
from inspector.runtime.sinks.mqtt import MqttSink
from inspector.runtime.sinks.mqtt_messages import topic_level

EXAMPLE = Path(__file__).parents[4] / "configs" / "mqtt.yaml"


def test_the_example_loads_and_the_password_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INSPECTOR_SINKS__MQTT__PASSWORD", "from-the-env")
    config = load_config(EXAMPLE)
    mqtt = config.sinks.mqtt
    assert mqtt.host == "mqtt.plant.example" and mqtt.effective_port == 8883
    assert mqtt.password is not None and mqtt.password.get_secret_value() == "from-the-env"
    assert "from-the-env" not in repr(config) and "from-the-env" not in str(config.model_dump())
    assert config.sinks.kafka.enabled  # MQTT is besides Kafka, which keeps the dead letters


def test_the_sink_is_built_only_when_a_host_is_configured() -> None:
    metrics = Metrics(CollectorRegistry())
    assert not any(isinstance(s, MqttSink) for s in build_sinks(InspectorConfig(), metrics))
    config = InspectorConfig.model_validate({"sinks": {"mqtt": {"host": "broker"}}})
    assert [s.name for s in build_sinks(config, metrics) if isinstance(s, MqttSink)] == ["mqtt"]


def test_the_port_defaults_to_mqtt_with_or_without_tls() -> None:
    assert MqttSinkConfig(host="b").effective_port == 1883
    assert MqttSinkConfig(host="b", tls={"ca_file": "ca.pem"}).effective_port == 8883
    assert MqttSinkConfig(host="b", port=1234, tls={}).effective_port == 1234


@pytest.mark.parametrize("prefix", ["a/+/b", "line#", "/plant", "plant/", "$SYS/x", "a//b", "a\nb"])
def test_a_prefix_that_mqtt_cannot_publish_to_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="topic_prefix"):
        MqttSinkConfig(host="b", topic_prefix=prefix)


def test_a_client_certificate_needs_its_key() -> None:
    with pytest.raises(ValidationError, match="cert_file and key_file together"):
        MqttSinkConfig(host="b", tls={"cert_file": "c.pem"})


def test_camera_ids_become_one_topic_level() -> None:
    assert topic_level("line1-cam2") == "line1-cam2"
    assert topic_level("Kamera-Süd") == "Kamera-Süd"
    # ids hold no % (inspector.runtime.ids), so the escape reads back unambiguously
    assert topic_level("cam+1") == "cam%2B1"


def test_late_at_the_plant_is_judged_when_sent_and_never_undoes_the_results_late() -> None:
    from fakes import make_result

    from inspector.runtime.sinks.mqtt_messages import epoch, late_at, outgoing

    message = make_result("f", "cam+1").model_copy(
        update={"captured_at": "2026-12-08T00:00:00+00:00"}
    )
    captured = epoch(message.captured_at)
    assert captured is not None
    assert late_at(message, 1000, captured + 0.5) is False
    assert late_at(message, 1000, captured + 1.5) is True
    assert late_at(message, None, captured + 99) is None  # no deadline: unknown, not on time
    already = message.model_copy(update={"late": True})
    assert late_at(already, 60_000, captured + 0.1) is True
    out = outgoing(message, "plant/line1", True)
    assert out.result_topic == "plant/line1/cam%2B1/result"
    assert out.verdict_topic == "plant/line1/cam%2B1/verdict"
    assert b'"late":true' in out.result
