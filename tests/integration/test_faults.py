"""The fault matrix on Apache Kafka: every produced frame ends as a result or a dead letter.

Each scenario produces frames with unique ids while a fault happens, then accounts for every
one (``faults.Line.account``): nothing lost; duplicates only where a crash or a rebalance
explains them. ``make reliability`` runs this module and puts the accounting in the README.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from conftest import start_apache_kafka
from faults import Daemon, Line
from kafka import KafkaAdminClient
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.tools.apache_kafka import KafkaCluster
from inspector.tools.synth import SynthSummary

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def frames(synth_data: SynthSummary) -> list[bytes]:
    """A few good frames as JPEG; every tenth frame produced is not an image at all."""
    paths = sorted((synth_data.root / "test" / "good").iterdir())[:4]
    return [cv2.imencode(".jpg", cv2.imread(str(p)))[1].tobytes() for p in paths]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three brokers: replication 3, ``min.insync.replicas`` 2; nodes are killed and restarted."""
    running = start_apache_kafka(3, workdir=tmp_path_factory.mktemp("kafka3"))
    try:
        yield running
    finally:
        running.stop()


class _Producing:
    """Frames produced at ``rate`` per second in the background until :meth:`stop`."""

    def __init__(self, line: Line, rate: float) -> None:
        self._stop = threading.Event()
        self._errors: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(line, rate), daemon=True)
        self._thread.start()

    def _run(self, line: Line, rate: float) -> None:
        try:
            line.produce(rate=rate, stop=self._stop)
        except BaseException as exc:  # surfaced by stop()
            self._errors.append(exc)

    def stop(self, timeout: float = 180) -> None:
        """Stop producing and wait until everything sent was acknowledged."""
        self._stop.set()
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the producer did not finish"
        assert not self._errors, self._errors


def _started(daemon: Daemon, timeout: float = 120) -> None:
    wait_until(lambda: daemon.running() or not daemon.alive(), timeout, f"{daemon.name} start")
    assert daemon.alive(), daemon.tail()


