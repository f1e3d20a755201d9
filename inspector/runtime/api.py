"""The daemon's HTTP application: probes, ``/metrics`` and the control API under ``/v1/``.

FastAPI, so request bodies are validated by the same pydantic models as the YAML file (a bad
field is a 422 naming it) and ``/v1/openapi.json`` is generated from them, never written by
hand. ``/metrics`` is prometheus_client's own ASGI app (gzip, OpenMetrics and ``name[]``
filtering as with any Prometheus client).

The control API is on only when ``http.admin_token`` is set (otherwise ``/v1/`` answers 404);
reads are open like ``/metrics``, writes need ``Authorization: Bearer <token>`` (compared in
constant time; a missing or wrong token is a 401 and is counted and logged, the token never).

No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations at
run time, and the dependency aliases are local to :func:`_add_control_routes`.
"""

import logging
import secrets
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, make_asgi_app
from pydantic import BaseModel, Field, SecretStr
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from inspector import __version__
from inspector.errors import ConfigError
from inspector.runtime.config import SourceConfig
from inspector.runtime.control import (
    LineControl,
    ModelSetupError,
    ModelState,
    NewModel,
    SourceSetupError,
    SourceState,
)
from inspector.runtime.intake import DuplicateSourceError, UnknownSourceError
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelInUseError, UnknownModelError
from inspector.runtime.recipes import CameraRecipe

log = logging.getLogger(__name__)

#: Returns why the daemon is not ready; an empty list means ready.
Readiness = Callable[[], list[str]]
#: Returns what a ready daemon's ``/readyz`` adds as ``notes`` (e.g. a Kafka standby).
ReadinessNotes = Callable[[], list[str]]
#: The daemon's control, ``None`` until its pipeline runs.
ControlProvider = Callable[[], LineControl | None]

PROBE_PATHS = ("/metrics", "/healthz", "/readyz")
_NO_STORE = {"Cache-Control": "no-store"}


class Problem(BaseModel):
    """An error answer: what went wrong and, where it helps, what to do."""

    error: str = Field(description="what went wrong, naming the field or id at fault")


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
        if path.startswith("/v1/") and admin_token is None:
            error = "the control API is off: set the token INSPECTOR_HTTP__ADMIN_TOKEN to use it"
        else:
            error = getattr(exc, "detail", None) or f"no such path {path}"
        return JSONResponse({"error": error, "paths": list(PROBE_PATHS)}, status_code=404)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    if admin_token is not None:
        _add_control_routes(app, metrics, admin_token, control)
    return app


