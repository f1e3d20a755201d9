"""Retained results over HTTP: list them, show their images, label them.

Routes (registered by :func:`inspector.runtime.control.api.build_app`):

* ``GET /v1/results?camera=&flagged=&label=&limit=&before=&after=``: newest first, one page;
* ``GET /v1/results/{frame_id}/detail``: one frame's record and its retained result message;
* ``GET /v1/results/{frame_id}/image?view=frame|overlay|mask``: one of its pictures;
* ``POST /v1/results/{frame_id}/label``: ``{"label", "kind", "note"}``, with the admin token;
* ``DELETE /v1/results/{frame_id}/label``: remove its label (idempotent), with the admin token;
* ``GET /v1/cameras/{camera_id}/what-if?image_threshold=&limit=``: what another image threshold
  would flag, miss and catch over the camera's retained frames (:mod:`.what_if`).

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

Bodies are bounded: a write body over 8 KiB is a 413 before it is parsed
(:mod:`inspector.runtime.control.results_http`).

No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run time.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query
from pydantic import AfterValidator, StringConstraints, WithJsonSchema

from inspector.errors import InspectorError
from inspector.label_messages import LabelMessage
from inspector.messages import ResultMessage
from inspector.runtime.control.api_errors import documented
from inspector.runtime.control.labels import (
    LabelMetrics,
    clear_message,
    label_message,
    once_per_registry,
)
from inspector.runtime.control.results_errors import (
    MissingViewError,
    NoRetainedFramesError,
    RetentionOffError,
)
from inspector.runtime.control.results_http import Bearer, BodyLimit, OpenFileResponse
from inspector.runtime.control.results_models import (
    LabelRequest,
    ResultDetail,
    ResultsPage,
    RetainedResult,
)
from inspector.runtime.control.what_if import DEFAULT_FRAMES as DEFAULT_WHAT_IF_FRAMES
from inspector.runtime.control.what_if import MAX_FRAMES as MAX_WHAT_IF_FRAMES
from inspector.runtime.control.what_if import WhatIf, what_if
from inspector.runtime.ids import MAX_ID_CHARS, Id, for_log, valid_frame_id
from inspector.runtime.metrics import Metrics
from inspector.runtime.retention.reader import RetentionIndex
from inspector.runtime.retention.records import (
    MAX_LIST_LIMIT,
    MAX_SEQ,
    RetainedFrame,
    UnknownFrameError,
    View,
    utc_text,
)

log = logging.getLogger("inspector.runtime.control.api")

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

#: Returns the open retention index; ``None``: retention is off. Raises
#: :class:`~inspector.runtime.control.api_errors.DaemonStartingError` while it is not open yet.
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
        good_sample_rate: ``retention.good_sample_rate`` (the what-if's estimates).
    """

    retention: RetentionProvider = _no_retention
    publish: Callable[[LabelMessage], None] = _no_publisher
    activity: Callable[[], list[Any]] = field(default=list)
    good_sample_rate: float = 0.0


def _checked_frame_id(text: str) -> str:
    if not valid_frame_id(text):
        raise ValueError(
            f"not a valid frame id: 1 to {MAX_ID_CHARS} printable characters without whitespace"
        )
    return text


#: A frame id in a path: the looser frame id rule, bounded before it is checked. The published
#: schema carries the rule as a pattern (which cannot say "printable"; the daemon checks that).
FrameId = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_CHARS),
    AfterValidator(_checked_frame_id),
    WithJsonSchema(
        {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_ID_CHARS,
            "pattern": r"^[^\s\x00-\x1f\x7f-\x9f\ufffd]+$",
            "description": "the producer's frame id, percent-encoded as one path component",
        }
    ),
]


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

    @app.get(
        "/v1/cameras/{camera_id}/what-if",
        tags=["results"],
        responses=documented({**common, 404: "retention is off, or no retained frame of it"}),
        dependencies=[Reader],
    )
    def threshold_what_if(
        camera_id: Id,
        index: Index,
        image_threshold: Annotated[float, Query(ge=0.0, le=1.0, allow_inf_nan=False)],
        limit: Annotated[int, Query(ge=1, le=MAX_WHAT_IF_FRAMES)] = DEFAULT_WHAT_IF_FRAMES,
    ) -> WhatIf:
        """What ``image_threshold`` would do over the camera's newest retained frames.

        Flagged, caught and missed frames and the rates, beside the threshold it runs at now,
        over its ``limit`` newest retained frames; nothing is changed.
        """
        rows = index.recent_scores(camera_id, limit)
        if not rows:
            raise NoRetainedFramesError(
                f"camera {for_log(camera_id)} has no retained frames to judge a threshold on"
            )
        return what_if(camera_id, rows, image_threshold, access.good_sample_rate)

    @app.get("/v1/results", tags=["results"], responses=reads, dependencies=[Reader])
    def list_results(
        index: Index,
        camera: Id | None = None,
        flagged: bool | None = None,
        label: Literal["false_alarm", "defect", "missed_defect", "unlabelled"] | None = None,
        limit: Annotated[int, Query(ge=1, le=MAX_LIST_LIMIT)] = 50,
        before: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
        after: Annotated[int | None, Query(ge=0, le=MAX_SEQ)] = None,
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
        response_class=OpenFileResponse,
        status_code=200,  # its class takes no status: OpenAPI cannot read it from there
        dependencies=[Reader],
    )
    def result_image(frame_id: FrameId, index: Index, view: View = "frame") -> OpenFileResponse:
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
        return OpenFileResponse(handle, _MEDIA_TYPES[path.suffix], _IMAGE_HEADERS)

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

    @app.delete(
        "/v1/results/{frame_id:path}/label",
        tags=["results"],
        responses=documented({**common, 403: "labels are off (no http.admin_token)"}),
    )
    def clear_result_label(frame_id: FrameId, who: Writer, index: Index) -> RetainedResult:
        """Remove a retained frame's label: it is unlabelled, and evictable, again.

        Idempotent: a frame without a label is answered as it is, and nothing is counted or
        sent. A removed label is counted and, with Kafka on, sent as an ``inspector.label/v1``
        message with ``"action": "clear"`` and ``"label": null``.
        """
        frame, before = index.clear_label(frame_id)
        if before is None:
            return RetainedResult.of(frame)
        labels.count_clear(metrics, frame)
        log.info(
            "labels: %s removed label %s of frame %s of camera %s",
            who,
            before.label,
            for_log(frame.frame_id),
            for_log(frame.camera_id),
        )
        access.publish(clear_message(frame, utc_text(index.clock())))
        return RetainedResult.of(frame)


def _unknown(frame_id: str) -> InspectorError:
    return UnknownFrameError(f"no retained frame {for_log(frame_id)} (never retained, or evicted)")


__all__ = [
    "Bearer",
    "FrameId",
    "LabelRequest",
    "ResultDetail",
    "ResultsAccess",
    "ResultsPage",
    "RetainedResult",
    "RetentionProvider",
    "add_results_routes",
]
