"""The demo's daemon configuration: embedded broker vs a broker of the user's; hires camera."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from inspector.runtime.config import KafkaSourceConfig
from inspector.runtime.recipes import ANY_CAMERA
from inspector.tools.broker import EMBEDDED_FETCH_MAX_WAIT_MS
from inspector.tools.demo.setup import (
    DEMO_DEADLINE_MS,
    DEMO_GOOD_SAMPLE_RATE,
    DEMO_RETENTION_MAX_BYTES,
    HIRES_CAMERA,
    HIRES_DEADLINE_MS,
    HIRES_TILING,
    RETAINED_DIR,
    DemoOptions,
    demo_config,
    demo_hires_model,
    hires_description,
    hires_model_path,
    hires_tiles,
)


def test_fetch_wait_is_short_on_the_embedded_broker_only(tmp_path: Path) -> None:
    opts = DemoOptions(workdir=tmp_path)
    embedded = demo_config(opts, "127.0.0.1:1", tmp_path / "m.safetensors", 0)
    theirs = demo_config(opts, "kafka:9092", tmp_path / "m.safetensors", 0, run_id="abc")
    (source,) = embedded.sources
    assert isinstance(source, KafkaSourceConfig)
    assert source.fetch_max_wait_ms == EMBEDDED_FETCH_MAX_WAIT_MS < 500
    (source,) = theirs.sources
    assert isinstance(source, KafkaSourceConfig)
    assert source.fetch_max_wait_ms == KafkaSourceConfig().fetch_max_wait_ms == 500
    assert theirs.kafka.frames_topic.startswith("inspector.tools.demo-abc")


def test_retention_is_on_in_the_run_directory_for_the_console(tmp_path: Path) -> None:
    opts = DemoOptions(workdir=tmp_path)
    token = "demo-admin-token-0123456789"
    config = demo_config(opts, "127.0.0.1:1", tmp_path / "m.safetensors", 0, admin_token=token)
    retention = config.retention
    assert retention.enabled and retention.path == tmp_path / RETAINED_DIR
    assert retention.good_sample_rate == DEMO_GOOD_SAMPLE_RATE == 0.01
    assert retention.max_bytes == DEMO_RETENTION_MAX_BYTES
    # Labels in the console need the admin token; without one it is read-only.
    assert config.http.admin_token is not None
    assert config.http.admin_token.get_secret_value() == token
    assert demo_config(opts, "127.0.0.1:1", tmp_path / "m.safetensors", 0).http.admin_token is None


def test_the_high_resolution_camera_gets_its_model_and_tiles(tmp_path: Path) -> None:
    opts = DemoOptions(workdir=tmp_path)
    hires = tmp_path / "hires.safetensors"
    config = demo_config(opts, "127.0.0.1:1", tmp_path / "m.safetensors", 0, None, hires)
    assert config.models == {"hires": hires}
    recipe = config.cameras[HIRES_CAMERA]
    assert recipe.model == "hires" and recipe.tiling == HIRES_TILING
    assert recipe.deadline_ms == HIRES_DEADLINE_MS > DEMO_DEADLINE_MS
    # The regular cameras' batches run between the high-resolution frame's tile chunks: they
    # keep the line's deadline.
    assert config.cameras[ANY_CAMERA].deadline_ms == DEMO_DEADLINE_MS
    assert (HIRES_TILING.tile, HIRES_TILING.overlap) == (128, 16)
    assert hires_tiles() == 63  # 9 x 7 tiles of 128 px over 1024 x 768
    assert hires_description() == "1024x768, 63 tiles/frame"

    plain = demo_config(opts, "127.0.0.1:1", tmp_path / "m.safetensors", 0)
    assert plain.models == {} and set(plain.cameras) == {ANY_CAMERA}
    assert plain.cameras[ANY_CAMERA].deadline_ms == DEMO_DEADLINE_MS


def test_a_cached_high_resolution_model_is_not_trained_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opts = DemoOptions(workdir=tmp_path)
    cached = hires_model_path(opts)
    assert cached.parent == tmp_path and "hires-tiled" in cached.name
    cached.write_bytes(b"a model")

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached model must be reused")

    monkeypatch.setattr("inspector.ml.trainer.train", no_training)
    console = Console(record=True)
    assert demo_hires_model(opts, tmp_path / "line-hires", console) == cached
    assert "(cached)" in console.export_text()
