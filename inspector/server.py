"""One HTTP port for ``/metrics``, ``/healthz`` and ``/readyz``.

Standard library server in a daemon thread: scrapes and probes are a handful of requests per
second, not worth a web framework.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from inspector.errors import ConfigError
from inspector.metrics import Metrics

log = logging.getLogger(__name__)

#: Returns why the daemon is not ready; an empty list means ready.
Readiness = Callable[[], list[str]]


class HealthServer:
    """Serves metrics and health probes.

    Args:
        host: Listen address.
        port: Listen port; 0 picks a free one (see :attr:`port`).
        registry: Registry exposed on ``/metrics``.
        readiness: Reasons for not being ready (``/readyz`` is 200 when empty, else 503).
        metrics: ``inspector_ready`` follows every readiness check.
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
        self.registry = registry
        self.readiness = readiness
        self.metrics = metrics
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (0 before :meth:`start`)."""
        return self._server.server_address[1] if self._server else 0

    def start(self) -> None:
        """Bind and serve in a daemon thread.

        Raises:
            ConfigError: The port is taken or the address cannot be bound.
        """
        handler = _make_handler(self)
        try:
            self._server = ThreadingHTTPServer((self.host, self.requested_port), handler)
        except OSError as exc:
            raise ConfigError(
                f"http.port: cannot listen on {self.host}:{self.requested_port} ({exc.strerror}); "
                "pick a free port or stop the other process"
            ) from exc
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="inspector-http", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)


def _make_handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, encoder(server.registry), content_type)
            elif path == "/healthz":
                self._json(200, {"status": "alive"})
            elif path == "/readyz":
                reasons = server.readiness()
                server.metrics.ready.set(0 if reasons else 1)
                if reasons:
                    self._json(503, {"status": "not ready", "reasons": reasons})
                else:
                    self._json(200, {"status": "ready"})
            else:
                self._json(
                    404,
                    {"error": f"no such path {path}", "paths": ["/metrics", "/healthz", "/readyz"]},
                )

        def _json(self, code: int, body: dict[str, object]) -> None:
            self._send(code, json.dumps(body).encode(), "application/json")

        def _send(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("http: " + format, *args)

    return Handler