def _leader(bootstrap: str, topic: str, partition: int) -> int:
    """The broker leading ``partition`` of ``topic`` (waits for a new topic's metadata)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    leaders: list[int] = []

    def found() -> bool:
        (described,) = admin.describe_topics([topic])
        leaders[:] = [
            int(p["leader_id"])
            for p in described["partitions"]
            if p["partition_index"] == partition and p["leader_id"] >= 0
        ]
        return bool(leaders)

    try:
        wait_until(found, 30, f"a leader for {topic}:{partition}")
        return leaders[0]
    finally:
        admin.close()


def test_daemon_sigkill_five_times_loses_nothing(
    bootstrap: str, checkpoint: LoadedCheckpoint, frames: list[bytes], tmp_path: Path
) -> None:
    line = Line(bootstrap, checkpoint.path, tmp_path, frames, partitions=2)
    rng = random.Random(7)
    producer = _Producing(line, rate=20)
    try:
        for k in range(5):
            daemon = line.start_daemon(f"run{k}")
            _started(daemon)
            before = line.delivered()
            # A random point: some results out, the next batches in flight.
            wait_until(lambda b=before: line.delivered() > b, 60, "results flowing")
            time.sleep(rng.uniform(0.0, 1.5))
            daemon.kill()
        producer.stop()
        last = line.start_daemon("final")
        _started(last)
        accounting = line.account("daemon SIGKILL x5, restarted each time", timeout=180)
        assert last.terminate() == 0, last.tail()
    finally:
        line.stop_all()
    assert accounting.lost == 0, accounting.missing
    assert accounting.frames > 100 and accounting.dead_letters == accounting.frames // 10


def test_broker_sigkill_and_restart_with_its_data(
    checkpoint: LoadedCheckpoint,
    frames: list[bytes],
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    node = start_apache_kafka(1, workdir=tmp_path_factory.mktemp("kafka1"))
    try:
        line = Line(node.bootstrap, checkpoint.path, tmp_path, frames, partitions=2)
        daemon = line.start_daemon("daemon")
        _started(daemon)
        producer = _Producing(line, rate=20)
        wait_until(lambda: line.delivered() > 40, 90, "results flowing")
        node.kill_node(node.nodes[0])
        time.sleep(5)
        node.start_node(node.nodes[0])
        back, before = time.monotonic(), line.delivered()
        wait_until(lambda: line.delivered() >= before + 8, 120, "results after the restart")
        recovery = time.monotonic() - back
        time.sleep(3)
        producer.stop()
        accounting = line.account("broker SIGKILL + restart (single node)", recovery_s=recovery)
        assert daemon.alive(), daemon.tail()  # recovered without a restart
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        node.stop()
    assert accounting.lost == 0, accounting.missing
    if accounting.duplicates:
        # The restarted broker forgot the group's members: the daemon's partitions were
        # revoked and assigned again, and their frames in flight were read again.
        assert "partitions revoked" in daemon.log.read_text(), accounting


def test_leader_of_frames_and_results_killed_and_back(
    cluster: KafkaCluster, checkpoint: LoadedCheckpoint, frames: list[bytes], tmp_path: Path
) -> None:
    # Node 1 leads every partition of the line's topics: killing it moves them all.
    victim = cluster.nodes[0]
    order = [1, 2, 3]
    line = Line(
        cluster.bootstrap, checkpoint.path, tmp_path, frames, partitions=2,
        replicas={"frames": order, "results": order, "dlq": order},
    )  # fmt: skip
    assert _leader(cluster.bootstrap, line.topics.results, 0) == victim.node_id
    assert _leader(cluster.bootstrap, line.topics.frames, 1) == victim.node_id
    daemon = line.start_daemon("daemon")
    try:
        _started(daemon)
        producer = _Producing(line, rate=20)
        wait_until(lambda: line.delivered() > 40, 90, "results flowing")
        cluster.kill_node(victim)
        killed = time.monotonic()
        before = line.delivered()
        # Frames keep coming (the producer moves to the new leaders too): two batches more.
        wait_until(lambda: line.delivered() >= before + 8, 120, "results after the failover")
        recovery = time.monotonic() - killed
        cluster.start_node(victim)
        time.sleep(3)
        producer.stop()
        accounting = line.account(
            "3 brokers: the leader of frames and results SIGKILLed, then back",
            recovery_s=recovery,
        )
        assert daemon.alive() and daemon.terminate() == 0, daemon.tail()
    finally:
        line.stop_all()
        cluster.start_node(victim)
    assert accounting.lost == 0, accounting.missing
    assert accounting.duplicates == 0  # no crash and no rebalance: nothing read twice


class _Owners:
    """Samples the group's assignment (the broker's view) in the background.

    ``overlaps`` lists every sample where a partition had two owners; ``samples`` counts
    stable samples with every partition owned.
    """

    def __init__(self, line: Line) -> None:
        self.line = line
        self.overlaps: list[dict[int, list[str]]] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        admin = KafkaAdminClient(bootstrap_servers=self.line.bootstrap)
        try:
            while not self._stop.wait(0.5):
                try:
                    group = admin.describe_groups([self.line.topics.group])[self.line.topics.group]
                except Exception:  # the coordinator moving: sample again
                    continue
                owners: dict[int, list[str]] = {}
                for member in group.get("members", []):
                    assignment = member.get("member_assignment") or {}
                    for topic in assignment.get("assigned_partitions", []):
                        if topic["topic"] != self.line.topics.frames:
                            continue
                        for p in topic["partitions"]:
                            owners.setdefault(p, []).append(member["member_id"])
                if any(len(v) > 1 for v in owners.values()):
                    self.overlaps.append(owners)
                if group.get("group_state") == "Stable" and len(owners) == self.line.partitions:
                    self.samples += 1
        finally:
            admin.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def test_consumer_group_scales_1_3_1_with_sigterm_and_sigkill(
    bootstrap: str, checkpoint: LoadedCheckpoint, frames: list[bytes], tmp_path: Path
) -> None:
    line = Line(bootstrap, checkpoint.path, tmp_path, frames, partitions=6)
    owners = _Owners(line)
    try:
        first = line.start_daemon("a")
        _started(first)
        producer = _Producing(line, rate=15)
        wait_until(lambda: line.delivered() > 30, 90, "results from one daemon")
        second, third = line.start_daemon("b"), line.start_daemon("c")
        _started(second)
        _started(third)
        wait_until(
            lambda: second.processed() > 0 and third.processed() > 0, 120, "all three inspect"
        )
        # A clean stop: drains what it can within daemon.drain_timeout_s and commits it; on a
        # starved machine (three daemons and their broker on two cores) frames still in flight
        # then are left uncommitted (exit 1) for the survivor to inspect: nothing is lost.
        assert second.terminate() in (0, 1), second.tail()
        assert "inspector stopped:" in second.tail(), second.tail()
        time.sleep(random.Random(3).uniform(0.2, 1.0))
        third.kill()  # mid-batch: its uncommitted frames go to the survivor
        time.sleep(5)
        producer.stop()
        accounting = line.account("consumer group 1 -> 3 -> 1 (SIGTERM and SIGKILL)")
        wait_until(lambda: line.group_lag() == 0, 60, "lag back to 0")
        assert first.terminate() == 0, first.tail()
    finally:
        owners.stop()
        line.stop_all()
    assert accounting.lost == 0, accounting.missing
    assert not owners.overlaps, owners.overlaps[:3]
    assert owners.samples > 0  # the sampler saw the group (the check above is not vacuous)


def test_results_topic_unavailable_for_30_s_commits_nothing_undelivered(
    cluster: KafkaCluster, checkpoint: LoadedCheckpoint, frames: list[bytes], tmp_path: Path
) -> None:
    # The results topic lives on node 3 alone; frames and dead letters stay available.
    line = Line(
        cluster.bootstrap, checkpoint.path, tmp_path, frames, partitions=2,
        replicas={"frames": [1, 2, 3], "results": [3], "dlq": [1, 2, 3]},
    )  # fmt: skip
    node3 = cluster.nodes[2]
    daemon = line.start_daemon("daemon")
    try:
        _started(daemon)
        producer = _Producing(line, rate=10)
        wait_until(lambda: line.delivered() > 20, 90, "results flowing")
        cluster.stop_node(node3)
        outage, stopped_ms = time.monotonic(), time.time() * 1000
        wait_until(lambda: daemon.get("/readyz")[0] == 503, 60, "/readyz 503 in the outage")
        reason = daemon.get("/readyz")[1].decode()
        committed: dict[int, int] = {}
        while time.monotonic() - outage < 30:
            committed = line.committed()
            time.sleep(1)
        sampled_ms = time.time() * 1000
        cluster.start_node(node3)
        back = time.monotonic()
        wait_until(lambda: daemon.get("/readyz")[0] == 200, 120, "/readyz 200 again")
        recovery = time.monotonic() - back
        producer.stop()
        accounting = line.account(
            "results topic unavailable 30 s (its only broker stopped)", recovery_s=recovery
        )
        assert daemon.alive() and daemon.terminate() == 0, daemon.tail()
    finally:
        line.stop_all()
        cluster.start_node(node3)
    assert "kafka" in reason.lower(), reason
    # Nothing committed past an undelivered frame: every frame below the commit position seen
    # in the outage had its output written (broker append time) before that position was read:
    # its result before the outage, or a dead letter (whose topic stayed up).
    delivered = {
        (p, o)
        for p, o, kind, ts in line.outputs_timed()
        if ts < (stopped_ms if kind == "result" else sampled_ms)
    }
    for p, o in line.produced:
        if o < committed.get(p, 0):
            assert (p, o) in delivered, f"frame {p}:{o} committed before it was delivered"
    assert accounting.lost == 0, accounting.missing


def _proc_sample(pid: int) -> tuple[int, int, int]:
    """``(RSS KiB, threads, open file descriptors)`` of a process."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.split()[0] if value.split() else ""
    return int(fields["VmRSS"]), int(fields["Threads"]), len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.soak
