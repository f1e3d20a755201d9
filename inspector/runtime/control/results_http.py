"""The HTTP plumbing of the results routes: the body bound, the bearer checks, file answers.

* :class:`BodyLimit`: a write body over :data:`MAX_BODY_BYTES` is a 413 before it is parsed;
* :class:`Bearer`: the read token (when set) and the admin token, compared in constant time,
  refusals logged (rate-limited, escaped; the token never);
* :class:`OpenFileResponse`: a picture sent from a file opened by the route, always closed.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import BinaryIO

import anyio.to_thread
from fastapi import HTTPException, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inspector.runtime.control.api_errors import problem
from inspector.runtime.control.results_errors import WritesOffError
from inspector.runtime.ids import for_log
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import RateLimitedLog

log = logging.getLogger("inspector.runtime.control.api")

#: Largest request body a write route reads (a label is a few hundred bytes).
MAX_BODY_BYTES = 8 * 1024
#: Where bodies are bounded: the results routes (other routes are left as they are).
_BOUNDED_PREFIX = "/v1/results/"
_CHUNK = 64 * 1024


class BodyLimit:
    """ASGI middleware: a write body over ``limit`` bytes is a 413, before anything parses it.

    A declared ``Content-Length`` over the limit is refused unread; a body without one
    (chunked) is read up to the limit and refused past it, otherwise handed on as read.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse an oversized write body, or hand the request on with its body as read."""
        path = str(scope.get("path", ""))
        if (
            scope["type"] != "http"
            or scope.get("method") not in ("POST", "PUT", "PATCH")
            or not path.startswith(_BOUNDED_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        too_large = problem(413, f"the request body is over {self.limit} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await too_large(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunk = bytes(message.get("body", b""))
            size += len(chunk)
            if size > self.limit:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        await self.app(scope, replay, send)


class Bearer:
    """The bearer-token checks of the results routes and the console's data.

    Args:
        metrics: Unauthorized writes count in ``inspector_control_changes_total``.
        admin_token: Needed for writes (``None``: labels are off).
        read_token: Needed for reads when set (the admin token reads too).
    """

    def __init__(
        self, metrics: Metrics, admin_token: SecretStr | None, read_token: SecretStr | None
    ) -> None:
        self.metrics = metrics
        self._admin = admin_token.get_secret_value().encode() if admin_token else None
        self._readers = (
            [t.get_secret_value().encode() for t in (read_token, admin_token) if t is not None]
            if read_token is not None
            else None
        )
        self._scheme = HTTPBearer(auto_error=False)
        self._warn = RateLimitedLog(log, 10.0).warning

    @property
    def writes(self) -> bool:
        """Whether writes are possible (an admin token is set)."""
        return self._admin is not None

    @property
    def reads_guarded(self) -> bool:
        """Whether reads need a token."""
        return self._readers is not None

    def _refuse(self, request: Request, given: bool, token: str) -> HTTPException:
        who = request.client.host if request.client is not None else "unknown"
        self._warn(
            "results: %s %s %s refused: %s bearer token",
            who,
            request.method,
            for_log(request.url.path),
            "wrong" if given else "no",
        )
        return HTTPException(
            401,
            f"this needs Authorization: Bearer <{token}>",
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def reader(self, request: Request) -> None:
        """Dependency: nothing when reads are open or the token is right; else 401."""
        if self._readers is None:
            return
        credentials = await self._scheme(request)
        given = credentials.credentials.encode() if credentials is not None else b""
        # Every candidate compared, in constant time each: no early exit to time.
        if not any([secrets.compare_digest(given, t) for t in self._readers]):
            raise self._refuse(request, credentials is not None, "http.read_token")

    async def writer(self, request: Request) -> str:
        """Dependency: who writes (the client's address); 403 without an admin token, 401."""
        if self._admin is None:
            raise WritesOffError(
                "labels are off: set the token INSPECTOR_HTTP__ADMIN_TOKEN (http.admin_token)"
            )
        credentials: HTTPAuthorizationCredentials | None = await self._scheme(request)
        given = credentials.credentials.encode() if credentials is not None else b""
        if not secrets.compare_digest(given, self._admin):
            self.metrics.control_changes.labels(action="any", result="unauthorized").inc()
            raise self._refuse(request, credentials is not None, "http.admin_token")
        return request.client.host if request.client is not None else "unknown"


class OpenFileResponse(Response):
    """A file already opened, sent in chunks and closed however the answer ends.

    Opened by the route, so an eviction between the lookup and the answer cannot cut the
    answer short (the open file outlives its name); closed in ``finally``, so a client that
    leaves mid-answer (a page navigated away) leaves no open file behind, unlike a streamed
    generator that is never resumed. Reads run on a worker thread: the event loop never
    waits for the disk.
    """

    def __init__(self, handle: BinaryIO, media_type: str, headers: dict[str, str]) -> None:
        self.handle = handle
        size = os.fstat(handle.fileno()).st_size
        super().__init__(
            None, media_type=media_type, headers={**headers, "Content-Length": str(size)}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the headers, then the file in chunks; close it in any case."""
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            while chunk := await anyio.to_thread.run_sync(self.handle.read, _CHUNK):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            self.handle.close()


__all__ = ["MAX_BODY_BYTES", "Bearer", "BodyLimit", "OpenFileResponse"]
