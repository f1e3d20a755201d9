"""``/readyz`` of a daemon on Apache Kafka: 503 until its consumer owns partitions, then 200.

A frame sent once ``/readyz`` is 200 must not wait in the topic for the group join: its verdict
comes within the camera's deadline from capture.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import cv2
import pytest
from faults import http_get
from kafka import KafkaConsumer, KafkaProducer
from kafka_helpers import Topics, collect, create_topics, daemon_settings
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.messages import capture_to_verdict_ms
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon

pytestmark = pytest.mark.integration

DEADLINE_MS = 3000


def _group_holder(bootstrap: str, topics: Topics) -> KafkaConsumer:
    """A member of the daemon's group that owns every partition of the frames topic.

    While it stays in the group (it stops polling, so it does not rejoin and give partitions
    up promptly), the daemon's consumer owns none: its join is held back, or completes with an
    empty assignment (what Apache Kafka 3.9 and kafka-python 3.0.12 did here). Either way the
    daemon waits for partitions until :meth:`KafkaConsumer.close` makes this member leave.
    """
    holder = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=topics.group,
        enable_auto_commit=False,
        session_timeout_ms=45_000,
        heartbeat_interval_ms=1_000,
        max_poll_interval_ms=120_000,
    )
    holder.subscribe([topics.frames])
    deadline = time.monotonic() + 60
    while len(holder.assignment()) < 2:
        assert time.monotonic() < deadline, "the holder was never assigned the partitions"
        holder.poll(timeout_ms=200)
    return holder


def test_readyz_is_503_until_the_partitions_are_assigned_and_the_first_frame_is_on_time(
    bootstrap: str, checkpoint: LoadedCheckpoint, data_root: Path
) -> None:
    topics = Topics.unique()
    create_topics(bootstrap, topics, partitions=2)
    holder = _group_holder(bootstrap, topics)
    settings = daemon_settings(
        bootstrap, topics, checkpoint.path, cameras={"*": {"deadline_ms": DEADLINE_MS}}
    )
    registry = CollectorRegistry()
    daemon = Daemon(InspectorConfig.model_validate(settings), registry=registry)
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(daemon.run()), daemon=True)
    thread.start()
    waiting = (
        f"kafka source kafka: waiting for a partition assignment of {topics.frames} "
        f"(group {topics.group})"
    )
    try:

        def readyz() -> tuple[int, list[str]]:
            port = daemon.server.port if daemon.server is not None else 0
            status, body = http_get(port, "/readyz") if port else (0, b"")
            return status, json.loads(body).get("reasons", []) if body else []

        def only_waiting_for_partitions() -> bool:
            reasons = readyz()[1]
            return len(reasons) == 1 and reasons[0].startswith(waiting)

        # Model warm, sources connected, pipeline running: only the assignment is missing.
        wait_until(only_waiting_for_partitions, 180, "the waiting reason")
        status, [reason] = readyz()
        assert status == 503 and reason.startswith(waiting), reason
        assert registry.get_sample_value("inspector_ready") == 0

        holder.close(autocommit=False)  # leaves: the join completes with the daemon alone
        wait_until(lambda: readyz()[0] == 200, 90, "/readyz 200")

        image = cv2.imread(str(sorted((data_root / "test" / "good").iterdir())[0]))
        assert image is not None
        jpeg = cv2.imencode(".jpg", image)[1].tobytes()
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
        try:
            # No captured_at header: the record's timestamp, i.e. now, is the capture time.
            producer.send(topics.frames, value=jpeg, key=b"cam-1").get(30)
        finally:
            producer.close()
        got = collect(bootstrap, topics, expected=1, timeout=60)
    finally:
        holder.close(autocommit=False)
        daemon.request_exit()
        thread.join(60)
    assert exit_code == [0]
    [result] = got.results
    took = capture_to_verdict_ms(str(result["captured_at"]), str(result["processed_at"]))
    assert result["late"] is False, f"capture to verdict {took} ms"
    assert took is not None and took < DEADLINE_MS
