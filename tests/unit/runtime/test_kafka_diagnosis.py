"""ConnectionDiagnosis: kafka-python's lines about a refused login or certificate, as reasons."""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from inspector.runtime.config import KafkaConfig
from inspector.runtime.kafka_diagnosis import ConnectionDiagnosis

SECRET = "hunter2-never-shown"
KAFKA = KafkaConfig(
    bootstrap_servers="broker:9093",
    security_protocol="SASL_SSL",
    sasl_mechanism="SCRAM-SHA-512",
    sasl_username="line-7",
    sasl_password=SecretStr(SECRET),
    ssl_cafile="/etc/ca.pem",
)
# As kafka-python 3.0.12 logs them (from a run against Apache Kafka 3.9.1).
AUTH = (
    "<KafkaSSLTransport [10.0.0.5:9093<-50616]>: Abort ([Error 58] SaslAuthenticationFailedError: "
    "SaslAuthenticationFailedError: Authentication failed during authentication due to invalid "
    "credentials with SASL mechanism SCRAM-SHA-512)"
)
CERT = (
    "Connection failed: KafkaConnectionError: Handshake failed: [SSL: CERTIFICATE_VERIFY_FAILED] "
    "certificate verify failed: unable to get local issuer certificate (_ssl.c:1006)"
)


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _emit(diagnosis: ConnectionDiagnosis, text: str, level: int = logging.ERROR) -> None:
    diagnosis.handle(logging.LogRecord("kafka.net.transport", level, __file__, 1, text, (), None))


def test_a_refused_login_names_the_broker_mechanism_user_and_what_to_fix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    diagnosis = ConnectionDiagnosis(KAFKA, Clock())
    with caplog.at_level(logging.ERROR, logger="inspector"):
        _emit(diagnosis, AUTH)
        _emit(diagnosis, AUTH)  # kafka-python retries every few hundred ms: one line of ours
    reason = diagnosis.reason()
    assert reason is not None
    assert "SASL authentication to 10.0.0.5:9093 failed" in reason
    assert "SCRAM-SHA-512" in reason and "'line-7'" in reason
    assert "INSPECTOR_KAFKA__SASL_PASSWORD" in reason and SECRET not in reason
    ours = [r for r in caplog.records if r.name.startswith("inspector")]
    assert len(ours) == 1 and ours[0].levelno == logging.ERROR
    assert SECRET not in ours[0].getMessage()


def test_an_untrusted_certificate_names_the_ca_file() -> None:
    diagnosis = ConnectionDiagnosis(KAFKA, Clock())
    _emit(diagnosis, CERT)
    reason = diagnosis.reason()
    assert reason is not None and "certificate is not trusted" in reason
    assert "unable to get local issuer certificate" in reason
    assert "broker:9093" in reason and "kafka.ssl_cafile (/etc/ca.pem)" in reason


def test_other_lines_are_ignored_and_a_problem_is_forgotten_when_it_stops() -> None:
    clock = Clock()
    diagnosis = ConnectionDiagnosis(KAFKA, clock)
    _emit(diagnosis, "Connection failed: KafkaConnectionError: 111 ECONNREFUSED")
    assert diagnosis.reason() is None  # a broker that is down is not a setting to fix
    _emit(diagnosis, AUTH)
    clock.now = 61.0
    assert diagnosis.reason() is None
