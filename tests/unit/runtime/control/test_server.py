from __future__ import annotations

import gzip
import json
import logging
import socket
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from inspector.errors import ConfigError
from inspector.runtime.control import server as server_module
from inspector.runtime.control.server import HttpServer
from inspector.runtime.metrics import Metrics

# Starts the HTTP server (uvicorn): the component tier (make component), not make unit.
pytestmark = pytest.mark.component

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
def server(registry: CollectorRegistry, reasons: Reasons) -> Iterator[HttpServer]:
    srv = HttpServer(HOST, 0, registry, reasons, Metrics(registry))
    srv.start()
    yield srv
    srv.stop()


def _get(
    server: HttpServer, path: str, headers: dict[str, str] | None = None
) -> tuple[int, Message, bytes]:
    """Status, headers (looked up case-insensitively, as HTTP defines them) and body."""
    req = urllib.request.Request(f"http://{HOST}:{server.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.headers, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers, err.read()


def test_binds_an_ephemeral_port(server: HttpServer) -> None:
    assert server.port > 0


def test_metrics_are_prometheus_text(server: HttpServer, registry: CollectorRegistry) -> None:
    status, headers, body = _get(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    text = body.decode()
    assert "# TYPE inspector_frames_received_total counter" in text
    assert 'inspector_build_info{version="' in text


def test_metrics_negotiate_gzip_and_openmetrics(server: HttpServer) -> None:
    status, headers, body = _get(server, "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip"
    assert b"inspector_ready" in gzip.decompress(body)
    _, headers, body = _get(server, "/metrics", {"Accept": "application/openmetrics-text"})
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.rstrip().endswith(b"# EOF")


def test_healthz_is_alive_even_when_not_ready(server: HttpServer) -> None:
    status, headers, body = _get(server, "/healthz")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "alive"}


def test_readyz_follows_the_readiness_callable_and_sets_the_gauge(
    server: HttpServer, registry: CollectorRegistry, reasons: Reasons
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

    srv = HttpServer(HOST, 0, registry, broken, Metrics(registry))
    srv.start()
    try:
        status, _, body = _get(srv, "/readyz")
    finally:
        srv.stop()
    assert status == 503
    assert json.loads(body)["reasons"] == ["readiness check failed: RuntimeError: boom"]
    assert registry.get_sample_value("inspector_ready") == 0


def test_a_ready_answer_carries_the_notes_of_a_standby(registry: CollectorRegistry) -> None:
    standby = "kafka source kafka: standby: group g assigns it no partition of frames"
    reasons = Reasons(["kafka source kafka: waiting for a partition assignment"])
    srv = HttpServer(HOST, 0, registry, reasons, Metrics(registry), notes=lambda: [standby])
    srv.start()
    try:
        status, _, body = _get(srv, "/readyz")
        assert status == 503 and "notes" not in json.loads(body)  # notes only say more on 200
        reasons.reasons = []
        status, _, body = _get(srv, "/readyz")
    finally:
        srv.stop()
    assert status == 200
    assert json.loads(body) == {"status": "ready", "notes": [standby]}


def test_unknown_path_is_404(server: HttpServer) -> None:
    status, _, body = _get(server, "/nope")
    assert status == 404
    assert json.loads(body)["paths"] == ["/metrics", "/healthz", "/readyz"]


def test_port_in_use_is_a_config_error_naming_the_port(registry: CollectorRegistry) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        srv = HttpServer(HOST, port, registry, lambda: [], Metrics(registry))
        with pytest.raises(ConfigError, match=rf"http\.port.*{port}"):
            srv.start()
        assert srv.port == 0
        srv.stop()  # harmless after a failed start


def test_stop_releases_the_port(registry: CollectorRegistry) -> None:
    srv = HttpServer(HOST, 0, registry, lambda: [], Metrics(registry))
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
    again = HttpServer(HOST, port, fresh, lambda: [], Metrics(fresh))
    again.start()
    try:
        assert again.port == port
    finally:
        again.stop()


def _connect_back_to_back(port: int, count: int) -> list[socket.socket]:
    """Open ``count`` connections one after another without sending anything.

    Stops at the first connect that does not complete within 1 s: a full accept queue makes
    the kernel drop the SYN, and the client's first retransmit comes only after 1 s.
    """
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            opened.append(sock)
            sock.settimeout(1.0)
            try:
                sock.connect((HOST, port))
            except OSError:
                opened.pop().close()
                break
    except BaseException:
        for sock in opened:
            sock.close()
        raise
    return opened


def test_a_burst_of_idle_connections_is_accepted_and_health_still_answers(
    server: HttpServer,
) -> None:
    # With socketserver's backlog of 5 the accept queue overflows within a few connections
    # and the rest wait for SYN retransmits (200 took ~31 s).
    opened = _connect_back_to_back(server.port, 200)
    try:
        assert len(opened) == 200
        status, _, body = _get(server, "/healthz")
        assert status == 200
        assert json.loads(body) == {"status": "alive"}
    finally:
        for sock in opened:
            sock.close()


def test_the_listen_backlog_is_the_module_constant(server: HttpServer) -> None:
    assert server_module._REQUEST_QUEUE_SIZE >= 1024
    assert server._server is not None
    assert server._server.config.backlog == server_module._REQUEST_QUEUE_SIZE


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's struct tcp_info")
def test_the_kernel_holds_the_backlog_for_the_listening_socket(server: HttpServer) -> None:
    # For a listening socket Linux reports the accept-queue limit in tcpi_sacked (the u32
    # after tcpi_unacked, 28 bytes in), already capped at net.core.somaxconn.
    assert server._socket is not None
    info = server._socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
    (max_backlog,) = struct.unpack_from("I", info, 28)
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    assert max_backlog == min(server_module._REQUEST_QUEUE_SIZE, somaxconn)


def test_logs_the_bound_address_and_port_at_info(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    srv = HttpServer(HOST, 0, registry, lambda: [], Metrics(registry))
    with caplog.at_level(logging.INFO, logger="inspector.runtime.control.server"):
        srv.start()
    try:
        port = srv.port
    finally:
        srv.stop()
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert f"http: serving /metrics, /healthz, /readyz on {HOST}:{port}" in messages


def test_logs_an_ipv6_address_in_brackets(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    srv = HttpServer("::1", 0, registry, lambda: [], Metrics(registry))
    with caplog.at_level(logging.INFO, logger="inspector.runtime.control.server"):
        try:
            srv.start()
        except ConfigError:
            pytest.skip("cannot bind ::1 here")
    try:
        port = srv.port
    finally:
        srv.stop()
    assert f"http: serving /metrics, /healthz, /readyz on [::1]:{port}" in caplog.messages


def test_starting_the_server_keeps_the_applications_log_handlers(
    registry: CollectorRegistry, tmp_path: Path
) -> None:
    # uvicorn's default logging set-up replaces every root handler: the daemon's log file and
    # console would go silent (or a file be truncated) once HTTP starts.
    logfile = tmp_path / "daemon.log"
    handler = logging.FileHandler(logfile, mode="w")  # as the demo opens its log
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        logging.getLogger("inspector.test").warning("before the server")
        srv = HttpServer(HOST, 0, registry, lambda: [], Metrics(registry))
        srv.start()
        try:
            assert handler in root.handlers
            logging.getLogger("inspector.test").warning("after the server")
        finally:
            srv.stop()
    finally:
        root.removeHandler(handler)
        handler.close()
    text = logfile.read_text()
    assert "before the server" in text and "after the server" in text