def _add_control_routes(
    app: FastAPI, metrics: Metrics, token: SecretStr, control: ControlProvider
) -> None:
    bearer = HTTPBearer(auto_error=False)
    expected = token.get_secret_value().encode()

    def running() -> LineControl:
        found = control()
        if found is None:
            raise HTTPException(503, "the daemon is starting: try again once /readyz is 200")
        return found

    def operator(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        """Who asks for a change (the client's address); 401 without the right token."""
        who = request.client.host if request.client is not None else "unknown"
        given = credentials.credentials.encode() if credentials is not None else b""
        if not secrets.compare_digest(given, expected):
            metrics.control_changes.labels(action="any", result="unauthorized").inc()
            log.warning(
                "control: %s %s %s refused: %s bearer token",
                who,
                request.method,
                request.url.path,
                "no" if credentials is None else "wrong",
            )
            raise HTTPException(
                401,
                "a write needs Authorization: Bearer <http.admin_token>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return who

    Control = Annotated[LineControl, Depends(running)]  # noqa: N806 - a type alias
    Operator = Annotated[str, Depends(operator)]  # noqa: N806 - a type alias
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": Problem, "description": "no or wrong bearer token"},
        404: {"model": Problem, "description": "no such source"},
        503: {"model": Problem, "description": "the daemon is starting"},
    }

    def lookup(action: Callable[[], SourceState]) -> SourceState:
        try:
            return action()
        except UnknownSourceError as exc:
            raise HTTPException(404, str(exc)) from exc

    @app.get("/v1/sources", tags=["sources"], responses={503: errors[503]})
    def list_sources(ctl: Control) -> list[SourceState]:
        """Every running source and its state."""
        return ctl.sources()

    @app.get("/v1/sources/{source_id}", tags=["sources"], responses={404: errors[404]})
    def get_source(source_id: str, ctl: Control) -> SourceState:
        """One source."""
        return lookup(lambda: ctl.source(source_id))

    @app.post(
        "/v1/sources",
        status_code=201,
        tags=["sources"],
        responses={
            **errors,
            409: {"model": Problem, "description": "a source with this id runs already"},
            422: {"description": "invalid settings, or the source cannot start (the reason)"},
        },
    )
    def add_source(
        body: Annotated[SourceConfig, Field(discriminator="type")], ctl: Control, who: Operator
    ) -> SourceState:
        """Start one source (as in the YAML file's ``sources``) beside the running ones."""
        try:
            return ctl.add_source(body, who)
        except DuplicateSourceError as exc:
            raise HTTPException(409, str(exc)) from exc
        except SourceSetupError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.delete("/v1/sources/{source_id}", tags=["sources"], responses=errors)
    def remove_source(source_id: str, ctl: Control, who: Operator) -> SourceState:
        """Stop one source: its frames in flight finish, a Kafka source commits them."""
        return lookup(lambda: ctl.remove_source(source_id, who))

    @app.post("/v1/sources/{source_id}/pause", tags=["sources"], responses=errors)
    def pause_source(source_id: str, ctl: Control, who: Operator) -> SourceState:
        """Take no frames from one source (it stays connected)."""
        return lookup(lambda: ctl.pause_source(source_id, who))

    @app.post("/v1/sources/{source_id}/resume", tags=["sources"], responses=errors)
    def resume_source(source_id: str, ctl: Control, who: Operator) -> SourceState:
        """Take frames from a paused source again."""
        return lookup(lambda: ctl.resume_source(source_id, who))

    @app.post(
        "/v1/sources/{source_id}/trigger",
        tags=["sources"],
        responses={
            **errors,
            409: {"model": Problem, "description": "the source is not in software-trigger mode"},
        },
    )
    def trigger_source(source_id: str, ctl: Control, who: Operator) -> SourceState:
        """Take one frame now from a GenICam camera with ``trigger.mode: software``."""
        try:
            return lookup(lambda: ctl.trigger_source(source_id, who))
        except ConfigError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/v1/models", tags=["models"], responses={503: errors[503]})
    def list_models(ctl: Control) -> list[ModelState]:
        """Every served model: the default first, with its memory and the cameras using it."""
        return ctl.model_states()

    @app.post(
        "/v1/models",
        status_code=201,
        tags=["models"],
        responses={
            **errors,
            409: {"model": Problem, "description": "a model of this name is served already"},
            422: {"description": "invalid body, or the checkpoint cannot be loaded (the reason)"},
        },
    )
    def add_model(body: NewModel, ctl: Control, who: Operator) -> ModelState:
        """Load, check and warm a checkpoint beside the served models (takes seconds)."""
        try:
            return ctl.add_model(body, who)
        except ModelInUseError as exc:
            raise HTTPException(409, str(exc)) from exc
        except ModelSetupError as exc:
            raise HTTPException(422, str(exc)) from exc

    @app.delete(
        "/v1/models/{name}",
        tags=["models"],
        responses={
            **errors,
            409: {"model": Problem, "description": "the default model, or a camera uses it"},
        },
    )
    def remove_model(name: str, ctl: Control, who: Operator) -> ModelState:
        """Stop serving a model that no camera's recipe names."""
        try:
            return ctl.remove_model(name, who)
        except UnknownModelError as exc:
            raise HTTPException(404, str(exc)) from exc
        except ModelInUseError as exc:
            raise HTTPException(409, str(exc)) from exc

    @app.get("/v1/cameras", tags=["cameras"], responses={503: errors[503]})
    def list_recipes(ctl: Control) -> dict[str, CameraRecipe]:
        """Every camera's recipe, by camera id (``*``: cameras without their own)."""
        return ctl.recipes.all()

    @app.put(
        "/v1/cameras/{camera_id}",
        tags=["cameras"],
        responses={
            401: errors[401],
            503: errors[503],
            422: {
                "description": "invalid recipe, its model is not served, or its tiles are not "
                "that model's input size"
            },
        },
    )
    def set_recipe(camera_id: str, body: CameraRecipe, ctl: Control, who: Operator) -> CameraRecipe:
        """A camera's product recipe: model, thresholds, smallest defect, deadline, ROI, tiling.

        The switch happens between batches: frames already inferred keep their model.
        """
        try:
            return ctl.set_recipe(camera_id, body, who)
        except UnknownModelError as exc:
            raise HTTPException(422, f"model: {exc}") from exc
        except ConfigError as exc:
            raise HTTPException(422, str(exc)) from exc
