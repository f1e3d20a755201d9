"""Retained results over HTTP: list them, show their images, label them.

Routes (registered by :func:`inspector.runtime.api.build_app`):

* ``GET /v1/results?camera=&flagged=&label=&limit=&before=&after=``: newest first, one page;
* ``GET /v1/results/{frame_id}/detail``: one frame's record and its retained result message;
* ``GET /v1/results/{frame_id}/image?view=frame|overlay|mask``: one of its pictures;
* ``POST /v1/results/{frame_id}/label``: ``{"label", "kind", "note"}``, with the admin token.

Reads are open like ``/metrics`` unless ``http.read_token`` is set; then they need
``Authorization: Bearer`` with it (or with the admin token). With retention off, every route
answers 404 saying so.

**Frame ids in paths.** A frame id may hold ``/`` (``line1/cam2/000042``), ``?``, ``#`` and
``%`` (:func:`~inspector.runtime.ids.valid_frame_id`). The id is everything between
``/v1/results/`` and the route's last segment (``detail``, ``image``, ``label``): the routes
use a ``path`` parameter and the last segment decides the route, so an id ending in
``/image`` is still addressed without ambiguity. Clients percent-encode the id as one component
(``encodeURIComponent``: ``line1%2Fcam2%2F000042``); the server decodes the path before matching,
so a literal ``/`` works too, but only encoding carries ``?``, ``#``, ``%`` and dot segments
(which browsers and HTTP libraries otherwise resolve away). An id never names a file
(retained files are named by a hash of it), so ``../../etc/passwd`` is just an unknown frame.

Bodies are bounded: a write body over :data:`MAX_BODY_BYTES` is a 413 before it is parsed.

No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run time.
"""

import logging
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, BinaryIO, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, StringConstraints
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inspector.errors import InspectorError
from inspector.label_messages import LabelMessage
from inspector.messages import ResultMessage
from inspector.runtime.api_errors import documented, problem
from inspector.runtime.ids import MAX_ID_CHARS, Id, for_log, valid_frame_id
from inspector.runtime.labels import LabelMetrics, label_message, once_per_registry
from inspector.runtime.metrics import Metrics
from inspector.runtime.pacing import RateLimitedLog
from inspector.runtime.results_errors import MissingViewError, RetentionOffError, WritesOffError
from inspector.runtime.retention.reader import RetentionIndex
from inspector.runtime.retention.records import (
    MAX_KIND_CHARS,
    MAX_LIST_LIMIT,
    MAX_NOTE_CHARS,
    Label,
    RetainedFrame,
    UnknownFrameError,
    View,
)

log = logging.getLogger("inspector.runtime.api")

#: Largest request body a write route reads (a label is a few hundred bytes).
MAX_BODY_BYTES = 8 * 1024
#: Where bodies are bounded.
_BOUNDED_PREFIX = "/v1/"
#: Media types of the retained files, by suffix (an allow-list: files are named by the store).
_MEDIA_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".bmp": "image/bmp",
    ".tif": "image/tiff",
    ".webp": "image/webp",
    ".gif": "image/gif",
}
#: A retained picture never changes (its name is a hash of the id; the frame may go, never
#: change): private caches may keep it. ``sandbox``: never a document that runs anything.
_IMAGE_HEADERS = {
    "Cache-Control": "private, max-age=3600",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; sandbox",
}
_CHUNK = 64 * 1024

#: Returns the open retention index; ``None``: retention is off. Raises
#: :class:`~inspector.runtime.api_errors.DaemonStartingError` while it is not open yet.
RetentionProvider = Callable[[], RetentionIndex | None]


def _no_retention() -> RetentionIndex | None:
    return None


def _no_publisher(message: LabelMessage) -> None:
    """Labels are not published (Kafka off)."""


@dataclass(frozen=True)
class ResultsAccess:
    """What the results routes and the console read besides the control API.

    Attributes:
        retention: The retention index (see :data:`RetentionProvider`).
        publish: Hands a label to Kafka (never blocks); a no-op when Kafka is off.
        activity: Each camera's last result and recent rate (the console's tiles).
    """

    retention: RetentionProvider = _no_retention
    publish: Callable[[LabelMessage], None] = _no_publisher
    activity: Callable[[], list[Any]] = field(default=list)


