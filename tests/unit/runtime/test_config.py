from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pydantic import ValidationError

from inspector.model.config import ArchitectureConfig
from inspector.runtime.config import (
    CameraSourceConfig,
    InspectorConfig,
    KafkaSourceConfig,
    load_config,
)

CONFIGS = Path(__file__).parents[3] / "configs"


@pytest.mark.parametrize("name", ["kafka.yaml", "camera.yaml", "multi-camera.yaml"])
def test_shipped_examples_load(name: str) -> None:
    config = load_config(CONFIGS / name)
    assert config.sources


def test_defaults_are_kafka_in_kafka_out() -> None:
    config = load_config(None)
    assert config.sources == (KafkaSourceConfig(),)
    assert config.sinks.kafka.enabled and config.http.port == 9108


def test_environment_wins_over_the_file_and_merges_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "kafka:\n  bootstrap_servers: a:1\n  group_id: from-file\n  sasl_password: hunter2\n"
    )
    monkeypatch.setenv("INSPECTOR_KAFKA__BOOTSTRAP_SERVERS", "b:2")
    monkeypatch.setenv("INSPECTOR_BATCHER__MAX_BATCH_SIZE", "16")
    config = load_config(path)
    assert config.kafka.bootstrap_servers == "b:2"
    assert config.kafka.group_id == "from-file"  # untouched keys keep the file's value
    assert config.batcher.max_batch_size == 16
    assert config.kafka.sasl_password is not None
    assert config.kafka.sasl_password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.model_dump())


def test_errors_name_the_key_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("sources:\n  - type: camera\n    uri: '0'\n")
    with pytest.raises(ValidationError) as info:
        load_config(path)
    assert [e["loc"] for e in info.value.errors()] == [("sources", 0, "camera", "camera_id")]
    monkeypatch.setenv("INSPECTOR_HTTP__PORT", "not-a-port")
    with pytest.raises(ValidationError) as info:
        load_config(None)
    assert info.value.errors()[0]["loc"] == ("http", "port")


def test_unknown_source_type_and_frozen(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        InspectorConfig.model_validate({"sources": [{"type": "ftp"}]})
    config = InspectorConfig.model_validate(
        {"sources": [{"type": "camera", "camera_id": "c", "uri": "rtsp://x"}]}
    )
    assert isinstance(config.sources[0], CameraSourceConfig)
    with pytest.raises(ValidationError):
        config.http = config.http  # type: ignore[misc]


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        load_config(path)


def test_model_image_size_from_int_and_validation() -> None:
    assert ArchitectureConfig(image_size=128).image_size == (128, 128)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="224x224"):
        ArchitectureConfig(image_size=(230, 230))


def test_explicit_config_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from inspector.runtime.config import explicit_config

    monkeypatch.setenv("INSPECTOR_KAFKA__BOOTSTRAP_SERVERS", "elsewhere:9092")
    values = {"kafka": {"bootstrap_servers": "mine:9092"}}
    assert explicit_config(values).kafka.bootstrap_servers == "mine:9092"
    # ...while a deployed daemon's configuration still lets the environment win, also after.
    assert InspectorConfig.model_validate(values).kafka.bootstrap_servers == "elsewhere:9092"


def test_the_in_flight_byte_budget_is_admissions_and_its_old_key_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert load_config(None).admission.max_in_flight_bytes == 2 * 1024**3
    path = tmp_path / "c.yaml"
    path.write_text("batcher:\n  max_batch_size: 4\n  max_in_flight_bytes: 1000\n")
    with caplog.at_level(logging.WARNING, logger="inspector.runtime.config"):
        config = load_config(path)
    assert config.admission.max_in_flight_bytes == 1000
    assert config.batcher.max_batch_size == 4  # the rest of the section as it was
    assert "batcher.max_in_flight_bytes is deprecated" in caplog.text
    assert "admission.max_in_flight_bytes" in caplog.text
    # From the environment too, where the old name may be set.
    monkeypatch.setenv("INSPECTOR_BATCHER__MAX_IN_FLIGHT_BYTES", "3000")
    assert load_config(None).admission.max_in_flight_bytes == 3000
    monkeypatch.delenv("INSPECTOR_BATCHER__MAX_IN_FLIGHT_BYTES")
    # The new key, quietly; both with different values: which one was meant is unknown.
    caplog.clear()
    path.write_text("admission:\n  max_in_flight_bytes: 2000\n")
    assert load_config(path).admission.max_in_flight_bytes == 2000
    assert "deprecated" not in caplog.text
    path.write_text(
        "batcher:\n  max_in_flight_bytes: 1000\nadmission:\n  max_in_flight_bytes: 2000\n"
    )
    with pytest.raises(ValidationError, match=r"give only admission\.max_in_flight_bytes"):
        load_config(path)


@pytest.mark.parametrize(
    ("keep_open", "token", "expected"),
    [
        (None, None, False),  # as before: a daemon without the control API ends when dry
        (None, "t" * 16, True),  # as before: with it, sources may still be added
        (False, "t" * 16, False),
        (True, None, True),
    ],
)
def test_keep_open_is_explicit_or_follows_the_control_api(
    keep_open: bool | None, token: str | None, expected: bool
) -> None:
    config = InspectorConfig.model_validate(
        {"daemon": {"keep_open": keep_open}, "http": {"admin_token": token}}
    )
    applies, why = config.keeps_open()
    assert applies is expected
    assert why.startswith("daemon.keep_open")
    assert ("unset" in why) is (keep_open is None)
