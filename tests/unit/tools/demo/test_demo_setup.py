"""The demo's daemon configuration: embedded broker vs a broker of the user's."""

from __future__ import annotations

from pathlib import Path

from inspector.runtime.config import KafkaSourceConfig
from inspector.tools.broker import EMBEDDED_FETCH_MAX_WAIT_MS
from inspector.tools.demo.setup import DemoOptions, demo_config


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
