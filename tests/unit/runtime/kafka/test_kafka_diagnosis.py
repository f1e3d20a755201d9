"""ConnectionDiagnosis: kafka-python's records of a refused login or certificate, as reasons.

The records are built the way kafka-python 3.0.12 logs them (message, and the exception and
transport objects as arguments); that it still does is checked against the real client in
``tests/integration/test_kafka_client_contract.py``. The errors are real: a TLS handshake over
loopback with a certificate from a CA the client does not trust, kafka-python's own exceptions
and transport.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Iterator

import pytest
import trustme
from kafka.errors import (
    IllegalSaslStateError,
    KafkaConnectionError,
    SaslAuthenticationFailedError,
)
from kafka.net.transport import KafkaTCPTransport
from pydantic import SecretStr

from inspector.runtime.config import KafkaConfig
from inspector.runtime.kafka.diagnosis import ConnectionDiagnosis

SECRET = "hunter2-never-shown"
KAFKA = KafkaConfig(
    bootstrap_servers="broker:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="line-7",
    sasl_password=SecretStr(SECRET),
    ssl_cafile="/etc/ca.pem",
)
# What Apache Kafka 3.9.1 answers a wrong SCRAM password, as kafka-python 3.0.12 raises it.
REFUSED = (
    "SaslAuthenticationFailedError: Authentication failed during authentication due to invalid "
    "credentials with SASL mechanism SCRAM-SHA-512"
)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture()
def transport() -> Iterator[KafkaTCPTransport]:
    """kafka-python's transport over a real loopback connection (its peer names the broker)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
        try:
            yield KafkaTCPTransport(None, client, host="127.0.0.1")
        finally:
            client.close()
            accepted.close()


def _record(name: str, msg: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, None)


def _handshake_error(server_ca: trustme.CA, client_ca: trustme.CA) -> KafkaConnectionError:
    """A real TLS handshake's failure, wrapped as kafka-python 3.0.12's manager wraps it."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    client_ca.configure_trust(client_context)
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                server_context.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError):
                pass  # the client refuses the certificate: expected
            finally:
                conn.close()

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname()) as raw:
                try:
                    client_context.wrap_socket(raw, server_hostname="127.0.0.1").close()
                except ssl.SSLError as exc:
                    try:
                        raise KafkaConnectionError(f"Handshake failed: {exc}")
                    except KafkaConnectionError as wrapped:
                        return wrapped
        finally:
            thread.join(10)
    raise AssertionError("the handshake succeeded")


@pytest.mark.component  # a SASL listener stands in for the broker
def test_a_refused_login_names_the_broker_mechanism_user_and_what_to_fix(
    transport: KafkaTCPTransport, caplog: pytest.LogCaptureFixture
) -> None:
    diagnosis = ConnectionDiagnosis(KAFKA, Clock())
    refused = SaslAuthenticationFailedError(REFUSED)
    peer = f"127.0.0.1:{transport.getPeer()[1]}"
    with caplog.at_level(logging.ERROR, logger="inspector"):
        diagnosis.handle(_record("kafka.net.transport", "%s: Abort (%s)", transport, refused))
        # kafka-python logs the same failure again without the transport, and retries every
        # few hundred ms: still the broker of the first record, and one line of ours.
        diagnosis.handle(_record("kafka.net.manager", "Connection failed: %s", refused))
    reason = diagnosis.reason()
    assert reason is not None
    assert f"SASL authentication to {peer} failed" in reason
    assert "SCRAM-SHA-512" in reason and "'line-7'" in reason
    assert "invalid credentials" in reason
    assert "INSPECTOR_KAFKA__SASL_PASSWORD" in reason and SECRET not in reason
    ours = [r for r in caplog.records if r.name.startswith("inspector")]
    assert len(ours) == 1 and ours[0].levelno == logging.ERROR
    assert SECRET not in ours[0].getMessage() and peer in ours[0].getMessage()


@pytest.mark.component  # a TLS listener stands in for the broker
def test_an_untrusted_certificate_names_the_ca_file() -> None:
    diagnosis = ConnectionDiagnosis(KAFKA, Clock())
    error = _handshake_error(trustme.CA(), trustme.CA())
    diagnosis.handle(_record("kafka.net.manager", "Connection failed: %s", error))
    reason = diagnosis.reason()
    assert reason is not None and "certificate is not trusted" in reason
    assert "unable to get local issuer certificate" in reason
    assert "broker:9093" in reason and "kafka.ssl_cafile (/etc/ca.pem)" in reason


def test_sasl_spoken_to_a_listener_without_it_names_the_mechanism() -> None:
    diagnosis = ConnectionDiagnosis(KAFKA, Clock())
    diagnosis.handle(
        _record("kafka.net.manager", "Bootstrap connection to %s failed: %s (backoff %.2f secs)",
                "bootstrap-0", IllegalSaslStateError(), 0.05, level=logging.WARNING)
    )  # fmt: skip
    reason = diagnosis.reason()
    assert reason is not None and "does not accept SASL mechanism SCRAM-SHA-512" in reason
    assert "check kafka.sasl_mechanism" in reason


def test_tls_spoken_to_a_plaintext_listener_says_check_the_protocol() -> None:
    diagnosis = ConnectionDiagnosis(KAFKA, Clock())
    try:
        try:  # what the handshake gets from a listener that does not speak TLS
            raise ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
        except ssl.SSLError as exc:
            raise KafkaConnectionError(f"Handshake failed: {exc}")  # noqa: B904  (as kafka-python)
    except KafkaConnectionError as error:
        diagnosis.handle(_record("kafka.net.manager", "Connection failed: %s", error))
    reason = diagnosis.reason()
    assert reason is not None and "TLS to broker:9093 failed" in reason
    assert "SSLEOFError" in reason and "check kafka.security_protocol" in reason


def test_other_failures_are_ignored_and_a_problem_is_forgotten_when_it_stops() -> None:
    clock = Clock()
    diagnosis = ConnectionDiagnosis(KAFKA, clock)
    try:
        try:
            raise ConnectionRefusedError(111, "Connection refused")
        except OSError as exc:
            # Chained implicitly, as kafka-python chains the TLS error: only its class differs.
            raise KafkaConnectionError(f"111 ECONNREFUSED: {exc}")  # noqa: B904
    except KafkaConnectionError as down:
        diagnosis.handle(_record("kafka.net.manager", "Connection failed: %s", down))
    # Text alone says nothing: only the exceptions kafka-python logs are read.
    diagnosis.handle(_record("kafka.net.manager", "SaslAuthenticationFailed: certificate verify"))
    assert diagnosis.reason() is None  # a broker that is down is not a setting to fix
    diagnosis.handle(_record("kafka.net.manager", "Connection failed: %s", IllegalSaslStateError()))
    assert diagnosis.reason() is not None
    clock.now = 61.0
    assert diagnosis.reason() is None
