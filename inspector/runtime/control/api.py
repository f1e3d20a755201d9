"""The daemon's HTTP application: probes, ``/metrics`` and the control API under ``/v1/``.

FastAPI, so request bodies are validated by the same pydantic models as the YAML file (a bad
field is a 422 naming it) and ``/v1/openapi.json`` is generated from them, never written by
hand. ``/metrics`` is prometheus_client's own ASGI app (gzip, OpenMetrics and ``name[]``
filtering as with any Prometheus client).

The control API is on only when ``http.admin_token`` is set (otherwise ``/v1/`` answers 404);
reads are open like ``/metrics``, writes need ``Authorization: Bearer <token>`` (compared in
constant time; a missing or wrong token is a 401 and is counted and logged, the token never).
Every id, in a body or a path, follows the one id rule (:data:`inspector.runtime.ids.Id`).
Routes raise what went wrong and catch nothing: :mod:`.api_errors` maps it to a status in one
table, renders 422s without echoing the input and turns any bug into a 500 with one escaped log
line, never a traceback.

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
run time. The control routes' dependencies (:data:`Control`, :data:`Operator`) are module-level
and find the daemon's control and token on ``app.state``, so the routes of each resource are
registered by a function of their own.
"""

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, make_asgi_app
from pydantic import Field, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inspector import __version__
from inspector.logs import escape_controls
from inspector.runtime.config import SourceConfig
from inspector.runtime.control.api_errors import (
    DaemonStartingError,
    documented,
    install_error_handlers,
    problem,
)
from inspector.runtime.control.api_results import ResultsAccess, add_results_routes
from inspector.runtime.control.console import add_console_routes
from inspector.runtime.control.line import LineControl, ModelState, NewModel, SourceState
from inspector.runtime.control.promotion import Promotion
from inspector.runtime.control.results_http import Bearer
from inspector.runtime.ids import Id
from inspector.runtime.metrics import Metrics
from inspector.runtime.recipes import CameraRecipe

log = logging.getLogger(__name__)

#: Returns why the daemon is not ready; an empty list means ready.
Readiness = Callable[[], list[str]]
#: Returns what a ready daemon's ``/readyz`` adds as ``notes`` (e.g. a Kafka standby).
ReadinessNotes = Callable[[], list[str]]
#: The daemon's control, ``None`` until its pipeline runs.
ControlProvider = Callable[[], LineControl | None]

PROBE_PATHS = ("/metrics", "/healthz", "/readyz")
#: Without retention, labels or the console's live data (as a server built without them).
NO_RESULTS = ResultsAccess()
#: Paths under /v1/ that answer without the control API (results and the console's data).
_OWN_PATHS = ("/v1/results", "/v1/console/")
_NO_STORE = {"Cache-Control": "no-store"}
#: The control API's bearer scheme (checked by :func:`_operator`, not by FastAPI).
_BEARER = HTTPBearer(auto_error=False)


