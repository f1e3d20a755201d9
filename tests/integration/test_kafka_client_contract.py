"""The contract between the package and kafka-python: every hook, on the real client and broker.

``inspector.runtime.kafka.client_hooks`` holds every use of kafka-python beyond its documented
API; at run time each hook degrades quietly when the client lacks it. These tests are what
fails loudly instead, the day an upgrade renames or changes one: each drives the real client
(pinned in pyproject.toml) against Apache Kafka and checks what the hook returns, not only
that an attribute exists. The SASL and TLS refusals use the SASL_SSL broker of
``test_kafka_security``.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kafka.producer.kafka
import pytest
import trustme
from kafka import AsyncConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import CorruptRecordError, IllegalStateError, KafkaTimeoutError
from kafka.producer.sender import Sender
from kafka.structs import MemberState
from test_kafka_security import (  # noqa: F401  (secure_broker: the fixture)
    PASSWORD,
    USER,
    WRONG_PASSWORD,
    SecureBroker,
    secure_broker,
)

from inspector.runtime.kafka import client_hooks as hooks
from inspector.runtime.kafka.client_hooks import ConnectionFailure
from inspector.runtime.kafka.client_metrics import connection_count

pytestmark = pytest.mark.integration

#: Longest wait for the broker to do something (seconds); never a condition's expected time.
WAIT_S = 60.0
#: Producer settings that hold what is sent in the accumulator (what discard must fail).
HOLDING = {"linger_ms": 600_000, "delivery_timeout_ms": 900_000}


def _until(what: str, condition: Callable[[], bool], step: Callable[[], None]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        step()


# --- producer ---------------------------------------------------------------------------------


@pytest.fixture()
def producer(bootstrap: str) -> Iterator[KafkaProducer]:
    made = KafkaProducer(bootstrap_servers=bootstrap, **HOLDING)
    try:
        yield made
    finally:
        made.close(timeout=0 if hooks.sender_alive(made) is False else 5)


def test_the_sender_thread_is_the_producers_live_thread_until_close(
    producer: KafkaProducer,
) -> None:
    thread = hooks.sender_thread(producer)
    assert thread is not None, "KafkaProducer._sender is gone or no longer a threading.Thread"
    assert thread.is_alive() and hooks.sender_alive(producer) is True
    producer.close(timeout=5)
    assert hooks.sender_alive(producer) is False


def test_metadata_listeners_hear_real_metadata_responses_until_removed(
    producer: KafkaProducer,
) -> None:
    first, second = threading.Event(), threading.Event()
    calls = [0]

    def heard() -> None:
        calls[0] += 1
        first.set()

    unwatch = hooks.watch_metadata(producer, heard)
    assert unwatch is not None, "KafkaProducer._metadata has no add_listener/remove_listener"
    assert hooks.request_metadata(producer), "KafkaProducer._metadata has no request_update"
    assert first.wait(WAIT_S), "no metadata response reached the listener"
    unwatch()
    after = calls[0]
    unwatch_second = hooks.watch_metadata(producer, second.set)
    assert unwatch_second is not None
    assert hooks.request_metadata(producer)
    assert second.wait(WAIT_S)  # a response was applied after the first listener was removed
    unwatch_second()
    assert calls[0] == after


def test_discard_fails_what_a_live_producer_holds(producer: KafkaProducer, make_topic: Any) -> None:
    future = producer.send(make_topic(), b"held")
    assert not future.is_done  # lingering in the accumulator
    thread = hooks.sender_thread(producer)
    hooks.discard(producer)
    with pytest.raises(IllegalStateError, match="closed forcefully"):
        future.get(timeout=WAIT_S)
    assert thread is not None
    thread.join(WAIT_S)
    assert hooks.sender_alive(producer) is False


class _SenderEnd(BaseException):
    """Escapes ``except Exception`` in ``Sender.run``: the thread ends, as a crash would."""


class _EndingSender(Sender):  # type: ignore[misc]
    """kafka-python's own Sender, whose thread ends once told to while a record waits."""

    end = threading.Event()

    def run_once(self) -> None:
        if self.end.is_set() and self._accumulator.has_undrained():
            raise _SenderEnd("the sender thread ends (test)")
        super().run_once()


