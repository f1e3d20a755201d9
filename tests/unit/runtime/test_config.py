from __future__ import annotations

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
