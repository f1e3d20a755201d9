"""The console's HTTP side: its pages, its static files and the data they poll.

Pages (``/``, ``/review``, ``/frame?id=``, ``/disagreements``) are Jinja2 templates with
autoescaping on, rendered on the server without any data a token guards: the page's scripts
(``console.js``, and ``what_if.js`` on the overview, ``disagreements.js`` on its page; static
files: no inline script, which the Content-Security-Policy forbids) fetch the data with the
tokens the operator gives them and put every value in the page as text. The static files are
package data read once at start-up, served by name from a fixed list (no path is ever joined).

No ``from __future__ import annotations``: FastAPI reads the endpoints' annotations at run time.
"""

from collections.abc import Callable
from importlib.resources import files
from typing import Annotated, Literal

import jinja2
from fastapi import Depends, FastAPI, Query
from fastapi.responses import HTMLResponse, Response

from inspector import __version__
from inspector.runtime.control.api_errors import DaemonStartingError
from inspector.runtime.control.api_results import ResultsAccess
from inspector.runtime.control.console.disagreements import Disagreement, disagreements
from inspector.runtime.control.console.tiles import Overview, overview
from inspector.runtime.control.line import LineControl
from inspector.runtime.control.results_http import Bearer
from inspector.runtime.ids import MAX_ID_CHARS
from inspector.runtime.metrics import Metrics
from inspector.runtime.retention.reader import RetentionIndex
from inspector.runtime.sinks.latest import CameraActivity

#: No inline script or style, nothing from elsewhere; images also from ``blob:`` (pictures are
#: fetched with the bearer header and shown from memory).
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
#: The static files, by name, with their media types: the only names served.
STATIC_FILES = {
    "console.js": "text/javascript; charset=utf-8",
    "disagreements.js": "text/javascript; charset=utf-8",
    "what_if.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}

RetentionState = Literal["on", "off", "starting"]
#: The daemon's control, ``None`` until its pipeline runs (as ``api.ControlProvider``).
ControlLookup = Callable[[], LineControl | None]


def environment() -> jinja2.Environment:
    """The templates, autoescaped (every ``{{ }}`` is HTML-escaped), strict about typos."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("inspector.runtime.control.console", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _static_files() -> dict[str, bytes]:
    folder = files("inspector.runtime.control.console") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC_FILES}


def add_console_routes(
    app: FastAPI,
    metrics: Metrics,
    access: ResultsAccess,
    bearer: Bearer,
    control: ControlLookup,
) -> None:
    """Register the console's pages, static files and overview on ``app``."""
    templates = environment()
    assets = _static_files()

    def retention_state() -> RetentionState:
        try:
            return "on" if access.retention() is not None else "off"
        except DaemonStartingError:
            return "starting"

    def page(name: str, **context: object) -> HTMLResponse:
        html = templates.get_template(name).render(
            page=name.removesuffix(".html"),
            retention=retention_state(),
            writes=bearer.writes,
            reads_guarded=bearer.reads_guarded,
            version=__version__,
            **context,
        )
        return HTMLResponse(html, headers={**_HEADERS, "Cache-Control": "no-store"})

    @app.get("/", include_in_schema=False)
    def console_overview() -> HTMLResponse:
        return page("index.html")

    @app.get("/review", include_in_schema=False)
    def console_review() -> HTMLResponse:
        return page("review.html")

    @app.get("/frame", include_in_schema=False)
    def console_frame(
        frame_id: Annotated[str, Query(alias="id", max_length=MAX_ID_CHARS)] = "",
    ) -> HTMLResponse:
        # The id is only shown (escaped) and handed to the script, which asks the API for it.
        return page("frame.html", frame_id=frame_id)

    @app.get("/disagreements", include_in_schema=False)
    def console_disagreements() -> HTMLResponse:
        return page("disagreements.html")

    @app.get(
        "/v1/console/disagreements",
        include_in_schema=False,
        dependencies=[Depends(bearer.reader)],
    )
    def disagreements_data(
        camera: Annotated[str | None, Query(max_length=MAX_ID_CHARS)] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 24,
    ) -> list[Disagreement]:
        try:
            index: RetentionIndex | None = access.retention()
        except DaemonStartingError:
            index = None
        return [] if index is None else disagreements(index, camera, limit)

    @app.get("/favicon.ico", include_in_schema=False)
    def console_icon() -> Response:  # browsers ask for it whatever the page says
        return Response(assets["favicon.svg"], media_type=STATIC_FILES["favicon.svg"])

    @app.get("/console/static/{name}", include_in_schema=False)
    def console_static(name: str) -> Response:
        data = assets.get(name)
        if data is None:
            return Response(status_code=404, headers=_HEADERS)
        return Response(
            data,
            media_type=STATIC_FILES[name],
            headers={**_HEADERS, "Cache-Control": "no-cache"},
        )

    @app.get(
        "/v1/console/overview",
        include_in_schema=False,
        dependencies=[Depends(bearer.reader)],
    )
    def console_data() -> Overview:
        try:
            index: RetentionIndex | None = access.retention()
        except DaemonStartingError:
            index = None
        ctl = control()
        activity: list[CameraActivity] = access.activity()
        up = {
            sample.labels["camera"]: sample.value
            for family in metrics.camera_up.collect()
            for sample in family.samples
        }
        return overview(activity, ctl, index, up, writes=bearer.writes)


__all__ = ["CONTENT_SECURITY_POLICY", "STATIC_FILES", "ControlLookup", "add_console_routes"]
