"""One HTTP port for ``/metrics``, ``/healthz``, ``/readyz`` and the control API.

The application is :func:`inspector.runtime.control.api.build_app`; uvicorn serves it on a daemon
thread of its own (the pipeline's threads never wait for HTTP). The socket is bound here, not
by uvicorn, so a taken port or a bad host is a :class:`~inspector.errors.ConfigError` naming
the config key (uvicorn would exit the process) and IPv6 hosts keep their scope.
"""

from __future__ import annotations

import errno
import logging
import socket
import threading
from collections.abc import Callable
from typing import cast

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client import exposition as _exposition
from pydantic import SecretStr

from inspector.errors import ConfigError
from inspector.runtime.control.api import (
    NO_RESULTS,
    PROBE_PATHS,
    ControlProvider,
    Readiness,
    ReadinessNotes,
    build_app,
)
from inspector.runtime.control.api_results import ResultsAccess
from inspector.runtime.metrics import Metrics

log = logging.getLogger(__name__)

#: Listen backlog. A small one (socketserver's default is 5) makes the kernel drop SYNs as
#: soon as a burst of connections (scrapers, probes, a client opening many at once) outruns
#: the accept loop, and each dropped SYN costs the client a retransmit timeout of a second or
#: more. The kernel caps this at ``net.core.somaxconn``.
_REQUEST_QUEUE_SIZE = 1024
#: How long :meth:`HttpServer.stop` waits for requests in progress.
_STOP_TIMEOUT_S = 5.0

# prometheus_client's address-family choice (IPv6 for IPv6 literals and names that resolve
# only to IPv6). It is private and unannotated there, so give it its signature here.
_get_best_family = cast(
    Callable[[str, int], tuple[socket.AddressFamily, str]], _exposition._get_best_family
)


class HttpServer:
    """Serves metrics, health probes and the control API on one port.

    ``/readyz`` calls ``readiness`` on every request and sets the ``inspector_ready`` gauge of
    ``metrics`` to match the answer (1 ready, 0 not), so the gauge is fresh whenever a probe or
    a scrape-triggered check runs; the daemon's main loop also refreshes it.

    Args:
        host: Listen address (IPv4 or IPv6 literal, or a host name).
        port: Listen port; 0 picks a free one (see :attr:`port`).
        registry: Registry exposed on ``/metrics``.
        readiness: Reasons for not being ready (``/readyz`` is 200 when empty, else 503).
        metrics: Its ``ready`` gauge follows every readiness check.
        admin_token: Turns the control API on (see :mod:`inspector.runtime.control.api`).
        control: The daemon's control once its pipeline runs.
        notes: What a 200 from ``/readyz`` adds as ``notes`` (e.g. a Kafka standby).
        read_token: Guards reads of results and the console's data when set.
        results: What the results routes and the operator console read.
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        readiness: Readiness,
        metrics: Metrics,
        *,
        admin_token: SecretStr | None = None,
        control: ControlProvider = lambda: None,
        notes: ReadinessNotes = lambda: [],
        read_token: SecretStr | None = None,
        results: ResultsAccess = NO_RESULTS,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.app = build_app(
            registry,
            readiness,
            metrics,
            admin_token=admin_token,
            control=control,
            notes=notes,
            read_token=read_token,
            results=results,
        )
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one when 0 was requested; 0 when not serving)."""
        if self._socket is None:
            return 0
        return int(self._socket.getsockname()[1])

    def start(self) -> None:
        """Bind and serve on a daemon thread.

        Raises:
            ConfigError: The port is taken (names ``http.port``) or the host cannot be bound
                (names ``http.host``).
        """
        if self._server is not None:
            return
        sock = _bind(self.host, self.requested_port)
        config = uvicorn.Config(
            self.app,
            # None: uvicorn must not run logging.config.dictConfig, which removes and closes
            # every handler of the root logger (the daemon's own log handlers among them). Its
            # loggers then propagate to the daemon's handlers, at WARNING.
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            backlog=_REQUEST_QUEUE_SIZE,
            timeout_graceful_shutdown=int(_STOP_TIMEOUT_S),
        )
        server = uvicorn.Server(config)
        started = threading.Event()

        def serve() -> None:
            # uvicorn installs no signal handlers off the main thread: the daemon keeps its own.
            server.run(sockets=[sock])

        self._socket, self._server = sock, server
        self._thread = threading.Thread(target=serve, name="inspector-http", daemon=True)
        self._thread.start()
        # Serving once uvicorn says it started (or gave up): probes right after start() work.
        while not server.started and self._thread.is_alive():
            started.wait(0.01)
        # The address and port actually bound (the ephemeral one when 0 was asked for), so
        # operators can tell from the log where to scrape and probe.
        log.info("http: serving %s on %s", ", ".join(PROBE_PATHS), _format_address(sock))

    def stop(self) -> None:
        """Stop serving and release the port (idempotent)."""
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(_STOP_TIMEOUT_S + 1.0)
            self._thread = None
        sock, self._socket = self._socket, None
        if sock is not None:
            sock.close()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(_address_family(host, port), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sock.family == socket.AF_INET6 and host in ("::", ""):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(_REQUEST_QUEUE_SIZE)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"http.port: port {port} on {host} is already in use; stop the other "
                "process or pick another port (INSPECTOR_HTTP__PORT)"
            ) from exc
        raise ConfigError(
            f"http.host/http.port: cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    return sock


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


def _format_address(sock: socket.socket) -> str:
    """``host:port`` of the bound socket, with IPv6 hosts in brackets (``[::]:9108``)."""
    address = sock.getsockname()
    host, port = str(address[0]), int(address[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


__all__ = ["HttpServer", "Readiness"]
