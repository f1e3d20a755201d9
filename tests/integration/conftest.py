"""The broker for integration tests: Apache Kafka (KRaft), started by the suite.

``INSPECTOR_TEST_BOOTSTRAP=host:port`` runs every integration test against that broker;
otherwise a single Apache Kafka node (``inspector.tools.apache_kafka``: jars from Maven Central,
cached outside the checkout) is started once per session on free loopback ports. A broker that
cannot start fails the tests that need it, never skips them. The embedded Tansu broker stays
the demo's default: ``test_demo_e2e.py`` runs the demo on it. Tests use their own topics and
groups, so they never see each other's data.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from kafka_helpers import wait_for_leaders

from inspector.tools.apache_kafka import KafkaCluster, KafkaLaunchError

#: What the brokers of this session were, for the summary at the end of the run.
BROKERS_USED: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say which broker the integration tests ran against (the CI log must show it)."""
    for line in BROKERS_USED:
        terminalreporter.write_line(line)


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/integration needs a broker: marked ``integration`` if not already."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.path)).parents and not item.get_closest_marker("integration"):
            item.add_marker(pytest.mark.integration)


def start_apache_kafka(nodes: int, **kwargs: Any) -> KafkaCluster:
    """Start Apache Kafka or fail the test (never skip): CI must not pass without a broker."""
    try:
        cluster = KafkaCluster(nodes, **kwargs).start()
    except KafkaLaunchError as exc:
        pytest.fail(f"Apache Kafka did not start: {exc}", pytrace=False)
    BROKERS_USED.append(
        f"integration broker: Apache Kafka {cluster.version} (KRaft, {nodes} node"
        f"{'s' * (nodes > 1)}) at {cluster.bootstrap}, ready in {cluster.started_in_s:.1f} s"
    )
    return cluster


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    """``host:port`` of the broker under test."""
    given = os.environ.get("INSPECTOR_TEST_BOOTSTRAP")
    if given:
        BROKERS_USED.append(f"integration broker: INSPECTOR_TEST_BOOTSTRAP={given}")
        yield given
        return
    cluster = start_apache_kafka(1)
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()


def _tag() -> str:
    return uuid.uuid4().hex[:12]


@pytest.fixture()
def unique_topic() -> str:
    """A topic name no other test uses (the broker creates no topic by itself: create it)."""
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
    wait_for_leaders(bootstrap, [name])


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