def test_discard_fails_what_a_producer_with_a_dead_sender_holds(
    bootstrap: str, make_topic: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    previous_hook = threading.excepthook

    def hook(args: threading.ExceptHookArgs) -> None:
        if not isinstance(args.exc_value, _SenderEnd):  # expected: the thread dies of it
            previous_hook(args)

    monkeypatch.setattr(threading, "excepthook", hook)
    monkeypatch.setattr(kafka.producer.kafka, "Sender", _EndingSender)
    _EndingSender.end.clear()
    producer = KafkaProducer(bootstrap_servers=bootstrap, **HOLDING)
    topic = make_topic()
    first = producer.send(topic, b"first")
    producer.flush(timeout=WAIT_S)  # connected, with the topic's metadata
    assert first.succeeded()
    thread = hooks.sender_thread(producer)
    assert thread is not None
    _EndingSender.end.set()
    future = producer.send(topic, b"held")
    thread.join(WAIT_S)
    assert hooks.sender_alive(producer) is False and not future.is_done
    client = thread._client  # what discard closes for the dead thread: its network client
    brokers = [b.node_id for b in client.cluster.brokers()]
    assert any(client.connected(node) for node in brokers)
    hooks.discard(producer)
    assert future.is_done  # failed on this thread: nobody else would
    with pytest.raises(IllegalStateError):
        future.get(timeout=0)
    assert not any(client.connected(node) for node in brokers)


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.usefixtures("collect_leaked_sockets")
def test_codec_available_agrees_with_the_producers_own_check(bootstrap: str) -> None:
    for codec in ("gzip", "snappy", "lz4", "zstd"):
        available = hooks.codec_available(codec)
        assert available is not None, f"kafka.codec.has_{codec} is gone"
        try:
            made = KafkaProducer(bootstrap_servers=bootstrap, compression_type=codec)
        except RuntimeError:
            assert available is False, codec
        else:
            made.close(timeout=5)
            assert available is True, codec


# --- consumer ---------------------------------------------------------------------------------


class _SleepingListener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Awaits the event loop's sleep on assignment, as the Kafka source does on revocation."""

    def __init__(self) -> None:
        self.consumer: KafkaConsumer | None = None
        self.slept = False

    async def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    async def on_partitions_assigned(self, assigned: Any) -> None:
        sleep = hooks.loop_sleep(self.consumer)
        assert sleep is not None, "KafkaConsumer._net.sleep is gone"
        await sleep(0.01)
        await sleep(0.01)
        self.slept = True


def test_the_event_loops_sleep_is_awaitable_in_a_rebalance_listener(
    bootstrap: str, make_topic: Any, unique_group: str
) -> None:
    topic = make_topic()
    listener = _SleepingListener()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=unique_group)
    listener.consumer = consumer
    try:
        consumer.subscribe([topic], listener=listener)
        # A listener that raises is re-raised by poll(): a missing hook fails here loudly.
        _until("the assignment", lambda: listener.slept, lambda: consumer.poll(timeout_ms=100))
        # What the source's join loop and readiness read (public, but 3.x only).
        stable = lambda: consumer.group_metadata().state == MemberState.STABLE  # noqa: E731
        _until("a stable group", stable, lambda: consumer.poll(timeout_ms=100))
        assert (connection_count(consumer) or 0) > 0
    finally:
        consumer.close(autocommit=False)


