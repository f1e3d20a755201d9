"""The control API against a running daemon on Apache Kafka: the line changed while it runs.

A directory source from the YAML file and a Kafka source added through the API run side by
side; one is paused, resumed and removed while the other flows; a camera switches to a second
model mid-stream; wrong writes are refused; a restart comes back as the API left the line.
Every frame on the frames topic ends as exactly one result or dead letter.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import pytest
import requests
from kafka import KafkaAdminClient
from kafka_helpers import Topics, create_topics, produce
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon
from inspector.tools.synth import SynthSummary

pytestmark = pytest.mark.integration

TOKEN = "integration-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Running:
    daemon: Daemon
    thread: threading.Thread
    exit_code: list[int]

    @property
    def base(self) -> str:
        assert self.daemon.server is not None
        return f"http://127.0.0.1:{self.daemon.server.port}"

    def call(self, method: str, path: str, body: object = None, auth: bool = True) -> Any:
        return requests.request(
            method, self.base + path, json=body, headers=AUTH if auth else {}, timeout=60
        )

    def stop(self) -> None:
        self.daemon.request_exit()
        self.thread.join(90)
        assert self.exit_code == [0]


def _start(config: InspectorConfig) -> Running:
    daemon = Daemon(config)
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(daemon.run()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while daemon.control is None:
        assert thread.is_alive() and time.monotonic() < deadline, "daemon did not start"
        time.sleep(0.05)
    return Running(daemon, thread, exit_code)


def _results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines if line.endswith("}")]


@pytest.fixture
def line_config(
    bootstrap: str, checkpoint: LoadedCheckpoint, synth_data: SynthSummary, tmp_path: Path
) -> Iterator[tuple[InspectorConfig, Topics, list[bytes]]]:
    topics = Topics.unique()
    create_topics(bootstrap, topics, partitions=2)
    replay = tmp_path / "replay"
    replay.mkdir()
    goods = sorted((synth_data.root / "test" / "good").iterdir())
    for src in goods[:4]:
        shutil.copy(src, replay / src.name)
    jpegs = [cv2.imencode(".jpg", cv2.imread(str(p)))[1].tobytes() for p in goods[:6]]
    config = InspectorConfig.model_validate(
        {
            "kafka": topics.kafka_settings(bootstrap, commit_interval_ms=200),
            "sources": [
                {
                    "type": "directory",
                    "path": str(replay),
                    "camera_id": "replay",
                    "loop": True,
                    "fps": 4,
                }
            ],
            "model": {"checkpoint": str(checkpoint.path), "device": "cpu", "warmup_batches": 1},
            "batcher": {"max_batch_size": 4, "max_wait_ms": 10},
            "sinks": {"jsonl": {"path": str(tmp_path / "results.jsonl")}},
            "http": {"host": "127.0.0.1", "port": 0, "admin_token": TOKEN},
            "daemon": {"state_path": str(tmp_path / "state.json"), "drain_timeout_s": 30},
        }
    )
    yield config, topics, jpegs


def test_the_line_changes_through_the_api_and_a_restart_keeps_it(
    bootstrap: str,
    checkpoint: LoadedCheckpoint,
    line_config: tuple[InspectorConfig, Topics, list[bytes]],
) -> None:
    config, topics, jpegs = line_config
    jsonl = config.sinks.jsonl.path
    assert jsonl is not None

    def of(camera: str) -> list[dict[str, Any]]:
        return [r for r in _results(jsonl) if r["camera_id"] == camera]

    def send(prefix: str, n: int) -> list[str]:
        ids = [f"{prefix}-{i}" for i in range(n)]
        produce(bootstrap, topics.frames, [(f, jpegs[i % len(jpegs)]) for i, f in enumerate(ids)])
        return ids

    running = _start(config)
    try:
        # Refused writes change nothing and say why.
        assert running.call("POST", "/v1/sources", {"type": "kafka"}, auth=False).status_code == 401
        bad = running.call("POST", "/v1/sources", {"type": "kafka", "max_poll_records": 0})
        assert bad.status_code == 422 and "max_poll_records" in bad.text

        added = running.call("POST", "/v1/sources", {"type": "kafka"})
        assert added.status_code == 201, added.text
        assert added.json()["id"] == "kafka"
        first = send("a", 12)  # produce() keys them cam-0 and cam-1
        wait_until(lambda: len(of("cam-0")) + len(of("cam-1")) >= 12, 120, "kafka results")
        wait_until(lambda: len(of("replay")) >= 4, 120, "replay results")

        # Pause the folder; the topic keeps flowing.
        assert running.call("POST", "/v1/sources/replay/pause").json()["state"] == "paused"
        time.sleep(1.0)
        replay_paused = len(of("replay"))
        second = send("b", 8)
        wait_until(
            lambda: len(of("cam-0")) + len(of("cam-1")) >= 20, 120, "kafka results while paused"
        )
        assert len(of("replay")) == replay_paused
        assert running.call("POST", "/v1/sources/replay/resume").json()["state"] == "running"
        wait_until(lambda: len(of("replay")) > replay_paused, 120, "replay after resume")

        # A second model, and cam-0 switched to it mid-stream.
        new = {"name": "product-b", "checkpoint": str(checkpoint.path)}
        assert running.call("POST", "/v1/models", new).status_code == 201
        recipe = {"model": "product-b", "deadline_ms": 600_000}
        assert running.call("PUT", "/v1/cameras/cam-0", recipe).status_code == 200
        third = send("c", 8)
        wait_until(
            lambda: len(of("cam-0")) + len(of("cam-1")) >= 28, 120, "results after the switch"
        )
        by_frame = {r["frame_id"]: r for r in of("cam-0") + of("cam-1")}
        for frame_id in third:
            result = by_frame[frame_id]
            expected = "product-b" if result["camera_id"] == "cam-0" else checkpoint.meta.name
            assert result["model"]["name"] == expected, frame_id
        for frame_id in first:
            assert by_frame[frame_id]["model"]["name"] == checkpoint.meta.name
        # Nothing lost, nothing twice: every produced frame has exactly one result.
        produced = first + second + third
        kafka_ids = [r["frame_id"] for r in of("cam-0") + of("cam-1")]
        assert sorted(kafka_ids) == sorted(produced)

        # Removing the Kafka source commits what it delivered: the group is at the end.
        removed = running.call("DELETE", "/v1/sources/kafka")
        assert removed.status_code == 200 and removed.json()["state"] == "stopped"
        assert _group_lag(bootstrap, topics) == 0
        assert running.call("DELETE", "/v1/models/product-b").status_code == 409  # cam-0 uses it
        readded = running.call("POST", "/v1/sources", {"type": "kafka"})
        assert readded.status_code == 201
    finally:
        running.stop()

    # The restart comes back as the API left the line (the YAML file has only the folder).
    running = _start(config)
    try:
        sources = {s["id"]: s["state"] for s in running.call("GET", "/v1/sources").json()}
        assert sources == {"replay": "running", "kafka": "running"}
        recipes = running.call("GET", "/v1/cameras").json()
        assert recipes["cam-0"]["model"] == "product-b"
        models = [m["name"] for m in running.call("GET", "/v1/models").json()]
        assert models == [checkpoint.meta.name, "product-b"]
        fourth = send("d", 4)
        wait_until(
            lambda: {r["frame_id"] for r in _results(jsonl)} >= set(fourth), 120, "after restart"
        )
    finally:
        running.stop()


def _group_lag(bootstrap: str, topics: Topics) -> int:
    """Frames of the topic the group has not committed past."""
    from kafka import KafkaConsumer, TopicPartition

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        committed = admin.list_group_offsets(topics.group).get(topics.group, {})
        parts = [TopicPartition(topics.frames, p) for p in range(2)]
        ends = consumer.end_offsets(parts)
        return sum(ends[tp] - (committed[tp].offset if tp in committed else 0) for tp in parts)
    finally:
        consumer.close()
        admin.close()
