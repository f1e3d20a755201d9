"""How the daemon's HTTP application answers a failure: one table, one renderer, one last resort.

Routes raise what went wrong (:mod:`inspector.runtime.control.errors`, the intake's and the
model set's errors) and never catch it: :data:`STATUSES` maps each kind to its status in one
place, :func:`install_error_handlers` registers the handlers on the app. An invalid request is
a 422 whose body names the fields but never echoes the input (a ``NaN`` cannot be written as
JSON, a megabyte of hostile text must not be sent back). Anything else is a bug: a last-resort
middleware logs it as one escaped line naming the route and the exception, and answers 500 with
a :class:`Problem`, so no request, however hostile, writes a traceback to the daemon's log.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inspector.errors import ConfigError, InspectorError, ModelParityError, NotTriggerableError
from inspector.logs import escape_controls
from inspector.runtime.control.errors import (
    ModelSetupError,
    NoShadowError,
    RecipeError,
    ShuttingDownError,
    SourceSetupError,
    UnknownCameraError,
)
from inspector.runtime.control.results_errors import (
    MissingViewError,
    NoRetainedFramesError,
    RetentionOffError,
    WritesOffError,
)
from inspector.runtime.intake import DuplicateSourceError, UnknownSourceError
from inspector.runtime.models import ModelInUseError, UnknownModelError
from inspector.runtime.retention.records import RetentionRequestError, UnknownFrameError

log = logging.getLogger("inspector.runtime.control.api")

#: Longest piece of a client's text (a field name, a message) an answer or a log line repeats.
_ECHO_CHARS = 200
#: Field errors listed in one 422 at most (a hostile body can have thousands).
_MAX_FIELD_ERRORS = 20


class DaemonStartingError(InspectorError):
    """The daemon's pipeline does not run yet: the control API has nothing to change."""


#: Each refusal's status; an exception takes the entry of its nearest listed class. Unlisted
#: exceptions are bugs: 500, through the last resort.
STATUSES: Mapping[type[Exception], int] = {
    UnknownSourceError: 404,
    UnknownModelError: 404,
    UnknownCameraError: 404,
    UnknownFrameError: 404,  # never retained, or evicted
    MissingViewError: 404,
    NoRetainedFramesError: 404,  # a what-if about a camera with nothing retained
    RetentionOffError: 404,  # retention.enabled is off: the message says so
    WritesOffError: 403,  # labels without http.admin_token: no token could help
    DuplicateSourceError: 409,
    ModelInUseError: 409,
    NotTriggerableError: 409,  # a ConfigError: the source as configured takes no triggers
    NoShadowError: 409,  # a promotion without a shadow, a rollback without a promotion
    SourceSetupError: 422,
    ModelSetupError: 422,
    ModelParityError: 422,  # its probe-set scores moved: the message names the difference
    RecipeError: 422,
    RetentionRequestError: 422,  # a label, kind, note, view or limit the store refuses
    ConfigError: 422,  # a setting at fault; the message names its key
    ShuttingDownError: 503,
    DaemonStartingError: 503,
}


class Problem(BaseModel):
    """An error answer: what went wrong and, where it helps, what to do."""

    error: str = Field(description="what went wrong, naming the field or id at fault")


class FieldProblem(BaseModel):
    """One invalid field of a request."""

    loc: list[str | int] = Field(description="where: body, path or query, then the field path")
    msg: str = Field(description="what is wrong with it")
    type: str = Field(description="pydantic's error type, e.g. finite_number")


class ValidationProblem(Problem):
    """A 422: the request's invalid fields (the input itself is never echoed).

    A request that is valid but cannot be carried out (a source that cannot start) is a 422
    too, with ``error`` alone.
    """

    errors: list[FieldProblem] = Field(
        default=[], description=f"the invalid fields, the first {_MAX_FIELD_ERRORS} at most"
    )


def documented(statuses: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route: each status with its description and body model."""
    return {
        status: {
            "model": ValidationProblem if status == 422 else Problem,
            "description": description,
        }
        for status, description in statuses.items()
    }


def status_of(exc: BaseException) -> int | None:
    """The status :data:`STATUSES` gives ``exc`` (its nearest listed class), ``None``: a bug."""
    for cls in type(exc).__mro__:
        if cls in STATUSES:
            return STATUSES[cls]
    return None


def problem(status: int, error: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """A :class:`Problem` answer."""
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def _field_problem(error: Mapping[str, Any]) -> FieldProblem:
    loc = [
        part if isinstance(part, int) else escape_controls(str(part), 64)
        for part in error.get("loc", ())
    ]
    return FieldProblem(
        loc=loc,
        msg=escape_controls(str(error.get("msg", "invalid")), _ECHO_CHARS),
        type=escape_controls(str(error.get("type", "invalid")), 64),
    )


def invalid_request(errors: Sequence[Mapping[str, Any]]) -> JSONResponse:
    """The 422 for a request's invalid fields: named, explained, the input left out."""
    fields = [_field_problem(e) for e in errors[:_MAX_FIELD_ERRORS]]
    said = "; ".join(f"{'.'.join(map(str, f.loc))}: {f.msg}" for f in fields[:3])
    more = len(errors) - min(len(errors), 3)
    error = f"{said} (and {more} more)" if more else said
    body = ValidationProblem(error=error or "invalid request", errors=fields)
    return JSONResponse(body.model_dump(mode="json"), status_code=422)


def route_of(scope: Scope) -> str:
    """The request's route template (``/v1/sources/{source_id}``), or its escaped path."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    if isinstance(template, str):
        return template
    return escape_controls(str(scope.get("path", "?")), _ECHO_CHARS)


def _report_bug(scope: Scope, exc: BaseException) -> JSONResponse:
    """Log a bug as one escaped line (no traceback) and say so with a 500."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    log.error(
        "%s %s failed: %s%s: %s; answered 500 (a bug: report it with this line)",
        scope.get("method", "?"),
        route_of(scope),
        type(exc).__name__,
        where,
        escape_controls(str(exc), _ECHO_CHARS),
    )
    return problem(500, f"internal error ({type(exc).__name__}): the daemon's log has the details")


class _LastResort:
    """ASGI middleware: any exception a request raises becomes a logged line and a 500.

    Starlette's own handler for ``Exception`` answers too but then re-raises, so the server
    logs a traceback; this middleware sits inside it and ends the exception.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:  # the last resort: a bug must not reach the server's log
            answer = _report_bug(scope, exc)
            if not started:  # otherwise the client sees the answer cut short
                await answer(scope, receive, send)


def install_error_handlers(app: FastAPI) -> None:
    """Register the status table, the 422 renderer and the last resort on ``app``."""

    async def refused(request: Request, exc: Exception) -> JSONResponse:
        status = status_of(exc)
        if status is None:  # an InspectorError no table entry expects: a bug
            return _report_bug(request.scope, exc)
        return problem(status, escape_controls(str(exc), 10 * _ECHO_CHARS))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        # Registered for RequestValidationError alone; the check only narrows the type.
        return invalid_request(exc.errors() if isinstance(exc, RequestValidationError) else [])

    app.add_exception_handler(InspectorError, refused)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_middleware(_LastResort)