class _NotUtf8(str):
    """A header key that kafka-python encodes to bytes that are not UTF-8."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe"


def test_the_fetcher_names_the_partition_of_a_record_it_cannot_parse(
    bootstrap: str, make_topic: Any
) -> None:
    topic = make_topic(2)
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        producer.send(topic, b"readable", partition=0).get(timeout=WAIT_S)
        producer.send(topic, b"x", partition=1, headers=[(_NotUtf8("k"), b"v")]).get(WAIT_S)
    finally:
        producer.close(timeout=5)
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    raised: list[CorruptRecordError] = []

    def poll() -> None:
        try:
            consumer.poll(timeout_ms=200)
        except CorruptRecordError as exc:
            raised.append(exc)

    try:
        # Both partitions are fetched: only the fetcher can say which one failed.
        consumer.assign([TopicPartition(topic, 0), TopicPartition(topic, 1)])
        consumer.seek_to_beginning()
        _until("CorruptRecordError", lambda: bool(raised), poll)
        assert hooks.fetching_partition(consumer) == TopicPartition(topic, 1), (
            "KafkaConsumer._fetcher._next_partition_records.topic_partition is gone or changed"
        )
    finally:
        consumer.close(autocommit=False)


# --- connection failures ----------------------------------------------------------------------


class _Failures(logging.Handler):
    """Reads kafka-python's records as the daemon's handler does: at emit, on its threads.

    (Later, a record's transport has dropped its socket: the broker could not be named.)
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[ConnectionFailure] = []

    def emit(self, record: logging.LogRecord) -> None:
        failure = hooks.connection_failure(record)
        if failure is not None:
            self.found.append(failure)


def _attempt(**settings: Any) -> tuple[list[ConnectionFailure], bool]:
    """The failures read from one consumer's bootstrap, and whether it connected."""
    handler = _Failures()
    logger = logging.getLogger("kafka")
    logger.addHandler(handler)
    # Not on to pytest's capture: a captured record keeps its exception, whose traceback keeps
    # the socket kafka-python leaked alive past the test (see collect_leaked_sockets).
    propagate, logger.propagate = logger.propagate, False
    try:
        KafkaConsumer(bootstrap_timeout_ms=5000, **settings).close()
        connected = True
    except KafkaTimeoutError:
        connected = False
    finally:
        logger.propagate = propagate
        logger.removeHandler(handler)
    return handler.found, connected


def _refusals(**settings: Any) -> list[ConnectionFailure]:
    """The failures of consumers that never connect, until one attempt said why.

    A busy broker may not answer one attempt in time; and kafka-python 3.0.12 drops the broker's
    answer to a refused SASL login when the broker's close arrives in the same read ("socket
    disconnected"), so an attempt may fail without saying why.
    """
    found: list[ConnectionFailure] = []

    def attempt() -> None:
        failures, connected = _attempt(**settings)
        assert not connected
        found.extend(failures)

    _until("a connection failure kafka-python says the reason of", lambda: bool(found), attempt)
    return found


@pytest.fixture()
def collect_leaked_sockets() -> Iterator[None]:
    """Collect, while the test ignores their ResourceWarning, the sockets kafka-python leaks.

    kafka-python 3.0.12 does not close the socket of a failed TLS handshake (the transport is
    dropped in ``KafkaConnectionManager._build_transport``), nor the event loop's socket pair of
    a constructor that raises after bootstrapping; the garbage collector does, with a
    ResourceWarning that would otherwise fail whichever test runs then.
    """
    yield
    gc.collect()


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.usefixtures("collect_leaked_sockets")
def test_tls_spoken_to_a_plaintext_listener_is_a_tls_failure(bootstrap: str) -> None:
    failures = _refusals(bootstrap_servers=bootstrap, security_protocol="SSL")
    assert {f.kind for f in failures} == {"tls"}, failures


SASL = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.usefixtures("collect_leaked_sockets")
def test_the_failures_of_a_sasl_ssl_listener_are_told_apart(
    secure_broker: SecureBroker,  # noqa: F811  (the fixture imported above)
    tmp_path: Path,
) -> None:
    broker = secure_broker.secure
    good = {**SASL, "bootstrap_servers": broker, "ssl_cafile": str(secure_broker.ca_file)}
    login = {"sasl_plain_username": USER, "sasl_plain_password": PASSWORD}
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))

    failures, connected = _attempt(**good, **login)
    assert connected and failures == []  # nothing of a good connection is a failure

    failures = _refusals(**{**good, "ssl_cafile": str(other_ca)}, **login)
    assert {f.kind for f in failures} == {"certificate"}, failures
    assert "certificate" in failures[0].detail

    failures = _refusals(**{**good, "sasl_mechanism": "PLAIN"}, **login)
    assert {f.kind for f in failures} == {"mechanism"}, failures
    assert broker in {f.broker for f in failures}  # from kafka-python's transport

    failures = _refusals(**good, **{**login, "sasl_plain_password": WRONG_PASSWORD})
    assert {f.kind for f in failures} == {"authentication"}, failures
    assert broker in {f.broker for f in failures}
    assert "invalid credentials" in failures[0].detail
    assert all(PASSWORD not in f.detail and WRONG_PASSWORD not in f.detail for f in failures)
