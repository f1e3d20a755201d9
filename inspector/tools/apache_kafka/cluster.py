"""The nodes of a local Apache Kafka (KRaft) cluster: configure, format, start, kill, restart.

See the package docstring for what it is for and how to run it.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import logging
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient

from inspector.tools.apache_kafka.jars import (
    KAFKA_VERSION,
    KafkaLaunchError,
    fetch_jars,
    java_executable,
)
from inspector.tools.apache_kafka.settings import BROKER_SETTINGS, cluster_settings
from inspector.tools.broker import free_port

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = 90.0
_JVM_OPTIONS = ["-Xms64m", "-Xmx384m", "-XX:+UseSerialGC", "-Djava.awt.headless=true"]
_LOG4J = """\
log4j.rootLogger=WARN, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka.common.utils.AppInfoParser=INFO
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.kafka.server.ControllerServer=INFO
"""


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started it dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class KafkaNode:
    """One combined broker+controller: its ports, its files and, while it runs, its process."""

    node_id: int
    port: int
    controller_port: int
    home: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        """``host:port`` of its client listener."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_file(self) -> Path:
        """The broker's own log (warnings, and the start-up lines)."""
        return self.home / "server.log"

    def alive(self) -> bool:
        """Whether its process is running."""
        return self.process is not None and self.process.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of its log and console output, for error messages."""
        text = ""
        for path in (self.log_file, self.home / "console.log"):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")[-chars:]
        return text[-chars:]


class KafkaCluster:
    """Apache Kafka in KRaft mode as ``nodes`` local JVM processes.

    Args:
        nodes: 1 (a single node) or 3 (replication 3, ``min.insync.replicas`` 2).
        workdir: Where node data lives (default: a temporary folder removed by :meth:`stop`).
        settings: Extra broker settings over :data:`BROKER_SETTINGS` and the replication ones.
        listeners: Extra listeners per node (``name -> (protocol, port)``) from a callable of
            the node, e.g. a SASL_SSL one; their settings come in ``settings``.
        scram_users: ``name -> password`` SCRAM-SHA-512 credentials, written into the
            metadata when the storage is formatted (KRaft has no ZooKeeper to add them to).
    """

    def __init__(
        self,
        nodes: int = 1,
        *,
        workdir: Path | None = None,
        settings: Mapping[str, str] | None = None,
        listeners: Callable[[KafkaNode], Mapping[str, tuple[str, int]]] | None = None,
        scram_users: Mapping[str, str] | None = None,
    ) -> None:
        if nodes < 1:
            raise ValueError("nodes must be at least 1")
        self.nodes: list[KafkaNode] = []
        self.started_in_s: float | None = None
        self.version: str | None = None
        self._count = nodes
        self._owned = workdir is None
        self._workdir = workdir
        self._settings = {**BROKER_SETTINGS, **cluster_settings(nodes), **(settings or {})}
        self._listeners = listeners
        self._scram = dict(scram_users or {})
        self._libs: Path | None = None

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated."""
        return ",".join(node.address for node in self.nodes)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> KafkaCluster:
        """Fetch the jars if needed, format each node's storage, start all, wait until ready.

        Raises:
            KafkaLaunchError: Java or Maven is missing, or a node does not come up (its log's
                tail is in the message).
        """
        started = time.monotonic()
        self._libs = fetch_jars()
        # Once more on fresh ports and storage: a port taken between free_port() and the
        # JVM binding it, or a start slowed past the timeout by a busy machine.
        for attempt in (1, 2):
            try:
                self._launch()
                break
            except KafkaLaunchError as exc:
                if attempt == 2:
                    self.stop()
                    raise
                log.warning("Apache Kafka did not start, trying again: %s", exc)
                self._kill_all()
            except BaseException:
                self.stop()
                raise
        self.started_in_s = time.monotonic() - started
        self.version = self._running_version()
        log.info(
            "Apache Kafka %s (KRaft, %d node%s) at %s, ready in %.1f s",
            self.version, self._count, "s" * (self._count > 1), self.bootstrap, self.started_in_s,
        )  # fmt: skip
        return self

    def _launch(self) -> None:
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="inspector-kafka-"))
        cluster_id = _cluster_id()
        self.nodes = [
            KafkaNode(n, free_port(), free_port(), self._workdir / f"node-{n}")
            for n in range(1, self._count + 1)
        ]
        for node in self.nodes:
            shutil.rmtree(node.home, ignore_errors=True)  # a failed attempt's storage
            self._configure(node)
            self._format(node, cluster_id)
        for node in self.nodes:
            self.start_node(node, wait=False)
        self.wait_ready()

    def _kill_all(self) -> None:
        for node in self.nodes:
            self.kill_node(node)

    def _configure(self, node: KafkaNode) -> None:
        node.home.mkdir(parents=True, exist_ok=True)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        extra = dict(self._listeners(node)) if self._listeners else {}
        listeners = [f"PLAINTEXT://127.0.0.1:{node.port}"]
        listeners += [f"{name}://127.0.0.1:{port}" for name, (_, port) in extra.items()]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        protocols += [f"{name}:{protocol}" for name, (protocol, _) in extra.items()]
        props = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": ",".join([*listeners, f"CONTROLLER://127.0.0.1:{node.controller_port}"]),
            "advertised.listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": ",".join(protocols),
            "log.dirs": str(node.home / "data"),
            **self._settings,
        }
        text = "".join(f"{key}={value}\n" for key, value in props.items())
        (node.home / "server.properties").write_text(text)
        (node.home / "log4j.properties").write_text(_LOG4J.format(log=node.log_file))

    def _java_command(self, main: str, *args: str, node: KafkaNode) -> list[str]:
        log4j = f"-Dlog4j.configuration=file:{node.home / 'log4j.properties'}"
        return [java_executable(), *_JVM_OPTIONS, log4j, "-cp", f"{self._libs}/*", main, *args]

    def _format(self, node: KafkaNode, cluster_id: str) -> None:
        props = str(node.home / "server.properties")
        scram: list[str] = []
        for name, password in self._scram.items():
            scram += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        cmd = self._java_command(
            "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", props, *scram, node=node
        )
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        if done.returncode != 0:
            raise KafkaLaunchError(
                f"formatting node {node.node_id}'s storage failed: {done.stdout}{done.stderr}"
            )

    def start_node(self, node: KafkaNode, *, wait: bool = True) -> None:
        """Start ``node`` (again, with its data after a kill); ``wait`` for the cluster."""
        if node.alive():
            return
        cmd = self._java_command("kafka.Kafka", str(node.home / "server.properties"), node=node)
        with open(node.home / "console.log", "ab") as console:
            node.process = subprocess.Popen(
                cmd, stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        if wait:
            self.wait_ready()

    def kill_node(self, node: KafkaNode) -> None:
        """SIGKILL: no controlled shutdown, no flush beyond what the OS has."""
        if node.process is not None and node.process.poll() is None:
            node.process.kill()
            node.process.wait(timeout=30)

    def stop_node(self, node: KafkaNode, timeout_s: float = 30.0) -> None:
        """SIGTERM: a controlled shutdown (leadership moves first); SIGKILL after ``timeout_s``."""
        if node.process is None or node.process.poll() is not None:
            return
        node.process.terminate()
        try:
            node.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill_node(node)

    def wait_ready(self, timeout_s: float = _READY_TIMEOUT_S) -> None:
        """Wait until every running node is a registered, unfenced broker.

        Raises:
            KafkaLaunchError: A node's process ended, or the time ran out.
        """
        deadline = time.monotonic() + timeout_s
        want = {node.node_id for node in self.nodes if node.process is not None}
        while True:
            for node in self.nodes:
                if node.process is not None and node.process.poll() is not None:
                    raise KafkaLaunchError(
                        f"Apache Kafka node {node.node_id} exited with {node.process.returncode} "
                        f"while starting; its log ends:\n{node.log_tail()}"
                    )
            if want <= self._registered():
                return
            if time.monotonic() > deadline:
                tails = "\n".join(f"node {n.node_id}: {n.log_tail(800)}" for n in self.nodes)
                raise KafkaLaunchError(
                    f"Apache Kafka was not ready within {timeout_s:.0f} s; logs end:\n{tails}"
                )
            time.sleep(0.25)

    def _registered(self) -> set[int]:
        running = [n.address for n in self.nodes if n.alive()]
        if not running:
            return set()
        try:
            admin = KafkaAdminClient(bootstrap_servers=running, request_timeout_ms=3000)
        except Exception:  # not listening yet: NoBrokersAvailable, timeouts
            return set()
        try:
            return {int(b["broker_id"]) for b in admin.describe_cluster()["brokers"]}
        except Exception:
            return set()
        finally:
            admin.close()

    def _running_version(self) -> str:
        for node in self.nodes:
            with contextlib.suppress(OSError):
                found = re.search(r"Kafka version: (\S+)", node.log_file.read_text())
                if found:
                    return found.group(1)
        return KAFKA_VERSION

    def stop(self) -> None:
        """Stop every node and remove the data folder if it made it.

        Data that is thrown away next needs no controlled shutdown (SIGKILL, at once); a
        given ``workdir`` is kept, so its nodes shut down cleanly (SIGTERM, then SIGKILL).
        """
        for node in self.nodes:
            if node.process is not None and node.process.poll() is None:
                with contextlib.suppress(OSError):
                    node.process.kill() if self._owned else node.process.terminate()
        for node in self.nodes:
            self.stop_node(node, timeout_s=15.0)
        if self._owned and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)


def _cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