class _MetricsApp:
    """prometheus_client's ASGI app as a route endpoint.

    A class instance, because Starlette wraps a plain function as a request handler.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._app = make_asgi_app(registry)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app(scope, receive, send)


def build_app(
    registry: CollectorRegistry,
    readiness: Readiness,
    metrics: Metrics,
    *,
    admin_token: SecretStr | None = None,
    control: ControlProvider = lambda: None,
    notes: ReadinessNotes = lambda: [],
    read_token: SecretStr | None = None,
    results: ResultsAccess = NO_RESULTS,
) -> FastAPI:
    """The ASGI application the daemon serves.

    Args:
        registry: Exposed on ``/metrics``.
        readiness: Reasons for not being ready (``/readyz``); its answer also sets the
            ``inspector_ready`` gauge.
        metrics: The ready gauge and the control API's counters.
        admin_token: Enables the control API; writes must present it.
        control: The running daemon's control (``None`` while starting: ``/v1/`` answers 503).
        notes: What a 200 from ``/readyz`` adds as ``notes`` (left out when empty).
        read_token: When set, reads of results and the console's data need it (or the
            admin token) as a bearer token.
        results: The retention index, the label publisher and the cameras' activity, for the
            results routes (``/v1/results``) and the operator console (``/``).
    """
    app = FastAPI(
        title="inspector",
        version=__version__,
        description="Health, metrics and the control API of the inspector daemon.",
        openapi_url="/v1/openapi.json" if admin_token is not None else None,
        docs_url=None,
        redoc_url=None,
    )
    # A route, not a mount: a mount answers "/metrics" with a redirect to "/metrics/".
    app.router.routes.append(Route("/metrics", _MetricsApp(registry), include_in_schema=False))

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"}, headers=_NO_STORE)

    @app.get("/readyz", include_in_schema=False)
    def readyz() -> JSONResponse:
        try:
            reasons = [str(reason) for reason in readiness()]
        except Exception as exc:  # a bug in a check reads as "not ready", never as a 500
            log.exception("readiness check failed")
            reasons = [f"readiness check failed: {type(exc).__name__}: {exc}"]
        metrics.ready.set(0 if reasons else 1)
        if reasons:
            body = {"status": "not ready", "reasons": reasons}
            return JSONResponse(body, status_code=503, headers=_NO_STORE)
        ready: dict[str, object] = {"status": "ready"}
        try:
            said = [str(note) for note in notes()]
        except Exception:  # a note is a detail: a bug in one must not turn ready into a 500
            log.exception("readiness notes failed")
            said = []
        if said:
            ready["notes"] = said
        return JSONResponse(ready, headers=_NO_STORE)

    @app.exception_handler(404)
    async def not_found(request: Request, exc: Exception) -> JSONResponse:
        path = request.url.path
        if path.startswith("/v1/") and admin_token is None and not path.startswith(_OWN_PATHS):
            error = "the control API is off: set the token INSPECTOR_HTTP__ADMIN_TOKEN to use it"
        else:  # the client's path, cut and escaped: an answer echoes no hostile text whole
            error = getattr(exc, "detail", None) or f"no such path {escape_controls(path, 200)}"
        return JSONResponse({"error": error, "paths": list(PROBE_PATHS)}, status_code=404)

    # Starlette's class, so that its own answers (405 with Allow) are Problems too.
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, str(exc.detail), exc.headers)

    # Before the error handlers: their last resort then also covers the body bound.
    bearer = Bearer(metrics, admin_token, read_token)
    add_results_routes(app, metrics, results, bearer)
    add_console_routes(app, metrics, results, bearer, control)
    install_error_handlers(app)

    if admin_token is not None:
        app.state.control_gate = _ControlGate(
            metrics, admin_token.get_secret_value().encode(), control
        )
        _add_source_routes(app)
        _add_model_routes(app)
        _add_camera_routes(app)
    return app


# --- the control API: who may change what, then the routes per resource ----------------------


@dataclass(frozen=True)
class _ControlGate:
    """What the control routes' dependencies need, kept on ``app.state.control_gate``."""

    metrics: Metrics
    token: bytes = field(repr=False)  # never in a log line or a traceback's locals
    control: ControlProvider


def _gate(request: Request) -> _ControlGate:
    gate: _ControlGate = request.app.state.control_gate
    return gate


def _running(request: Request) -> LineControl:
    """The running daemon's control; 503 while it starts."""
    found = _gate(request).control()
    if found is None:
        raise DaemonStartingError("the daemon is starting: try again once /readyz is 200")
    return found


