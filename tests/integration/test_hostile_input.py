"""What a hostile or broken producer sends cannot stop, wedge or exhaust the daemon.

Each test produces frames with unique coordinates and accounts for every one: results plus dead
letters equal what was produced, with no duplicates (nothing here crashes).
"""

from __future__ import annotations

import io
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
from faults import http_get, spawn_daemon
from kafka import KafkaProducer
from kafka_helpers import Collected, Topics, collect, create_topics, daemon_settings
from PIL import Image
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon
from inspector.tools.broker import free_port

pytestmark = pytest.mark.integration


class _NotUtf8(str):
    """A header key that kafka-python encodes to bytes that are not UTF-8."""

    __slots__ = ()

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe"


def _jpeg(data_root: Path) -> bytes:
    path = sorted((data_root / "test" / "good").iterdir())[0]
    return cv2.imencode(".jpg", cv2.imread(str(path)))[1].tobytes()


def _send_each(bootstrap: str, topic: str, records: list[dict[str, object]]) -> None:
    """Produce each record as a record batch of its own, in order, to partition 0."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=8 << 20)
    try:
        for record in records:
            producer.send(topic, partition=0, **record)  # type: ignore[arg-type]
            producer.flush(30)
    finally:
        producer.close()


def _account(got: Collected, produced: int) -> Counter[tuple[int, int]]:
    """Every produced offset has exactly one ending; returns the endings per coordinate."""
    seen = Counter(got.coordinates())
    assert sorted(seen) == [(0, offset) for offset in range(produced)], seen
    assert max(seen.values()) == 1, f"duplicates without a crash: {seen}"
    return seen


def _dead_by_offset(got: Collected) -> dict[int, dict[str, bytes]]:
    return {int(h["source_offset"]): h for _, _, h in got.dead}


@dataclass
class InProcess:
    daemon: Daemon
    registry: CollectorRegistry
    exit_code: list[int]
    thread: threading.Thread


@pytest.fixture()
def in_process() -> Iterator[Callable[[dict[str, object]], InProcess]]:
    started: list[InProcess] = []

    def start(settings: dict[str, object]) -> InProcess:
        registry = CollectorRegistry()
        daemon = Daemon(InspectorConfig.model_validate(settings), registry=registry)
        codes: list[int] = []
        thread = threading.Thread(target=lambda: codes.append(daemon.run()), daemon=True)
        thread.start()
        started.append(InProcess(daemon, registry, codes, thread))
        return started[-1]

    yield start
    for running in started:
        running.daemon.request_exit()
        running.thread.join(60)


def test_poison_records_are_dead_letters_and_the_partition_moves_on(
    bootstrap: str,
    checkpoint: LoadedCheckpoint,
    data_root: Path,
    group_offsets: Callable[[str], dict[int, int]],
    in_process: Callable[[dict[str, object]], InProcess],
) -> None:
    topics = Topics.unique()
    create_topics(bootstrap, topics, partitions=1)
    jpeg = _jpeg(data_root)
    records: list[dict[str, object]] = [
        {"value": jpeg, "key": b"cam-1"},
        # "²".isdigit() is True and int("²") raises: this header crash-looped the daemon.
        {"value": jpeg, "key": b"cam-1", "headers": [("captured_at", "²".encode())]},
        {"value": jpeg, "key": b"cam-1"},
        # A header key kafka-python cannot decode: the client raises on every poll.
        {"value": jpeg, "key": b"cam-1", "headers": [(_NotUtf8("k"), b"v")]},
        {"value": jpeg, "key": b"cam-1"},
        # A 64 KiB key and a megabyte of header: ids are replaced, the frame is inspected.
        {"value": jpeg, "key": b"k" * 65536, "headers": [("frame_id", b"\n" * (1 << 20))]},
        {"value": jpeg, "key": b"cam-1", "headers": [("captured_at", b"\xff\xfe")]},
        {"value": jpeg, "key": b"cam-1"},
        # Hostile part ids (huge, control characters, not UTF-8): dropped, the frame inspected.
        {"value": jpeg, "key": b"cam-1", "headers": [("part_id", b"P" * 65536)]},
        {"value": jpeg, "key": b"cam-1", "headers": [("part_id", b"SN\n0001\x00")]},
        {"value": jpeg, "key": b"cam-1", "headers": [("part_id", b"\xff\xfe")]},
        {"value": jpeg, "key": b"cam-1", "headers": [("part_id", b"SN-0042")]},
    ]
    _send_each(bootstrap, topics.frames, records)
    running = in_process(daemon_settings(bootstrap, topics, checkpoint.path))

    got = collect(bootstrap, topics, expected=len(records), timeout=120)
    wait_until(lambda: group_offsets(topics.group) == {0: len(records)}, 30, "a periodic commit")
    running.daemon.request_exit()
    running.thread.join(60)
    assert running.exit_code == [0]

    _account(got, len(records))
    dead = _dead_by_offset(got)
    assert sorted(dead) == [1, 3, 6]
    assert dead[1]["error_type"] == b"invalid_header" and "²".encode() in dead[1]["error"]
    assert dead[3]["error_type"] == b"corrupt_record"
    assert dead[6]["error_type"] == b"invalid_header"
    by_offset = {int(r["source"]["offset"]): r for r in got.results}  # type: ignore[index]
    assert str(by_offset[5]["camera_id"]).startswith("invalid-")
    assert by_offset[5]["frame_id"] == f"{topics.frames}:0:5"
    assert all("part_id" not in by_offset[offset] for offset in (8, 9, 10))
    assert by_offset[11]["part_id"] == "SN-0042"
    assert group_offsets(topics.group) == {0: len(records)}  # committed past every poison


def _read_status(pid: int) -> dict[str, int]:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM", "Threads"):
            fields[name] = int(value.split()[0])
    return fields


@dataclass
class Subprocess:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    topics: Topics

    def get(self, path: str) -> tuple[int, bytes]:
        return http_get(self.port, path)


def _start_daemon(settings: dict[str, object], tmp: Path, topics: Topics) -> Subprocess:
    process, port = spawn_daemon(settings, tmp / "daemon.yaml", tmp / "daemon.log")
    return Subprocess(process, port, tmp / "daemon.log", topics)


@pytest.fixture(scope="module")
def daemon_process(
    bootstrap: str, checkpoint: LoadedCheckpoint, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Subprocess]:
    """``inspector run`` in a process of its own (for its memory and its /metrics)."""
    topics = Topics.unique()
    create_topics(bootstrap, topics, partitions=1)
    settings = daemon_settings(bootstrap, topics, checkpoint.path)
    running = _start_daemon(settings, tmp_path_factory.mktemp("daemon"), topics)
    try:
        wait_until(lambda: b"inspector running" in running.log.read_bytes(), 120, "start-up")
        yield running
    finally:
        running.process.send_signal(signal.SIGTERM)
        code = running.process.wait(60)
        assert code == 0, running.log.read_text()[-3000:]


def _bomb() -> bytes:
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def test_a_decompression_bomb_is_refused_before_decoding(
    bootstrap: str, daemon_process: Subprocess, data_root: Path
) -> None:
    topics = daemon_process.topics
    jpeg = _jpeg(data_root)
    bomb = _bomb()
    assert len(bomb) < 64 * 1024  # 144 MP in a few kilobytes
    # Warm: the first frames' result, then the peak so far.
    _send_each(bootstrap, topics.frames, [{"value": jpeg, "key": b"cam"}] * 2)
    before = collect(bootstrap, topics, expected=2, timeout=120)
    assert len(before.results) == 2
    peak_before = _read_status(daemon_process.process.pid)["VmHWM"]

    _send_each(bootstrap, topics.frames, [{"value": bomb}] * 3 + [{"value": jpeg}])
    got = collect(bootstrap, topics, expected=6, timeout=120)
    growth_mb = (_read_status(daemon_process.process.pid)["VmHWM"] - peak_before) / 1024
    _account(got, 6)
    dead = _dead_by_offset(got)
    assert sorted(dead) == [2, 3, 4]
    assert {h["error_type"] for h in dead.values()} == {b"too_large"}
    assert b"12000 x 12000" in dead[2]["error"]
    assert growth_mb < 100, f"peak RSS grew by {growth_mb:.0f} MB"


def test_untrusted_camera_ids_leave_metrics_bounded(
    bootstrap: str, daemon_process: Subprocess, data_root: Path
) -> None:
    topics = daemon_process.topics
    small = cv2.resize(
        cv2.imread(str(sorted((data_root / "test" / "good").iterdir())[0])), (32, 32)
    )
    jpeg = cv2.imencode(".jpg", small)[1].tobytes()
    before = set(collect(bootstrap, topics, expected=10**9, timeout=3).coordinates())
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    try:
        for i in range(1000):
            # UUID-like ids, every tenth over the length limit (replaced, never a label).
            key = (f"{uuid.uuid4()}" + "x" * (200 if i % 10 == 0 else 0)).encode()
            producer.send(topics.frames, partition=0, value=jpeg, key=key)
        producer.flush(60)
    finally:
        producer.close()
    got = collect(bootstrap, topics, expected=len(before) + 1000, timeout=600)
    new = Counter(got.coordinates())
    for coordinate in before:
        del new[coordinate]
    assert len(new) == 1000 and max(new.values()) == 1  # each one result, no duplicate
    assert not {
        (int(h["source_partition"]), int(h["source_offset"])) for _, _, h in got.dead
    } & set(new)
    status, after = daemon_process.get("/metrics")
    assert status == 200
    assert len(after) < 100 * 1024, f"/metrics is {len(after)} bytes"
    text = after.decode()
    assert 'camera="other"' in text
    assert "x" * 200 not in text  # an over-long id never reaches a label
    assert "inspector_invalid_ids_total" in text


def test_sigterm_without_a_broker_exits_at_once(
    checkpoint: LoadedCheckpoint, tmp_path: Path
) -> None:
    topics = Topics.unique()
    settings = daemon_settings(f"127.0.0.1:{free_port()}", topics, checkpoint.path)
    running = _start_daemon(settings, tmp_path, topics)
    try:
        wait_until(lambda: b"waiting for kafka" in running.get("/readyz")[1], 120, "waiting")
        signalled = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        code = running.process.wait(10)
        took = time.monotonic() - signalled
    finally:
        running.process.kill()
    log = running.log.read_text()
    # The issue asks for 3 s. Under 1: two SIGTERMs sent back to back may arrive as one, so
    # the clean path must itself be as prompt as a forced exit (the process ends right after
    # its "stopped" line, not in the interpreter's teardown).
    assert took < 1, f"SIGTERM took {took:.1f} s"
    assert code == 0 and "inspector stopped" in log, log[-2000:]


def _retries(running: Subprocess) -> float:
    _, body = running.get("/metrics")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("inspector_delivery_retries_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_undelivered_frames_are_reported_and_come_again(
    bootstrap: str,
    checkpoint: LoadedCheckpoint,
    data_root: Path,
    tmp_path: Path,
    group_offsets: Callable[[str], dict[int, int]],
) -> None:
    topics = Topics.unique()
    create_topics(bootstrap, topics, partitions=1)
    jpeg = _jpeg(data_root)
    _send_each(bootstrap, topics.frames, [{"value": jpeg}] * 3)
    # Results also go to a file on a full disk: every write fails, so the frames are retried
    # and never acknowledged.
    broken = daemon_settings(
        bootstrap, topics, checkpoint.path, sinks={"jsonl": {"path": "/dev/full"}}
    )
    for name, timeout in (("forced", 30), ("timed-out", 3)):
        (tmp_path / name).mkdir()
        broken["daemon"] = {"drain_timeout_s": timeout}
        running = _start_daemon(broken, tmp_path / name, topics)
        try:
            wait_until(lambda r=running: _retries(r) >= 3, 120, "retrying")  # type: ignore[misc]
            running.process.send_signal(signal.SIGTERM)
            if name == "forced":
                wait_until(lambda r=running: b"send again" in r.log.read_bytes(), 10, "draining")  # type: ignore[misc]
                signalled = time.monotonic()
                running.process.send_signal(signal.SIGTERM)
            else:
                signalled = time.monotonic()
            code = running.process.wait(30)
            took = time.monotonic() - signalled
        finally:
            running.process.kill()
        log = running.log.read_text()
        assert code == 1, log[-3000:]
        if name == "forced":
            assert took < 1, f"a second SIGTERM took {took:.1f} s"
            assert "second SIGTERM: exiting now; 3 frame(s) in flight" in log
        else:
            assert took < timeout + 2  # one deadline through every close
            assert "3 frame(s) left undelivered" in log
            assert "0 result(s) and 0 dead letter(s) delivered, 3 frame(s) left" in log

    # Nothing was committed, so a daemon that can deliver inspects all three again (the Kafka
    # sink had taken their results each time: duplicates, with the same source coordinates).
    assert group_offsets(topics.group) == {}
    (tmp_path / "fixed").mkdir()
    fixed = _start_daemon(
        daemon_settings(bootstrap, topics, checkpoint.path), tmp_path / "fixed", topics
    )
    try:
        wait_until(lambda: group_offsets(topics.group) == {0: 3}, 120, "committed")
    finally:
        fixed.process.send_signal(signal.SIGTERM)
        assert fixed.process.wait(60) == 0, fixed.log.read_text()[-3000:]
    got = collect(bootstrap, topics, expected=10**9, timeout=5)
    assert sorted(set(got.coordinates())) == [(0, 0), (0, 1), (0, 2)] and not got.dead
    assert "3 result(s) and 0 dead letter(s) delivered" in fixed.log.read_text()


def test_after_a_broker_restart_results_flow_again_and_readiness_says_so(
    checkpoint: LoadedCheckpoint,
    data_root: Path,
    in_process: Callable[[dict[str, object]], InProcess],
) -> None:
    from inspector.tools.broker import EmbeddedBroker

    port = free_port()
    broker = EmbeddedBroker(port).start()
    bootstrap = broker.bootstrap
    topics = Topics.unique()
    jpeg = _jpeg(data_root)
    try:
        create_topics(bootstrap, topics, partitions=1)
        running = in_process(daemon_settings(bootstrap, topics, checkpoint.path))
        _send_each(bootstrap, topics.frames, [{"value": jpeg}] * 3)
        first = collect(bootstrap, topics, expected=3, timeout=120)
        _account(first, 3)
        server = running.daemon.server
        assert server is not None
        url = f"http://127.0.0.1:{server.port}/readyz"

        samples: list[tuple[float, int, str]] = []  # (wall time, status, body)
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                try:
                    with urllib.request.urlopen(url, timeout=2) as r:
                        samples.append((time.time(), r.status, r.read().decode()))
                except urllib.error.HTTPError as exc:
                    samples.append((time.time(), exc.code, exc.read().decode()))
                except OSError:  # the daemon's port closed (a failing test's teardown)
                    return
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        broker.stop()  # Tansu keeps nothing: a broker that comes back without our state
        stopped_at = time.time()
        # Readiness notices the lost brokers by itself (no frame is sent meanwhile).
        wait_until(lambda: bool(samples) and samples[-1][1] == 503, 60, "not ready")
        restarted_at = time.time()
        broker = EmbeddedBroker(port).start()
        # The daemon's consumer may ask for the frames topic first, and Tansu creates it then.
        create_topics(bootstrap, topics, partitions=1, exist_ok=True)
        _send_each(bootstrap, topics.frames, [{"value": jpeg}] * 3)
        got = collect(bootstrap, topics, expected=3, timeout=180)
        wait_until(lambda: samples[-1][1] == 200, 30, "ready again")
        sampling.set()
        sampler.join(5)
    finally:
        broker.stop()
    # Tansu starts the recreated topic at offset 0 again: the new frames are offsets 0-2.
    _account(got, 3)
    assert len(got.results) == 3
    # Not ready while the brokers were away, saying why; ready again after they came back.
    down = [body for t, status, body in samples if stopped_at <= t < restarted_at and status == 503]
    assert down and all("kafka" in body for body in down), down
    assert any(status == 200 for t, status, _ in samples if t > restarted_at)
