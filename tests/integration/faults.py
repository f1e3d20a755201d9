"""Harness of the fault scenarios: a line of frames with unique ids, daemons as processes, and
an account of every frame (results + dead letters = produced; duplicates counted).

Each scenario produces N frames, each with a unique ``frame_id`` header and known
coordinates (partition, offset), runs ``inspector run`` processes against them while a fault
happens, then reads every result and dead letter back and accounts for each produced frame.
A row per scenario goes to ``$INSPECTOR_RELIABILITY_OUT`` (JSON lines) when set: what
``make reliability`` turns into the README's table.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import KafkaError
from kafka_helpers import Topics, wait_for_leaders
from waiting import wait_until

from inspector.tools.broker import free_port

T = TypeVar("T")


def spawn_daemon(
    settings: dict[str, Any], config: Path, log: Path
) -> tuple[subprocess.Popen[bytes], int]:
    """``inspector run`` with ``settings`` (HTTP on a free port) in a process of its own.

    Returns the process and its HTTP port; its output is appended to ``log``.
    """
    port = free_port()
    config.write_text(yaml.safe_dump({**settings, "http": {"host": "127.0.0.1", "port": port}}))
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "inspector", "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    return process, port


def http_get(port: int, path: str) -> tuple[int, bytes]:
    """``(status, body)`` of a GET on a local daemon; ``(0, b"")`` while it does not listen."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError):
        return 0, b""