def _checked_frame_id(text: str) -> str:
    if not valid_frame_id(text):
        raise ValueError(
            f"not a valid frame id: 1 to {MAX_ID_CHARS} printable characters without whitespace"
        )
    return text


#: A frame id in a path: the looser frame id rule, bounded before it is checked.
FrameId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS),
    AfterValidator(_checked_frame_id),
]


def _printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("must be printable: no control or format characters")
    return text


def _printable_lines(text: str) -> str:  # a note may have several lines
    if not text.replace("\n", "").replace("\t", "").isprintable():
        raise ValueError("must be printable text (newlines and tabs allowed)")
    return text


class LabelRequest(BaseModel):
    """``POST /v1/results/{frame_id}/label``: an operator's verdict on a retained frame."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    label: Label = Field(
        description="false_alarm: flagged but good; defect: flagged and defective; "
        "missed_defect: not flagged but defective"
    )
    kind: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=MAX_KIND_CHARS),
            AfterValidator(_printable),
        ]
        | None
    ) = Field(default=None, description="defect kind (defect, missed_defect only), e.g. scratch")
    note: (
        Annotated[
            str, StringConstraints(max_length=MAX_NOTE_CHARS), AfterValidator(_printable_lines)
        ]
        | None
    ) = Field(default=None, description="free text")


class RetainedResult(BaseModel):
    """One retained frame: its verdict, its label and which pictures it has."""

    model_config = ConfigDict(frozen=True)

    seq: int = Field(description="retained order; pass as before/after to page")
    frame_id: str
    camera_id: str
    score: float
    threshold: float
    is_anomalous: bool
    model_name: str
    captured_at: str | None
    processed_at: str
    retained_at: str
    label: Label | None
    kind: str | None
    note: str | None
    labelled_at: str | None
    exported_at: str | None
    views: list[View] = Field(description="the pictures it has: frame, overlay, mask")

    @classmethod
    def of(cls, frame: RetainedFrame) -> "RetainedResult":
        """The API's view of an index row (file names stay internal)."""
        views: list[View] = ["frame"]
        if frame.overlay_file is not None:
            views.append("overlay")
        if frame.mask_file is not None:
            views.append("mask")
        return cls(
            seq=frame.seq,
            frame_id=frame.frame_id,
            camera_id=frame.camera_id,
            score=frame.score,
            threshold=frame.threshold,
            is_anomalous=frame.is_anomalous,
            model_name=frame.model_name,
            captured_at=frame.captured_at,
            processed_at=frame.processed_at,
            retained_at=frame.retained_at,
            label=frame.label,
            kind=frame.label_kind,
            note=frame.note,
            labelled_at=frame.labelled_at,
            exported_at=frame.exported_at,
            views=views,
        )


class ResultsPage(BaseModel):
    """A page of retained frames, newest first."""

    items: list[RetainedResult]
    next_before: int | None = Field(
        description="pass as before for the next (older) page; null: this was the last"
    )


class ResultDetail(BaseModel):
    """One retained frame and its result message as published (mask data left out)."""

    frame: RetainedResult
    result: ResultMessage | None = Field(
        description="the retained result message; null if its file cannot be read"
    )


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


