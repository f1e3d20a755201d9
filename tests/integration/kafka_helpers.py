"""Produce frames and collect daemon output over a real broker (shared by integration tests)."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from waiting import wait_until


@dataclass
class Topics:
    """One test's private topics and group."""

    frames: str
    results: str
    dlq: str
    group: str

    @classmethod
    def unique(cls) -> Topics:
        tag = uuid.uuid4().hex[:10]
        return cls(f"t{tag}.frames", f"t{tag}.results", f"t{tag}.dlq", f"g{tag}")

    def kafka_settings(self, bootstrap: str, **extra: object) -> dict[str, object]:
        """The daemon's ``kafka`` config section for these topics on ``bootstrap``.

        A 6 s session timeout: Tansu joins groups in about half of it (test-broker.md).
        """
        return {
            "bootstrap_servers": bootstrap,
            "frames_topic": self.frames,
            "results_topic": self.results,
            "dlq_topic": self.dlq,
            "group_id": self.group,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
            **extra,
        }


def daemon_settings(
    bootstrap: str, topics: Topics, checkpoint: Path, **sections: object
) -> dict[str, object]:
    """A small daemon's configuration over ``topics`` (sections given replace the defaults)."""
    return {
        "kafka": topics.kafka_settings(bootstrap, commit_interval_ms=200),
        "sources": [{"type": "kafka"}],
        "model": {"checkpoint": str(checkpoint), "device": "cpu", "warmup_batches": 1},
        "batcher": {"max_batch_size": 4, "max_wait_ms": 10},
        "http": {"host": "127.0.0.1", "port": 0},
        "daemon": {"drain_timeout_s": 30},
        **sections,
    }


def create_topics(
    bootstrap: str, topics: Topics, partitions: int = 2, *, exist_ok: bool = False
) -> None:
    """Create the frames, results and dead-letter topics.

    ``exist_ok``: one that exists already is kept (a broker that auto-creates topics may have
    made it on a client's metadata request first).
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for topic in (
            NewTopic(topics.frames, partitions, 1),
            NewTopic(topics.results, 1, 1),
            NewTopic(topics.dlq, 1, 1),
        ):
            try:
                admin.create_topics([topic])
            except TopicAlreadyExistsError:
                if not exist_ok:
                    raise
    finally:
        admin.close()
    wait_for_leaders(bootstrap, [topics.frames, topics.results, topics.dlq])


def wait_for_leaders(bootstrap: str, names: list[str], timeout: float = 30.0) -> None:
    """Wait until every partition of ``names`` has a leader in the broker's metadata.

    Apache Kafka answers CreateTopics before its brokers publish the new topic's metadata; a
    consumer group whose leader assigns partitions in between gets none of the topic's
    partitions (kafka-python's range assignor: "No partition metadata for topic").
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)

    def led() -> bool:
        described = admin.describe_topics(names)
        return len(described) == len(names) and all(
            t["partitions"] and all(p["leader_id"] >= 0 for p in t["partitions"]) for t in described
        )

    try:
        wait_until(led, timeout, f"a leader for every partition of {names}")
    finally:
        admin.close()


def produce(bootstrap: str, topic: str, payloads: list[tuple[str, bytes]]) -> None:
    """Send ``(frame_id, value)`` pairs keyed by camera, with contract headers."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    try:
        for i, (frame_id, value) in enumerate(payloads):
            camera = f"cam-{i % 2}"
            producer.send(
                topic,
                value=value,
                key=camera.encode(),
                headers=[
                    ("camera_id", camera.encode()),
                    ("frame_id", frame_id.encode()),
                    ("captured_at", b"2026-11-28T12:00:00+00:00"),
                ],
            )
        producer.flush(30)
    finally:
        producer.close()


@dataclass
class Collected:
    results: list[dict[str, object]] = field(default_factory=list)
    dead: list[tuple[bytes | None, bytes, dict[str, bytes]]] = field(default_factory=list)

    def coordinates(self) -> list[tuple[int, int]]:
        """(partition, offset) of every output, results and dead letters."""
        out = [
            (int(r["source"]["partition"]), int(r["source"]["offset"]))  # type: ignore[index]
            for r in self.results
        ]
        out += [(int(h["source_partition"]), int(h["source_offset"])) for _, _, h in self.dead]
        return out


def collect(
    bootstrap: str, topics: Topics, expected: int, timeout: float = 90.0, *, distinct: bool = False
) -> Collected:
    """Read results and dead letters from the start until ``expected`` outputs or timeout.

    With ``distinct``, outputs count once per input coordinate (duplicates after a crash do not
    make up for a frame still missing).
    """
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500
    )
    parts = [TopicPartition(topics.results, 0), TopicPartition(topics.dlq, 0)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    got = Collected()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = len(set(got.coordinates())) if distinct else len(got.results) + len(got.dead)
            if done >= expected:
                break
            batch = consumer.poll(timeout_ms=500)
            for record in batch.get(parts[0], []):
                got.results.append(json.loads(record.value))
            for record in batch.get(parts[1], []):
                got.dead.append((record.key, record.value, dict(record.headers)))
    finally:
        consumer.close()
    return got