@dataclass
class Daemon:
    """One ``inspector run`` process."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str) -> tuple[int, bytes]:
        """``(status, body)`` of an HTTP GET; ``(0, b"")`` while it does not listen."""
        return http_get(self.port, path)

    def alive(self) -> bool:
        return self.process.poll() is None

    def processed(self) -> float:
        """Frames it inspected so far (``inspector_frames_processed_total``, all cameras)."""
        status, body = self.get("/metrics")
        if status != 200:
            return 0.0
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in body.decode().splitlines()
            if line.startswith("inspector_frames_processed_total{")
        )

    def running(self) -> bool:
        """Whether it logged that it runs (model loaded, stages started)."""
        return b"inspector running" in self.log.read_bytes()

    def kill(self) -> None:
        """SIGKILL: no drain, no commit, no flush."""
        if self.alive():
            self.process.kill()
        self.process.wait(30)

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit code (a clean stop drains and commits)."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@dataclass
class Accounting:
    """What became of every produced frame."""

    scenario: str
    frames: int
    results: int
    dead_letters: int
    lost: int
    duplicates: int
    recovery_s: float | None = None
    notes: str = ""
    missing: list[str] = field(default_factory=list)

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out["missing"] = out["missing"][:10]
        return out


def bounded(call: Callable[[], T], timeout: float = 30.0, tries: int = 5) -> T:
    """``call()`` in a thread of its own, abandoned and tried again after ``timeout``.

    kafka-python 3.0.12's blocking calls (end offsets, group offsets) can wait for ever after
    a broker restart: their ``timeout_ms`` does not bound the caller's wait
    (https://github.com/dpkp/kafka-python/issues/3121, fixed after 3.0.12).
    """
    for _ in range(tries):
        pool = ThreadPoolExecutor(1)
        future = pool.submit(call)
        pool.shutdown(wait=False)
        try:
            return future.result(timeout=timeout)
        except (FutureTimeout, KafkaError):  # hung, or timed out while leaders move
            time.sleep(1)
            continue
    raise AssertionError(f"a Kafka call hung or failed {tries} times")


class Line:
    """One scenario's topics, frames and daemons on a broker.

    Args:
        bootstrap: The broker(s).
        checkpoint: The model the daemons run.
        workdir: Where configs and daemon logs go.
        frames: A few encoded images; frame ``i`` is ``frames[i % len(frames)]``.
        partitions: Of the frames topic.
        replication: Of every topic.
        bad_every: Every N-th frame is not an image (a dead letter); 0: none.
        replicas: Per topic role (``frames``, ``results``, ``dlq``), the brokers holding every
            partition, leader first; other topics get ``replication`` copies.
    """

    def __init__(
        self,
        bootstrap: str,
        checkpoint: Path,
        workdir: Path,
        frames: Sequence[bytes],
        *,
        partitions: int = 2,
        replication: int = 1,
        bad_every: int = 10,
        replicas: dict[str, list[int]] | None = None,
    ) -> None:
        self.bootstrap = bootstrap
        self.checkpoint = checkpoint
        self.workdir = workdir
        self.images = list(frames)
        self.bad_every = bad_every
        self.topics = Topics.unique()
        self.partitions = partitions
        # (partition, offset) -> frame id, filled as the producer's acks come back.
        self.produced: dict[tuple[int, int], str] = {}
        self.daemons: list[Daemon] = []
        self._next = 0  # index of the next frame to produce
        self._lock = threading.Lock()
        counts = {"frames": partitions, "results": 1, "dlq": 1}
        names = {"frames": self.topics.frames, "results": self.topics.results}
        names["dlq"] = self.topics.dlq
        new = []
        for role, count in counts.items():
            brokers = (replicas or {}).get(role)
            # Output records carry the broker's append time: when each was really written.
            configs = {} if role == "frames" else {"message.timestamp.type": "LogAppendTime"}
            if brokers:
                assignment = {p: list(brokers) for p in range(count)}
                new.append(
                    NewTopic(names[role], replica_assignments=assignment, topic_configs=configs)
                )
            else:
                new.append(NewTopic(names[role], count, replication, topic_configs=configs))
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics(new)
        finally:
            admin.close()
        wait_for_leaders(bootstrap, [t.name for t in new])

    # --- frames ---------------------------------------------------------------------------

    def produce(
        self,
        n: int | None = None,
        *,
        rate: float | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        """Send ``n`` more frames, or until ``stop`` is set; ``rate`` per second, or at once.

        Each frame has a unique ``frame_id``; its coordinates are recorded in
        :attr:`produced` as soon as the broker acknowledges it.
        """
        producer = KafkaProducer(
            bootstrap_servers=self.bootstrap, acks="all", linger_ms=5, retries=10**6
        )
        errors: list[BaseException] = []
        sent = 0
        try:
            while (n is None or sent < n) and not (stop is not None and stop.is_set()):
                with self._lock:
                    i, self._next = self._next, self._next + 1
                frame_id = f"{self.topics.frames}-{i:06d}"
                bad = self.bad_every and i % self.bad_every == self.bad_every - 1
                value = b"not an image" if bad else self.images[i % len(self.images)]
                camera = f"cam-{i % 12}"  # keys that spread over 6 partitions
                future = producer.send(
                    self.topics.frames,
                    value=value,
                    key=camera.encode(),
                    headers=[("camera_id", camera.encode()), ("frame_id", frame_id.encode())],
                )
                future.add_callback(self._acked, frame_id)
                future.add_errback(errors.append)
                sent += 1
                if rate:
                    time.sleep(1 / rate)
            producer.flush(120)
        finally:
            producer.close()
        assert not errors, f"producing frames failed: {errors[:3]}"

    def _acked(self, frame_id: str, meta: Any) -> None:
        self.produced[(meta.partition, meta.offset)] = frame_id

    # --- daemons --------------------------------------------------------------------------

    def settings(self, **sections: Any) -> dict[str, Any]:
        """The daemons' config: small batches, frequent commits, a short session."""
        kafka = self.topics.kafka_settings(
            self.bootstrap, commit_interval_ms=200, request_timeout_ms=10_000
        )
        kafka.update(sections.pop("kafka", {}))
        return {
            "kafka": kafka,
            "sources": [{"type": "kafka"}],
            "model": {"checkpoint": str(self.checkpoint), "device": "cpu", "warmup_batches": 1},
            "batcher": {"max_batch_size": 4, "max_wait_ms": 10},
            "daemon": {"drain_timeout_s": 20},
            **sections,
        }

    def start_daemon(self, name: str, **sections: Any) -> Daemon:
        process, port = spawn_daemon(
            self.settings(**sections), self.workdir / f"{name}.yaml", self.workdir / f"{name}.log"
        )
        daemon = Daemon(name, process, port, self.workdir / f"{name}.log")
        self.daemons.append(daemon)
        return daemon

    def stop_all(self) -> None:
        for daemon in self.daemons:
            if daemon.alive():
                daemon.kill()

    # --- reading back ---------------------------------------------------------------------

    def outputs(self, *, results: bool = True) -> list[tuple[int, int, str]]:
        """``(partition, offset, kind)`` of the source frame of every output so far.

        ``results=False`` reads the dead letters only (while the results topic is offline).
        """
        return [(p, o, kind) for p, o, kind, _ in self.outputs_timed(results=results)]

    def outputs_timed(self, *, results: bool = True) -> list[tuple[int, int, str, int]]:
        """:meth:`outputs` with each output record's timestamp (epoch ms)."""
        return bounded(lambda: self._read_outputs(results))

    def _read_outputs(self, results: bool) -> list[tuple[int, int, str, int]]:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False, request_timeout_ms=15_000
        )
        parts = [TopicPartition(self.topics.dlq, 0)]
        if results:
            parts.append(TopicPartition(self.topics.results, 0))
        out: list[tuple[int, int, str, int]] = []
        try:
            consumer.assign(parts)
            consumer.seek_to_beginning(*parts)
            ends = consumer.end_offsets(parts)
            while any(consumer.position(tp) < ends[tp] for tp in parts):
                for tp, records in consumer.poll(timeout_ms=500).items():
                    for record in records:
                        if tp.topic == self.topics.results:
                            source = json.loads(record.value)["source"]
                            p, o, kind = source["partition"], source["offset"], "result"
                        else:
                            headers = dict(record.headers)
                            p, o = headers["source_partition"], headers["source_offset"]
                            kind = "dead_letter"
                        out.append((int(p), int(o), kind, int(record.timestamp)))
        finally:
            consumer.close()
        return out

    def delivered(self) -> int:
        """Distinct produced frames with an output so far."""
        return len({(p, o) for p, o, _ in self.outputs()} & set(self.produced))

    def account(self, scenario: str, timeout: float = 120.0, **extra: Any) -> Accounting:
        """Wait until every produced frame has an output (or ``timeout``), then count."""
        with contextlib.suppress(AssertionError):  # what is missing is counted as lost below
            wait_until(lambda: self.delivered() >= len(self.produced), timeout, "every frame back")
        outputs = self.outputs()
        seen = Counter((p, o) for p, o, _ in outputs)
        missing = [self.produced[c] for c in sorted(set(self.produced) - set(seen))]
        bad = [o for o in outputs if (o[0], o[1]) not in self.produced]
        assert not bad, f"outputs for frames never produced: {bad[:5]}"
        accounting = Accounting(
            scenario=scenario,
            frames=len(self.produced),
            results=len({(p, o) for p, o, k in outputs if k == "result"}),
            dead_letters=len({(p, o) for p, o, k in outputs if k == "dead_letter"}),
            lost=len(missing),
            duplicates=sum(n - 1 for n in seen.values()),
            missing=missing,
            **extra,
        )
        record(accounting)
        return accounting

    def committed(self) -> dict[int, int]:
        """The group's committed position per frames partition."""
        return bounded(self._read_committed)

    def _read_committed(self) -> dict[int, int]:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            offsets = admin.list_group_offsets(self.topics.group).get(self.topics.group, {})
        finally:
            admin.close()
        return {
            tp.partition: meta.offset
            for tp, meta in offsets.items()
            if tp.topic == self.topics.frames and meta.offset >= 0
        }

    def group_lag(self) -> int:
        """Frames of the frames topic not yet committed by the group."""
        parts = [TopicPartition(self.topics.frames, p) for p in range(self.partitions)]

        def read_ends() -> dict[TopicPartition, int]:
            consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
            try:
                return dict(consumer.end_offsets(parts))
            finally:
                consumer.close()

        ends = bounded(read_ends)
        done = self.committed()
        return sum(ends[tp] - done.get(tp.partition, 0) for tp in parts)


def record(accounting: Accounting) -> None:
    """Append the scenario's row to ``$INSPECTOR_RELIABILITY_OUT`` (for ``make reliability``)."""
    out = os.environ.get("INSPECTOR_RELIABILITY_OUT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps(accounting.row()) + "\n")