def _operator(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> str:
    """Who asks for a change (the client's address); 401 without the right token."""
    gate = _gate(request)
    who = request.client.host if request.client is not None else "unknown"
    given = credentials.credentials.encode() if credentials is not None else b""
    if not secrets.compare_digest(given, gate.token):
        gate.metrics.control_changes.labels(action="any", result="unauthorized").inc()
        log.warning(
            "control: %s %s %s refused: %s bearer token",
            who,
            request.method,
            escape_controls(request.url.path, 200),
            "no" if credentials is None else "wrong",
        )
        raise HTTPException(
            401,
            "a write needs Authorization: Bearer <http.admin_token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return who


#: A control route's view of the running daemon (503 while it starts).
Control = Annotated[LineControl, Depends(_running)]
#: Who asks for a change, checked against ``http.admin_token`` (401 otherwise).
Operator = Annotated[str, Depends(_operator)]

# Statuses come from api_errors.STATUSES (the routes raise, never catch); these only document
# them in /v1/openapi.json.
_UNAVAILABLE = {503: "the daemon is starting or shutting down"}
_READ = documented({**_UNAVAILABLE, 404: "no such source", 422: "an invalid id"})
_WRITE = documented(
    {**_UNAVAILABLE, 401: "no or wrong bearer token", 404: "no such source", 422: "an invalid id"}
)


def _add_source_routes(app: FastAPI) -> None:
    """``/v1/sources``: list, add, remove, pause, resume and trigger sources."""

    @app.get("/v1/sources", tags=["sources"], responses=documented(_UNAVAILABLE))
    def list_sources(ctl: Control) -> list[SourceState]:
        """Every running source and its state."""
        return ctl.sources()

    @app.get("/v1/sources/{source_id}", tags=["sources"], responses=_READ)
    def get_source(source_id: Id, ctl: Control) -> SourceState:
        """One source."""
        return ctl.source(source_id)

    @app.post(
        "/v1/sources",
        status_code=201,
        tags=["sources"],
        responses={
            **_WRITE,
            **documented(
                {
                    409: "a source with this id runs already",
                    422: "invalid settings, or the source cannot start (the reason)",
                }
            ),
        },
    )
    def add_source(
        body: Annotated[SourceConfig, Field(discriminator="type")], ctl: Control, who: Operator
    ) -> SourceState:
        """Start one source (as in the YAML file's ``sources``) beside the running ones."""
        return ctl.add_source(body, who)

    @app.delete("/v1/sources/{source_id}", tags=["sources"], responses=_WRITE)
    def remove_source(source_id: Id, ctl: Control, who: Operator) -> SourceState:
        """Stop one source: its frames in flight finish, a Kafka source commits them."""
        return ctl.remove_source(source_id, who)

    @app.post("/v1/sources/{source_id}/pause", tags=["sources"], responses=_WRITE)
    def pause_source(source_id: Id, ctl: Control, who: Operator) -> SourceState:
        """Take no frames from one source (it stays connected)."""
        return ctl.pause_source(source_id, who)

    @app.post("/v1/sources/{source_id}/resume", tags=["sources"], responses=_WRITE)
    def resume_source(source_id: Id, ctl: Control, who: Operator) -> SourceState:
        """Take frames from a paused source again."""
        return ctl.resume_source(source_id, who)

    @app.post(
        "/v1/sources/{source_id}/trigger",
        tags=["sources"],
        responses={
            **_WRITE,
            **documented({409: "the source is not in software-trigger mode"}),
        },
    )
    def trigger_source(source_id: Id, ctl: Control, who: Operator) -> SourceState:
        """Take one frame now from a GenICam camera with ``trigger.mode: software``."""
        return ctl.trigger_source(source_id, who)


def _add_model_routes(app: FastAPI) -> None:
    """``/v1/models``: list, load and unload served models."""

    @app.get("/v1/models", tags=["models"], responses=documented(_UNAVAILABLE))
    def list_models(ctl: Control) -> list[ModelState]:
        """Every served model: the default first, with its memory and the cameras using it."""
        return ctl.model_states()

    @app.post(
        "/v1/models",
        status_code=201,
        tags=["models"],
        responses={
            **_WRITE,
            **documented(
                {
                    409: "a model of this name is served already",
                    422: "invalid body, or the checkpoint cannot be loaded (the reason)",
                }
            ),
        },
    )
    def add_model(body: NewModel, ctl: Control, who: Operator) -> ModelState:
        """Load, check and warm a checkpoint beside the served models (takes seconds)."""
        return ctl.add_model(body, who)

    @app.delete(
        "/v1/models/{name}",
        tags=["models"],
        responses={
            **_WRITE,
            **documented({404: "no such model", 409: "the default model, or a camera uses it"}),
        },
    )
    def remove_model(name: Id, ctl: Control, who: Operator) -> ModelState:
        """Stop serving a model that no camera's recipe names."""
        return ctl.remove_model(name, who)


def _add_camera_routes(app: FastAPI) -> None:
    """``/v1/cameras``: each camera's recipe, read, set and dropped."""

    @app.get("/v1/cameras", tags=["cameras"], responses=documented(_UNAVAILABLE))
    def list_recipes(ctl: Control) -> dict[str, CameraRecipe]:
        """Every camera's recipe, by camera id (``*``: cameras without their own)."""
        return ctl.recipes.all()

    @app.put(
        "/v1/cameras/{camera_id}",
        tags=["cameras"],
        responses={
            **documented({**_UNAVAILABLE, 401: "no or wrong bearer token"}),
            **documented(
                {
                    422: "invalid id or recipe, its model is not served, or its tiles are not "
                    "that model's input size"
                }
            ),
        },
    )
    def set_recipe(camera_id: Id, body: CameraRecipe, ctl: Control, who: Operator) -> CameraRecipe:
        """A camera's product recipe: model, thresholds, smallest defect, deadline, ROI, tiling.

        The switch happens between batches: frames already inferred keep their model.
        """
        return ctl.set_recipe(camera_id, body, who)

    @app.delete(
        "/v1/cameras/{camera_id}",
        tags=["cameras"],
        responses={**_WRITE, **documented({404: "the camera has no recipe"})},
    )
    def remove_recipe(camera_id: Id, ctl: Control, who: Operator) -> CameraRecipe:
        """Drop a camera's recipe (saved like a PUT): its frames then follow ``*``'s, if any.

        Returns the removed recipe.
        """
        return ctl.remove_recipe(camera_id, who)

    swap_answers = {
        **_WRITE,
        **documented(
            {
                404: "the camera has no recipe",
                409: "the camera's recipe has no shadow_model (rollback: no promotion to undo)",
                422: "an invalid id, or one of the two models is no longer served",
            }
        ),
    }

    @app.post("/v1/cameras/{camera_id}/promote", tags=["cameras"], responses=swap_answers)
    def promote(camera_id: Id, ctl: Control, who: Operator) -> Promotion:
        """Swap the camera's shadow and served models from the next batch, with the evidence."""
        return ctl.promote(camera_id, who)

    @app.post("/v1/cameras/{camera_id}/rollback", tags=["cameras"], responses=swap_answers)
    def rollback(camera_id: Id, ctl: Control, who: Operator) -> Promotion:
        """Undo the camera's last promotion (the same swap again), with the evidence since."""
        return ctl.promote(camera_id, who, rollback=True)
