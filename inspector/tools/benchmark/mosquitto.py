"""An Eclipse Mosquitto broker of one's own, with TLS and a password file, and a subscriber.

Shared by the MQTT tests and ``bench/plant_latency.py``. ``mosquitto`` and ``mosquitto_passwd``
come from Debian's package (``.ci/ensure-mosquitto``); a missing broker is an error, never a
skip. The broker listens on a free loopback port with a certificate from a throw-away CA
(``trustme``, a dev dependency), refuses anonymous clients and keeps its sessions across a
restart (persistence on), so a test can stop it mid-stream and start it again at the same
address. The subscriber notes each message's arrival time (epoch seconds, the clock of the
results' ``captured_at``).
"""

from __future__ import annotations

import getpass
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import trustme
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from inspector.errors import InspectorError

USERNAME = "inspector"
PASSWORD = "s3cret-for-tests-only"


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if found is None:
        raise InspectorError(f"{name} is not installed: run .ci/ensure-mosquitto")
    return found


def free_port() -> int:
    """A TCP port nobody listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``condition`` every 20 ms until truthy.

    Raises:
        TimeoutError: Still false after ``timeout`` seconds (names ``what``).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.02)


@dataclass
class Mosquitto:
    """One broker: its address, its CA file and credentials; :meth:`stop` and :meth:`start`."""

    home: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def ca_file(self) -> Path:
        """The CA that signed the broker's certificate (PEM)."""
        return self.home / "ca.pem"

    @property
    def log_file(self) -> Path:
        """The broker's log."""
        return self.home / "mosquitto.log"

    def prepare(self) -> Mosquitto:
        """Write the certificates, the password file and the configuration."""
        ca = trustme.CA()
        server = ca.issue_cert("localhost", "127.0.0.1")
        ca.cert_pem.write_to_path(str(self.ca_file))
        server.private_key_pem.write_to_path(str(self.home / "server.key"))
        chain = b"".join(pem.bytes() for pem in server.cert_chain_pems)
        (self.home / "server.pem").write_bytes(chain)
        passwords = self.home / "passwd"
        passwords.touch(mode=0o600)
        subprocess.run(
            [_binary("mosquitto_passwd"), "-b", str(passwords), USERNAME, PASSWORD],
            check=True,
            capture_output=True,
        )
        (self.home / "data").mkdir()
        (self.home / "mosquitto.conf").write_text(
            "\n".join(
                [
                    f"user {getpass.getuser()}",  # run as root (CI) it keeps root: files are ours
                    f"listener {self.port} 127.0.0.1",
                    f"cafile {self.ca_file}",
                    f"certfile {self.home / 'server.pem'}",
                    f"keyfile {self.home / 'server.key'}",
                    "allow_anonymous false",
                    f"password_file {passwords}",
                    "persistence true",
                    f"persistence_location {self.home / 'data'}/",
                    f"log_dest file {self.log_file}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "",
                ]
            )
        )
        return self

    def start(self) -> None:
        """Start the broker and wait until it accepts connections."""
        assert self.process is None
        self.process = subprocess.Popen(
            [_binary("mosquitto"), "-c", str(self.home / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            assert self.process is not None and self.process.poll() is None, self.log()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                return False
            return True

        _wait(listening, 15, f"mosquitto on port {self.port}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM: it saves its sessions first)."""
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
            self.process = None

    def log(self) -> str:
        """The broker's log so far."""
        return self.log_file.read_text() if self.log_file.exists() else "(no log)"

    def sink_settings(self, **extra: object) -> dict[str, object]:
        """``sinks.mqtt`` for this broker (TLS, the broker's user)."""
        return {
            "host": "127.0.0.1",
            "port": self.port,
            "username": USERNAME,
            "password": PASSWORD,
            "tls": {"ca_file": str(self.ca_file)},
            "reconnect_max_s": 2,
            **extra,
        }


@dataclass(frozen=True)
class Received:
    """One message a subscriber got, and when (epoch seconds, as it arrived)."""

    topic: str
    payload: bytes
    retain: bool
    arrived: float = 0.0

    def json(self) -> dict[str, Any]:
        """The payload, read as a JSON object."""
        loaded: dict[str, Any] = json.loads(self.payload)
        return loaded


class Subscriber:
    """A TLS client of the broker's user at QoS 1, in a lasting session.

    Subscribed to ``topic`` (default ``<prefix>/#``). Its session outlives a broker restart
    (persistence on), so messages published while it reconnects wait for it at the broker.
    """

    def __init__(
        self,
        broker: Mosquitto,
        prefix: str,
        client_id: str = "test-subscriber",
        *,
        topic: str | None = None,
    ) -> None:
        self.prefix = prefix
        self.topic = topic or f"{prefix}/#"
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        client.username_pw_set(USERNAME, PASSWORD)
        client.tls_set(ca_certs=str(broker.ca_file))
        client.reconnect_delay_set(1, 1)
        client.on_connect = self._on_connect
        client.on_subscribe = lambda *_: self.subscribed.set()
        client.on_message = self._on_message
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.SessionExpiryInterval = 600
        client.connect("127.0.0.1", broker.port, keepalive=5, properties=properties)
        client.loop_start()
        self.client = client
        if not self.subscribed.wait(15):
            self.close()
            raise TimeoutError("the MQTT subscriber was not subscribed within 15 s")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, _c: Any, _u: Any, message: mqtt.MQTTMessage) -> None:
        arrived = time.time()  # first: the moment the network thread handed it over
        with self._lock:
            self.messages.append(
                Received(message.topic, bytes(message.payload), bool(message.retain), arrived)
            )

    def received(self, suffix: str = "/result") -> list[Received]:
        """Messages so far whose topic ends with ``suffix``."""
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def wait_for(self, n: int, suffix: str = "/result", timeout: float = 30.0) -> list[Received]:
        """Wait until ``n`` messages ending with ``suffix`` came; all of them.

        Raises:
            TimeoutError: Fewer came within ``timeout`` seconds.
        """
        _wait(lambda: len(self.received(suffix)) >= n, timeout, f"{n} {suffix} messages")
        return self.received(suffix)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def start_mosquitto(home: Path) -> Mosquitto:
    """A prepared and started broker in ``home`` (stop it when done)."""
    broker = Mosquitto(home).prepare()
    broker.start()
    return broker


__all__ = [
    "PASSWORD",
    "USERNAME",
    "Mosquitto",
    "Received",
    "Subscriber",
    "free_port",
    "start_mosquitto",
]
