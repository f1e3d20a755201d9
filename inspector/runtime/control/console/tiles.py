"""The console's overview: one tile per camera, from what the daemon already knows.

Each fact comes from the cheapest source that holds it honestly:

* last verdict, score vs threshold, model that judged it, frames/s and late share:
  :class:`~inspector.runtime.sinks.latest.LatestResults` (the last result and ten seconds of
  counts per camera, kept by a sink);
* up or down: ``inspector_camera_up`` where a camera source sets it, else the source's state in
  the control's intake (running, ready), else whether results still arrive (Kafka cameras);
* model and recipe: the control's recipes and served models;
* false alarms and catches: the labels in the retention index.

Tiles are bounded (:data:`MAX_TILES`): cameras of the line's sources first, then those seen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from inspector.runtime.control.line import LineControl
from inspector.runtime.recipes import ANY_CAMERA
from inspector.runtime.retention.reader import RetentionIndex
from inspector.runtime.sinks.latest import CameraActivity

#: Tiles shown at most.
MAX_TILES = 100
#: A camera known only from its results is down after this long without one (seconds).
QUIET_AFTER_S = 10.0


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)


class LastVerdict(_Record):
    """A camera's last result."""

    frame_id: str
    is_anomalous: bool
    score: float = Field(description="normalised; flagged at or above the threshold")
    threshold: float
    model: str = Field(description="the model that judged it")
    processed_at: str
    late: bool | None
    age_s: float = Field(description="seconds since it was delivered")


class LabelCounts(_Record):
    """Labels operators set on a camera's retained frames."""

    false_alarm: int = 0
    defect: int = Field(default=0, description="flagged and confirmed: catches")
    missed_defect: int = 0


class CameraTile(_Record):
    """One camera as the console shows it."""

    camera: str
    source: str | None = Field(description="the daemon's source taking its frames, if any")
    state: str = Field(
        description="the source's state (running, paused, exhausted...), or streaming / quiet "
        "for a camera known only from its results"
    )
    up: bool
    last: LastVerdict | None
    frames_per_s: float
    late_share: float | None = Field(description="late verdicts among those with a deadline")
    model: str | None = Field(description="the model its recipe sends it to")
    recipe: Literal["own", "*", "none"] = Field(
        description="own: a recipe of its own; *: the recipe for every camera; none"
    )
    labels: LabelCounts


class Overview(_Record):
    """What the console's overview polls."""

    tiles: list[CameraTile]
    retention: bool = Field(description="whether frames are retained (review and labels)")
    writes: bool = Field(description="whether labels can be set (http.admin_token is set)")
    retained: int | None = Field(description="frames retained now; null: retention is off")


def _last(activity: CameraActivity | None) -> LastVerdict | None:
    if activity is None:
        return None
    return LastVerdict(
        frame_id=activity.frame_id,
        is_anomalous=activity.is_anomalous,
        score=activity.score,
        threshold=activity.threshold,
        model=activity.model,
        processed_at=activity.processed_at,
        late=activity.late,
        age_s=round(activity.age_s, 1),
    )


def overview(
    activity: Iterable[CameraActivity],
    control: LineControl | None,
    index: RetentionIndex | None,
    camera_up: dict[str, float],
    *,
    writes: bool,
) -> Overview:
    """The tiles of every camera the line knows (see the module).

    Args:
        activity: Each camera's last result and rate.
        control: The running line (``None`` while the daemon starts).
        index: The retention index (``None``: retention is off).
        camera_up: ``inspector_camera_up`` by camera label.
        writes: Whether labels can be set.
    """
    seen = {a.camera: a for a in activity}
    sources: dict[str, tuple[str, str, bool]] = {}  # camera -> (source id, state, ready)
    recipes: dict[str, object] = {}
    default_model: str | None = None
    if control is not None:
        for found in control.sources():
            camera = found.config.get("camera_id")
            if isinstance(camera, str):
                sources[camera] = (found.id, found.state, found.ready)
        recipes = dict(control.recipes.all())
        default_model = next((m.name for m in control.model_states() if m.default), None)
    counts = index.counts_by_camera() if index is not None else {}
    order = [*sources, *sorted(c for c in seen if c not in sources)]
    order += sorted(c for c in counts if c not in sources and c not in seen)
    tiles: list[CameraTile] = []
    for camera in order[:MAX_TILES]:
        last = seen.get(camera)
        source = sources.get(camera)
        if source is not None:
            state = source[1]
            up = camera_up[camera] == 1 if camera in camera_up else state == "running" and source[2]
        else:
            up = last is not None and last.age_s < QUIET_AFTER_S
            state = "streaming" if up else "quiet"
        recipe: Literal["own", "*", "none"] = (
            "own" if camera in recipes else "*" if ANY_CAMERA in recipes else "none"
        )
        model = default_model
        if control is not None:
            model = control.recipes.recipe(camera).model or default_model
        tiles.append(
            CameraTile(
                camera=camera,
                source=source[0] if source is not None else None,
                state=state,
                up=up,
                last=_last(last),
                frames_per_s=round(last.frames_per_s, 2) if last is not None else 0.0,
                late_share=last.late_share if last is not None else None,
                model=model,
                recipe=recipe,
                labels=LabelCounts(**counts.get(camera, {})),
            )
        )
    return Overview(
        tiles=tiles,
        retention=index is not None,
        writes=writes,
        retained=index.count() if index is not None else None,
    )


__all__ = ["MAX_TILES", "CameraTile", "LabelCounts", "LastVerdict", "Overview", "overview"]
