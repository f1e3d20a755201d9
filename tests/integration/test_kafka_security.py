"""The daemon on a SASL_SSL (SCRAM-SHA-512) listener of Apache Kafka, certificates made here.

A broker with two listeners: PLAINTEXT for the test's own producer and reader, SASL_SSL for
the daemon, with a CA and a broker certificate from ``trustme``. The daemon takes its password
from the environment. Good credentials inspect frames; a wrong password or a certificate from
another CA leaves ``/readyz`` at 503 with a reason, logs an error naming the broker and the
mechanism, and never the password.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest
import trustme
from conftest import start_apache_kafka
from cryptography.hazmat.primitives import serialization
from faults import Daemon, Line
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.tools.apache_kafka import KafkaCluster, KafkaNode
from inspector.tools.broker import free_port
from inspector.tools.synth import SynthSummary

pytestmark = pytest.mark.integration

USER = "inspector"
PASSWORD = "s3cret-Pa55-do-not-log"  # a test credential
WRONG_PASSWORD = "wr0ng-Pa55-do-not-log"


@dataclass
class SecureBroker:
    cluster: KafkaCluster
    secure: str  # host:port of the SASL_SSL listener
    ca_file: Path


def _pkcs8(pem: bytes) -> bytes:
    """Kafka's PEM key store wants a PKCS#8 key; trustme writes the traditional format."""
    key = serialization.load_pem_private_key(pem, password=None)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    tmp = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    key_store = tmp / "broker.pem"
    chain = b"".join(blob.bytes() for blob in cert.cert_chain_pems)
    key_store.write_bytes(_pkcs8(cert.private_key_pem.bytes()) + chain)
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    secure_port = free_port()

    def listeners(node: KafkaNode) -> dict[str, tuple[str, int]]:
        return {"SECURE": ("SASL_SSL", secure_port)}

    settings = {
        "sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.secure.sasl.enabled.mechanisms": "SCRAM-SHA-512",
        "listener.name.secure.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "listener.name.secure.ssl.keystore.type": "PEM",
        "listener.name.secure.ssl.keystore.location": str(key_store),
    }
    cluster = start_apache_kafka(
        1,
        workdir=tmp / "kafka",
        settings=settings,
        listeners=listeners,
        scram_users={USER: PASSWORD},
    )
    try:
        yield SecureBroker(cluster, f"127.0.0.1:{secure_port}", ca_file)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def frames(synth_data: SynthSummary) -> list[bytes]:
    paths = sorted((synth_data.root / "test" / "good").iterdir())[:2]
    return [cv2.imencode(".jpg", cv2.imread(str(p)))[1].tobytes() for p in paths]


def _secure_daemon(
    line: Line,
    broker: SecureBroker,
    name: str,
    password: str,
    ca_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Daemon:
    # The password reaches the daemon only through its environment, as an operator sets it.
    monkeypatch.setenv("INSPECTOR_KAFKA__SASL_PASSWORD", password)
    kafka = {
        "bootstrap_servers": broker.secure,
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_username": USER,
        "ssl_cafile": str(ca_file),
    }
    return line.start_daemon(name, kafka=kafka)


def _assert_never_logged(daemon: Daemon, *secrets: str) -> None:
    for number, text in enumerate(daemon.log.read_text(errors="replace").splitlines(), 1):
        for secret in secrets:
            assert secret not in text, f"{daemon.log}:{number} shows the password"


def test_sasl_ssl_with_good_credentials_inspects_frames(
    secure_broker: SecureBroker,
    checkpoint: LoadedCheckpoint,
    frames: list[bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = Line(secure_broker.cluster.bootstrap, checkpoint.path, tmp_path, frames, bad_every=0)
    ca_file = secure_broker.ca_file
    daemon = _secure_daemon(line, secure_broker, "good", PASSWORD, ca_file, monkeypatch)
    try:
        line.produce(8)
        wait_until(lambda: daemon.get("/readyz")[0] == 200, 120, "ready over SASL_SSL")
        accounting = line.account("sasl_ssl", timeout=120)
        assert daemon.terminate() == 0, daemon.tail()
    finally:
        line.stop_all()
    assert accounting.lost == 0 and accounting.results == 8
    _assert_never_logged(daemon, PASSWORD)


@pytest.mark.parametrize("fault", ["wrong password", "untrusted certificate"])
def test_a_refused_connection_is_a_reason_on_readyz_and_never_logs_the_password(
    fault: str,
    secure_broker: SecureBroker,
    checkpoint: LoadedCheckpoint,
    frames: list[bytes],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    line = Line(secure_broker.cluster.bootstrap, checkpoint.path, tmp_path, frames, bad_every=0)
    if fault == "wrong password":
        password, ca_file = WRONG_PASSWORD, secure_broker.ca_file
    else:
        password, ca_file = PASSWORD, tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(ca_file))
    expected = "authentication" if fault == "wrong password" else "certificate"
    daemon = _secure_daemon(line, secure_broker, "refused", password, ca_file, monkeypatch)
    try:
        line.produce(2)
        wait_until(lambda: daemon.get("/readyz")[0] == 503, 120, "/readyz answers")
        # The client retries: the reason is there once an attempt was refused for it.
        wait_until(lambda: expected in daemon.get("/readyz")[1].decode().lower(), 90, "a reason")
        status, body = daemon.get("/readyz")
        assert status == 503
        reason = body.decode()
        assert line.delivered() == 0
        assert daemon.alive(), daemon.tail()
        daemon.terminate()
    finally:
        line.stop_all()
    errors = [ln for ln in daemon.log.read_text().splitlines() if " ERROR " in ln]
    assert expected in reason.lower() and "SCRAM-SHA-512" in reason, reason
    assert any(secure_broker.secure in ln and "SCRAM-SHA-512" in ln for ln in errors), errors
    _assert_never_logged(daemon, PASSWORD, WRONG_PASSWORD)
