"""A daemon on Kafka with an MQTT sink whose Mosquitto (TLS, a password file) stops for 20 s.

Every frame must end as an MQTT result; while the broker is away its frames are held (their
offsets stay uncommitted: Kafka commits wait for the PUBACKs), ``/readyz`` names the MQTT sink
and why, and once the broker is back they are delivered, judged late against the camera's
deadline. At least once: duplicates are counted and allowed, a missing frame is not.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import pytest
from faults import http_get
from kafka import KafkaProducer
from kafka_helpers import Topics, create_topics, daemon_settings
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon
from inspector.tools.benchmark.mosquitto import Subscriber, start_mosquitto

pytestmark = pytest.mark.integration

OUTAGE_S = 20.0
#: Longer than a verdict takes here, shorter than the outage: held frames arrive late.
DEADLINE_MS = 12_000
PER_BATCH = 3


def _produce(bootstrap: str, topic: str, jpeg: bytes, frame_ids: list[str]) -> None:
    """Frames captured now (header), alternately from two cameras, one partition."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    try:
        for i, frame_id in enumerate(frame_ids):
            camera = f"cam-{i % 2}"
            producer.send(
                topic,
                value=jpeg,
                key=camera.encode(),
                headers=[
                    ("camera_id", camera.encode()),
                    ("frame_id", frame_id.encode()),
                    ("captured_at", datetime.now(UTC).isoformat().encode()),
                ],
            )
        producer.flush(30)
    finally:
        producer.close()


def test_a_mosquitto_outage_holds_frames_and_commits_until_the_pubacks(
    bootstrap: str,
    checkpoint: LoadedCheckpoint,
    data_root: Path,
    tmp_path: Path,
    group_offsets: Callable[[str], dict[int, int]],
) -> None:
    broker = start_mosquitto(tmp_path)
    prefix = f"plant/{uuid.uuid4().hex[:8]}"
    topics = Topics.unique()
    create_topics(bootstrap, topics, partitions=1)
    settings = daemon_settings(
        bootstrap,
        topics,
        checkpoint.path,
        sinks={"mqtt": broker.sink_settings(topic_prefix=prefix, client_id="daemon-outage")},
        cameras={"*": {"deadline_ms": DEADLINE_MS}},
    )
    image = cv2.imread(str(sorted((data_root / "test" / "good").iterdir())[0]))
    assert image is not None
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    subscriber = Subscriber(broker, prefix, client_id="plc-outage")
    registry = CollectorRegistry()
    daemon = Daemon(InspectorConfig.model_validate(settings), registry=registry)
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(daemon.run()), daemon=True)
    thread.start()

    def readyz() -> tuple[int, list[str]]:
        port = daemon.server.port if daemon.server is not None else 0
        status, body = http_get(port, "/readyz") if port else (0, b"")
        return status, json.loads(body).get("reasons", []) if body else []

    def committed() -> int:
        return group_offsets(topics.group).get(0, 0)

    def frame_ids() -> Counter[str]:
        return Counter(str(r.json()["frame_id"]) for r in subscriber.received())

    before = [f"before-{i}" for i in range(PER_BATCH)]
    during = [f"during-{i}" for i in range(PER_BATCH)]
    try:
        wait_until(lambda: readyz()[0] == 200, 180, "/readyz 200")
        _produce(bootstrap, topics.frames, jpeg, before)
        wait_until(lambda: set(frame_ids()) >= set(before), 60, "the first frames over MQTT")
        wait_until(lambda: committed() == PER_BATCH, 30, "the first frames committed")

        broker.stop()
        stopped = time.monotonic()
        _produce(bootstrap, topics.frames, jpeg, during)

        def says_why() -> bool:
            status, reasons = readyz()
            return status == 503 and any(r.startswith("mqtt sink (") for r in reasons)

        wait_until(says_why, 15, "/readyz 503 naming the MQTT sink")
        reasons = [r for r in readyz()[1] if r.startswith("mqtt sink (")]
        assert "held back" in reasons[0] and "uncommitted" in reasons[0], reasons
        # The Kafka sink took the held frames' results, yet their offsets wait for MQTT.
        while time.monotonic() - stopped < OUTAGE_S:
            assert committed() == PER_BATCH, "a frame was committed before its PUBACK"
            assert not set(frame_ids()) & set(during)
            time.sleep(0.5)

        broker.start()
        wait_until(lambda: set(frame_ids()) >= set(during), 60, "the held frames over MQTT")
        wait_until(lambda: committed() == 2 * PER_BATCH, 30, "every frame committed")
        wait_until(lambda: readyz()[0] == 200, 30, "/readyz 200 again")
    finally:
        daemon.request_exit()
        thread.join(60)
        subscriber.close()
        broker.stop()
    assert exit_code == [0]
    counts = frame_ids()
    assert set(counts) == set(before) | set(during)  # nothing lost, nothing else
    duplicates = sum(counts.values()) - len(counts)
    print(f"MQTT results: {sum(counts.values())} for {len(counts)} frames, {duplicates} duplicates")
    late = {r.json()["frame_id"]: r.json()["late"] for r in subscriber.received()}
    # Held past the deadline: late on the plant's side, though their verdicts were on time.
    assert [late[f] for f in before] == [False] * PER_BATCH
    assert [late[f] for f in during] == [True] * PER_BATCH
    plant_late = registry.get_sample_value("inspector_plant_late_total", {"sink": "mqtt"})
    assert plant_late is not None and plant_late >= PER_BATCH
