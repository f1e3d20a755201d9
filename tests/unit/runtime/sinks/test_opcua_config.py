"""``sinks.opcua``: its configuration, the files it names, its wiring, what a verdict shows.

No socket here (the fast tier): the server itself, with a real client, is in
``test_opcua_server.py``.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from fakes import make_result
from opcua_pki import SERVER_URI, Pki, identity, make_pki
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from inspector.errors import ConfigError
from inspector.runtime.config import InspectorConfig, OpcuaSinkConfig, load_config
from inspector.runtime.metrics import Metrics
from inspector.runtime.sinks import build_sinks
from inspector.runtime.sinks.opcua import OpcuaSink
from inspector.runtime.sinks.opcua.server import VerdictServer
from inspector.runtime.sinks.opcua.values import NULL_TIME, verdict_of

EXAMPLE = Path(__file__).parents[4] / "configs" / "opcua.yaml"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _config(pki: Pki, **overrides: Any) -> OpcuaSinkConfig:
    values: dict[str, Any] = {
        "enabled": True,
        "certificate_file": pki.server.certificate,
        "private_key_file": pki.server.key,
        "trusted_clients_dir": pki.trusted_dir,
        "users": {"plc": "plc-pass-4711"},
    }
    values.update(overrides)
    return OpcuaSinkConfig.model_validate(values)


def test_the_example_loads_and_passwords_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("INSPECTOR_SINKS__OPCUA__USERS__PLC1", "from-the-env")
    monkeypatch.setenv("INSPECTOR_SINKS__OPCUA__PRIVATE_KEY_PASSWORD", "key-secret")
    opcua = load_config(EXAMPLE).sinks.opcua
    assert opcua.enabled and opcua.security_modes == ("sign", "sign_and_encrypt")
    assert opcua.users["plc1"].get_secret_value() == "from-the-env"
    assert opcua.private_key_password is not None
    assert "from-the-env" not in repr(opcua) and "key-secret" not in str(opcua.model_dump())
    assert not opcua.allow_anonymous


def test_the_sink_is_built_only_when_enabled(pki: Pki) -> None:
    metrics = Metrics(CollectorRegistry())
    assert not any(isinstance(s, OpcuaSink) for s in build_sinks(InspectorConfig(), metrics))
    config = InspectorConfig.model_validate(
        {"sinks": {"opcua": _config(pki).model_dump(mode="json") | {"users": {"plc": "p"}}}}
    )
    built = [s for s in build_sinks(config, metrics) if isinstance(s, OpcuaSink)]
    assert [s.name for s in built] == ["opcua"]
    assert built[0].unready_reason() == "sink opcua: the OPC UA server is not running (not started)"


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"certificate_file": None}, "need certificate_file"),
        ({"trusted_clients_dir": None}, "trusted_clients_dir"),
        ({"users": {}}, "no client could log in"),
        ({"security_modes": ["none"]}, "passwords in clear"),
        ({"security_modes": []}, "security_modes"),
        ({"security_modes": ["basic128"]}, "security_modes"),
        ({"users": {"plc": ""}}, "needs a password"),
        ({"users": {"a\nb": "x"}}, "user name"),
    ],
)
def test_an_unsafe_or_unusable_config_is_refused(
    pki: Pki, overrides: dict[str, Any], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        _config(pki, **overrides)


def test_no_security_and_anonymous_only_when_said_explicitly(pki: Pki) -> None:
    # Both opt-ins together: a server with no certificate at all, for a closed test network.
    open_config = OpcuaSinkConfig(
        enabled=True, security_modes=("none",), allow_anonymous=True, users={}
    )
    assert VerdictServer(open_config, "1.0").application_uri == "urn:inspector:daemon"
    assert not OpcuaSinkConfig().enabled  # off unless enabled


def test_an_unreadable_certificate_is_named_by_its_key(pki: Pki, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.der"
    garbage.write_bytes(b"not a certificate")
    with pytest.raises(ConfigError, match=r"sinks\.opcua\.certificate_file: .*garbage\.der"):
        VerdictServer(_config(pki, certificate_file=garbage), "1.0")
    with pytest.raises(ConfigError, match=r"sinks\.opcua\.certificate_file: cannot read"):
        VerdictServer(_config(pki, certificate_file=tmp_path / "missing.der"), "1.0")
    with pytest.raises(ConfigError, match=r"sinks\.opcua\.private_key_file: .* not a private key"):
        VerdictServer(_config(pki, private_key_file=garbage), "1.0")
    with pytest.raises(ConfigError, match=r"sinks\.opcua\.trusted_clients_dir: cannot list"):
        VerdictServer(_config(pki, trusted_clients_dir=tmp_path / "nowhere"), "1.0")
    (tmp_path / "trusted").mkdir()
    (tmp_path / "trusted" / "broken.pem").write_bytes(b"-----BEGIN nothing")
    with pytest.raises(ConfigError, match=r"sinks\.opcua\.trusted_clients_dir: .*broken\.pem"):
        VerdictServer(_config(pki, trusted_clients_dir=tmp_path / "trusted"), "1.0")


def test_the_certificate_must_carry_the_application_uri(pki: Pki, tmp_path: Path) -> None:
    assert VerdictServer(_config(pki), "1.0").application_uri == SERVER_URI
    assert VerdictServer(_config(pki, application_uri=SERVER_URI), "1.0")
    with pytest.raises(ConfigError, match="carries no subject alternative name with the URI"):
        VerdictServer(_config(pki, application_uri="urn:somewhere:else"), "1.0")
    other = identity(tmp_path, "other", "urn:other", server=True)
    server = VerdictServer(
        _config(pki, certificate_file=other.certificate, private_key_file=other.key), "1.0"
    )
    assert server.application_uri == "urn:other"


def test_a_verdict_is_late_when_served_after_the_deadline() -> None:
    captured = datetime(2026, 1, 1, tzinfo=UTC)
    message = make_result("f-1", anomalous=True).model_copy(
        update={"captured_at": captured.isoformat(), "part_id": "SN/1"}
    )
    on_time, latency = verdict_of(message, captured + timedelta(milliseconds=500), 800, 3)
    assert latency == pytest.approx(0.5) and not on_time.late
    assert (on_time.frame_id, on_time.part_id, on_time.result_count) == ("f-1", "SN/1", 3)
    assert on_time.is_anomalous and on_time.captured_at == captured and on_time.model == "m"
    late, _ = verdict_of(message, captured + timedelta(milliseconds=801), 800, 4)
    assert late.late
    # Already late when the verdict was made: late here too, whatever the serving time.
    made_late = message.model_copy(update={"late": True})
    assert verdict_of(made_late, captured, None, 1)[0].late
    # No deadline, or no capture time: not late (unknown), and no latency to observe.
    assert not verdict_of(message, captured + timedelta(hours=1), None, 1)[0].late
    unknown, none = verdict_of(make_result("f-2"), captured, 800, 1)
    assert none is None and not unknown.late and unknown.captured_at == NULL_TIME


def test_an_encrypted_key_needs_its_password(pki: Pki, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key(pki.server.key.read_bytes(), password=None)
    locked = tmp_path / "locked.pem"
    locked.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"key-pass-1234"),
        )
    )
    for password in (None, "wrong-pass"):
        with pytest.raises(ConfigError, match="private_key_password does not open it"):
            VerdictServer(
                _config(pki, private_key_file=locked, private_key_password=password), "1.0"
            )
    opened = _config(pki, private_key_file=locked, private_key_password="key-pass-1234")
    assert VerdictServer(opened, "1.0").application_uri == SERVER_URI


def test_without_the_plant_extra_setup_says_what_to_install(
    pki: Pki, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "asyncua", None)  # what an install without it imports
    sink = OpcuaSink(_config(pki), Metrics(CollectorRegistry()))
    with pytest.raises(ConfigError, match=r"pip install 'inspector\[plant\]'"):
        sink.setup()
