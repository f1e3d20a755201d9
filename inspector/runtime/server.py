"""One HTTP port for ``/metrics``, ``/healthz`` and ``/readyz``.

prometheus_client's own threading WSGI server (``wsgiref`` with a thread per request) in a
daemon thread: scrapes and probes are a handful of requests per second, not worth a web
framework. Unlike prometheus_client's ``start_wsgi_server`` it gets a real listen backlog (see
:data:`_REQUEST_QUEUE_SIZE`), a bounded stop latency and errors naming the config keys.
``/metrics`` is prometheus_client's own WSGI app, so gzip (``Accept-Encoding: gzip``),
OpenMetrics (``Accept: application/openmetrics-text``) and ``?name[]=`` filtering work as
with any Prometheus client.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import threading
from collections.abc import Callable, Iterable
from typing import cast
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client import exposition as _exposition
from prometheus_client.exposition import ThreadingWSGIServer

from inspector.errors import ConfigError
from inspector.runtime.metrics import Metrics

log = logging.getLogger(__name__)

#: Returns why the daemon is not ready; an empty list means ready.
Readiness = Callable[[], list[str]]

_PATHS = ("/metrics", "/healthz", "/readyz")
#: How often the serve loop checks for :meth:`HealthServer.stop` (bounds the stop latency).
_POLL_INTERVAL_S = 0.1
#: Listen backlog. socketserver's default of 5 makes the kernel drop SYNs as soon as a burst
#: of connections (scrapers, probes, a client opening many at once) outruns the accept loop,
#: and each dropped SYN costs the client a 1 s, 3 s, 7 s... retransmit: 200 back-to-back
#: connections took ~31 s. The kernel caps this at ``net.core.somaxconn``.
_REQUEST_QUEUE_SIZE = 1024

# prometheus_client's address-family choice (IPv6 for IPv6 literals and names that resolve
# only to IPv6). It is private and unannotated there, so give it its signature here.
_get_best_family = cast(
    Callable[[str, int], tuple[socket.AddressFamily, str]], _exposition._get_best_family
)


class _Server(ThreadingWSGIServer):
    # ThreadingWSGIServer already uses daemon request threads (a stuck client never holds the
    # process open at exit); only the backlog is too small for bursts.
    request_queue_size = _REQUEST_QUEUE_SIZE


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        # Probes every few seconds would flood stderr; keep them for debugging only.
        log.debug("http %s: " + format, self.address_string(), *args)


class HealthServer:
    """Serves metrics and health probes on one port.

    ``/readyz`` calls ``readiness`` on every request and sets the ``inspector_ready`` gauge of
    ``metrics`` to match the answer (1 ready, 0 not), so the gauge is fresh whenever a probe or
    a scrape-triggered check runs; the daemon's main loop also refreshes it.

    Args:
        host: Listen address (IPv4 or IPv6 literal, or a host name).
        port: Listen port; 0 picks a free one (see :attr:`port`).
        registry: Registry exposed on ``/metrics``.
        readiness: Reasons for not being ready (``/readyz`` is 200 when empty, else 503).
        metrics: Its ``ready`` gauge follows every readiness check.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: Readiness,
        metrics: Metrics,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.readiness = readiness
        self.metrics = metrics
        self._metrics_app = make_wsgi_app(registry)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when 0 was requested; 0 when not serving)."""
        if self._server is None:
            return 0
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            ConfigError: The port is taken (names ``http.port``) or the host cannot be bound
                (names ``http.host``).
        """
        if self._server is not None:
            return
        host, port = self.host, self.requested_port

        class Server(_Server):
            # Per-instance family: HTTPServer defaults to IPv4, which cannot bind "::".
            address_family = _address_family(host, port)

        try:
            server = make_server(host, port, self.app, Server, _QuietHandler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"http.port: port {port} on {host} is already in use; stop the other "
                    "process or pick another port (INSPECTOR_HTTP__PORT)"
                ) from exc
            raise ConfigError(
                f"http.host/http.port: cannot listen on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            name="inspector-http",
            daemon=True,
        )
        self._thread.start()
        # The address and port actually bound (the ephemeral one when 0 was asked for), so
        # operators can tell from the log where to scrape and probe.
        log.info("http: serving %s on %s", ", ".join(_PATHS), _format_address(server))

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        """The WSGI application (usable without a socket, e.g. in tests)."""
        path = environ.get("PATH_INFO", "") or "/"
        if path == "/metrics":
            return cast(Iterable[bytes], self._metrics_app(environ, start_response))
        if environ.get("REQUEST_METHOD", "GET") != "GET":
            return _json(start_response, "405 Method Not Allowed", {"error": "use GET"})
        if path == "/healthz":
            return _json(start_response, "200 OK", {"status": "alive"})
        if path == "/readyz":
            reasons = self._check_readiness()
            self.metrics.ready.set(0 if reasons else 1)
            if reasons:
                body = {"status": "not ready", "reasons": reasons}
                return _json(start_response, "503 Service Unavailable", body)
            return _json(start_response, "200 OK", {"status": "ready"})
        return _json(
            start_response, "404 Not Found", {"error": f"no such path {path}", "paths": _PATHS}
        )

    def _check_readiness(self) -> list[str]:
        # A bug in a readiness check must read as "not ready" with its reason, not as a 500
        # that a load balancer cannot tell from a dead process.
        try:
            return [str(reason) for reason in self.readiness()]
        except Exception as exc:
            log.exception("readiness check failed")
            return [f"readiness check failed: {type(exc).__name__}: {exc}"]


def _json(start_response: StartResponse, status: str, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(data))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [data]


def _address_family(host: str, port: int) -> socket.AddressFamily:
    """IPv6 for IPv6 addresses and names that only resolve to IPv6, IPv4 otherwise.

    Only the family of prometheus_client's choice is used: binding ``host`` itself (not the
    address it resolved to) keeps an IPv6 scope (``fe80::1%eth0``) that the resolved address
    drops.
    """
    try:
        return _get_best_family(host, port)[0]
    except (OSError, UnicodeError):
        # Let bind() report the unresolvable host with its own message.
        return socket.AF_INET


def _format_address(server: _Server) -> str:
    """``host:port`` of the bound socket, with IPv6 hosts in brackets (``[::]:9108``)."""
    host, port = str(server.server_address[0]), int(server.server_address[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["HealthServer", "Readiness"]
