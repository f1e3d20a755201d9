from __future__ import annotations

import gzip
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from inspector.errors import ConfigError
from inspector.metrics import Metrics
from inspector.server import HealthServer

HOST = "127.0.0.1"


class Reasons:
    """A settable readiness callable."""

    def __init__(self, reasons: list[str]) -> None:
        self.reasons = reasons
        self.calls = 0

    def __call__(self) -> list[str]:
        self.calls += 1
        return list(self.reasons)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def reasons() -> Reasons:
    return Reasons(["model not loaded", "source not connected"])


@pytest.fixture
def server(registry: CollectorRegistry, reasons: Reasons) -> Iterator[HealthServer]:
    srv = HealthServer(HOST, 0, registry, reasons, Metrics(registry))
    srv.start()
    yield srv
    srv.stop()


def _get(
    server: HealthServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(f"http://{HOST}:{server.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def test_binds_an_ephemeral_port(server: HealthServer) -> None:
    assert server.port > 0


def test_metrics_are_prometheus_text(server: HealthServer, registry: CollectorRegistry) -> None:
    status, headers, body = _get(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "# TYPE inspector_frames_received_total counter" in text
    assert 'inspector_build_info{version="' in text


def test_metrics_negotiate_gzip_and_openmetrics(server: HealthServer) -> None:
    status, headers, body = _get(server, "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    assert b"inspector_ready" in gzip.decompress(body)
    _, headers, body = _get(server, "/metrics", {"Accept": "application/openmetrics-text"})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_healthz_is_alive_even_when_not_ready(server: HealthServer) -> None:
    status, headers, body = _get(server, "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "alive"}


def test_readyz_follows_the_readiness_callable_and_sets_the_gauge(
    server: HealthServer, registry: CollectorRegistry, reasons: Reasons
) -> None:
    status, _, body = _get(server, "/readyz")
    assert status == 503
    assert json.loads(body) == {
        "status": "not ready",
        "reasons": ["model not loaded", "source not connected"],
    }
    assert registry.get_sample_value("inspector_ready") == 0

    reasons.reasons = []
    status, _, body = _get(server, "/readyz")
    assert status == 200
    assert json.loads(body) == {"status": "ready"}
    assert registry.get_sample_value("inspector_ready") == 1

    reasons.reasons = ["shutting down"]
    assert _get(server, "/readyz")[0] == 503
    assert registry.get_sample_value("inspector_ready") == 0
    assert reasons.calls == 3


def test_a_failing_readiness_check_is_not_ready_not_a_crash(registry: CollectorRegistry) -> None:
    def broken() -> list[str]:
        raise RuntimeError("boom")

    srv = HealthServer(HOST, 0, registry, broken, Metrics(registry))
    srv.start()
    try:
        status, _, body = _get(srv, "/readyz")
    finally:
        srv.stop()
    assert status == 503
    assert json.loads(body)["reasons"] == ["readiness check failed: RuntimeError: boom"]
    assert registry.get_sample_value("inspector_ready") == 0


def test_unknown_path_is_404(server: HealthServer) -> None:
    status, _, body = _get(server, "/nope")
    assert status == 404
    assert json.loads(body)["paths"] == ["/metrics", "/healthz", "/readyz"]


def test_port_in_use_is_a_config_error_naming_the_port(registry: CollectorRegistry) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = HealthServer(HOST, port, registry, lambda: [], Metrics(registry))
        with pytest.raises(ConfigError, match=rf"http\.port.*{port}"):
            srv.start()
        assert srv.port == 0
        srv.stop()  # harmless after a failed start


def test_stop_releases_the_port(registry: CollectorRegistry) -> None:
    srv = HealthServer(HOST, 0, registry, lambda: [], Metrics(registry))
    srv.start()
    port = srv.port
    assert _get(srv, "/healthz")[0] == 200
    srv.stop()
    srv.stop()  # idempotent
    assert srv.port == 0
    with pytest.raises(OSError):
        socket.create_connection((HOST, port), timeout=1).close()
    # The same port can be bound again, by us or anyone else.
    fresh = CollectorRegistry()
    again = HealthServer(HOST, port, fresh, lambda: [], Metrics(fresh))
    again.start()
    try:
        assert again.port == port
    finally:
        again.stop()