def test_soak_at_full_rate_keeps_memory_threads_and_descriptors_flat(
    bootstrap: str, checkpoint: LoadedCheckpoint, frames: list[bytes], tmp_path: Path
) -> None:
    """A day of a line compressed: ``INSPECTOR_SOAK_MINUTES`` (20) at full rate, sampled.

    Outside ``make test`` (``-m soak``; ``make reliability`` runs it). After a warm-up fifth,
    the resident memory of the last quarter may exceed the first quarter's by 5 % at most,
    threads and open descriptors stay within a small band, and every frame is accounted for.
    """
    minutes = float(os.environ.get("INSPECTOR_SOAK_MINUTES", "20"))
    line = Line(bootstrap, checkpoint.path, tmp_path, frames, partitions=2, bad_every=50)
    daemon = line.start_daemon("soak")
    samples: list[tuple[float, int, int, int]] = []
    try:
        _started(daemon)
        started = time.monotonic()
        while time.monotonic() - started < minutes * 60:
            # Keep a backlog of about 200 frames: full rate without an unbounded topic.
            if len(line.produced) - line.delivered() < 200:
                line.produce(200)
            samples.append((time.monotonic() - started, *_proc_sample(daemon.process.pid)))
            time.sleep(5)
        accounting = line.account(
            f"soak: {minutes:g} min at full rate",
            notes=_soak_notes(samples),
        )
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        line.stop_all()
    assert accounting.lost == 0, accounting.missing
    steady = [s for s in samples if s[0] >= minutes * 60 / 5]
    quarter = max(1, len(steady) // 4)
    first = sorted(s[1] for s in steady[:quarter])[quarter // 2]
    last = sorted(s[1] for s in steady[-quarter:])[quarter // 2]
    assert last <= first * 1.05, f"RSS grew from {first} to {last} KiB"
    assert max(s[2] for s in steady) - min(s[2] for s in steady) <= 2, "threads changed"
    assert max(s[3] for s in steady) - min(s[3] for s in steady) <= 8, "descriptors changed"


def _soak_notes(samples: list[tuple[float, int, int, int]]) -> str:
    if not samples:
        return ""
    rss = [s[1] / 1024 for s in samples]
    return (
        f"RSS {rss[0]:.0f} -> {rss[-1]:.0f} MiB (max {max(rss):.0f}), threads "
        f"{min(s[2] for s in samples)}-{max(s[2] for s in samples)}, fds "
        f"{min(s[3] for s in samples)}-{max(s[3] for s in samples)}"
    )