def _stream(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(_CHUNK):
            yield chunk


def _read_result(index: RetentionIndex, frame: RetainedFrame) -> ResultMessage | None:
    path = index.file_path(frame.result_file)
    if path is None:
        return None
    try:
        message = ResultMessage.from_json(path.read_bytes())
    except (OSError, ValueError) as exc:  # evicted meanwhile, or damaged: the row still shows
        log.warning("results: result of %s unreadable: %s", for_log(frame.frame_id), exc)
        return None
    return message.model_copy(update={"mask": None})  # the mask is its own picture


def add_results_routes(
    app: FastAPI, metrics: Metrics, access: ResultsAccess, bearer: Bearer
) -> None:
    """Register the results routes and the body bound on ``app`` (see the module)."""
    labels = once_per_registry(metrics.registry, LabelMetrics)
    app.add_middleware(BodyLimit)

    def retention() -> RetentionIndex:
        index = access.retention()
        if index is None:
            raise RetentionOffError(
                "retention.enabled is off: no frames are retained, so there are no results to "
                "list, show or label (set retention.enabled and retention.path)"
            )
        return index

    Index = Annotated[RetentionIndex, Depends(retention)]  # noqa: N806 - a type alias
    Reader = Depends(bearer.reader)  # noqa: N806 - a dependency
    Writer = Annotated[str, Depends(bearer.writer)]  # noqa: N806 - a type alias
    common = {
        401: "no or wrong bearer token",
        404: "retention is off, or no retained frame has this id",
        422: "an invalid id, query or body (the fields named)",
        503: "the daemon is starting",
    }
    reads = documented(common)

    @app.get("/v1/results", tags=["results"], responses=reads, dependencies=[Reader])
    def list_results(
        index: Index,
        camera: Id | None = None,
        flagged: bool | None = None,
        label: Literal["false_alarm", "defect", "missed_defect", "unlabelled"] | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
        before: Annotated[int | None, Query(ge=0)] = None,
        after: Annotated[int | None, Query(ge=0)] = None,
    ) -> ResultsPage:
        """Retained frames, newest first: ``before`` pages back, ``after`` polls for new ones.

        With ``after``, only frames retained after the one with that ``seq`` (the newest
        ``limit`` of them): what a live view polls with, keeping the largest ``seq`` it saw.
        """
        rows = index.list(camera=camera, flagged=flagged, label=label, limit=limit, before=before)
        items = [RetainedResult.of(r) for r in rows if after is None or r.seq > after]
        full = len(rows) == limit and after is None
        return ResultsPage(items=items, next_before=items[-1].seq if full and items else None)

    @app.get(
        "/v1/results/{frame_id:path}/detail",
        tags=["results"],
        responses=reads,
        dependencies=[Reader],
    )
    def result_detail(frame_id: FrameId, index: Index) -> ResultDetail:
        """One retained frame: its record and its result message (regions, latency...)."""
        frame = index.get(frame_id)
        if frame is None:
            raise _unknown(frame_id)
        return ResultDetail(frame=RetainedResult.of(frame), result=_read_result(index, frame))

    @app.get(
        "/v1/results/{frame_id:path}/image",
        tags=["results"],
        responses={
            **reads,
            200: {"content": {t: {} for t in sorted(set(_MEDIA_TYPES.values()))}},
        },
        response_class=StreamingResponse,
        dependencies=[Reader],
    )
    def result_image(frame_id: FrameId, index: Index, view: View = "frame") -> StreamingResponse:
        """One picture of a retained frame: the frame, its heat-map overlay or its mask."""
        if index.get(frame_id) is None:
            raise _unknown(frame_id)
        path = index.image_path(frame_id, view)
        if path is None or path.suffix not in _MEDIA_TYPES:
            raise MissingViewError(f"frame {for_log(frame_id)} has no {view} picture")
        try:
            handle = path.open("rb")  # open now: an eviction later cannot cut the answer short
        except OSError as exc:
            raise MissingViewError(f"frame {for_log(frame_id)} has no {view} picture") from exc
        size = os.fstat(handle.fileno()).st_size
        return StreamingResponse(
            _stream(handle),
            media_type=_MEDIA_TYPES[path.suffix],
            headers={**_IMAGE_HEADERS, "Content-Length": str(size)},
        )

    @app.post(
        "/v1/results/{frame_id:path}/label",
        tags=["results"],
        responses=documented(
            {**common, 403: "labels are off (no http.admin_token)", 413: "a body over 8 KiB"}
        ),
    )
    def label_result(
        frame_id: FrameId, body: LabelRequest, who: Writer, index: Index
    ) -> RetainedResult:
        """Label a retained frame (replacing its label); counted and sent to Kafka if on."""
        frame = index.label(frame_id, body.label, body.kind, body.note)
        labels.count(metrics, frame)
        log.info(
            "labels: %s labelled frame %s of camera %s %s",
            who,
            for_log(frame.frame_id),
            for_log(frame.camera_id),
            frame.label,
        )
        access.publish(label_message(frame))
        return RetainedResult.of(frame)


def _unknown(frame_id: str) -> InspectorError:
    return UnknownFrameError(f"no retained frame {for_log(frame_id)} (never retained, or evicted)")


__all__ = [
    "MAX_BODY_BYTES",
    "Bearer",
    "BodyLimit",
    "FrameId",
    "LabelRequest",
    "MissingViewError",
    "ResultDetail",
    "ResultsAccess",
    "ResultsPage",
    "RetainedResult",
    "RetentionOffError",
    "RetentionProvider",
    "WritesOffError",
    "add_results_routes",
]
