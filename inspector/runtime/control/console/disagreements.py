"""The console's disagreements page: retained frames where a camera's shadow judged otherwise.

Read from what the daemon keeps: the retention index and each retained frame's result message
(whose ``shadow`` block holds the shadow model's verdict). The shadow scores frames without
maps (:mod:`inspector.runtime.shadow`), so there is no shadow overlay: the page shows the
served model's overlay beside the shadow's score and verdict.

Only retained frames can be listed: every frame the served model flagged, and the sampled
share of the good ones (``retention.good_sample_rate``); a frame only the shadow flagged is
listed when it was sampled.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from inspector.messages import ResultMessage
from inspector.runtime.retention.reader import RetentionIndex

#: Retained frames looked at per request at most (newest first): each is a small file read.
SCAN_LIMIT = 500


class Disagreement(BaseModel):
    """One retained frame whose served and shadow verdicts differ.

    Attributes:
        frame_id: The frame.
        camera_id: Its camera.
        processed_at: When it was judged.
        served_model: The model that served it.
        served_score: Its normalised score.
        served_anomalous: Its verdict.
        shadow_model: The shadow model.
        shadow_score: The shadow's normalised score.
        shadow_anomalous: The shadow's verdict.
        label: The operator's label, if any.
    """

    model_config = ConfigDict(frozen=True)

    frame_id: str
    camera_id: str
    processed_at: str
    served_model: str
    served_score: float
    served_anomalous: bool
    shadow_model: str
    shadow_score: float
    shadow_anomalous: bool
    label: str | None


def disagreements(index: RetentionIndex, camera: str | None, limit: int) -> list[Disagreement]:
    """The newest retained disagreements (of ``camera``), ``limit`` at most, newest first."""
    found: list[Disagreement] = []
    for frame in index.list(camera=camera, limit=SCAN_LIMIT):
        path = index.file_path(frame.result_file)
        if path is None:
            continue
        try:
            message = ResultMessage.from_json(path.read_bytes())
        except (OSError, ValueError):  # evicted meanwhile, or not a message of ours
            continue
        shadow = message.shadow
        if shadow is None or shadow.is_anomalous == message.is_anomalous:
            continue
        found.append(
            Disagreement(
                frame_id=message.frame_id,
                camera_id=message.camera_id,
                processed_at=message.processed_at,
                served_model=message.model.name,
                served_score=message.score,
                served_anomalous=message.is_anomalous,
                shadow_model=shadow.model,
                shadow_score=shadow.score,
                shadow_anomalous=shadow.is_anomalous,
                label=frame.label,
            )
        )
        if len(found) >= limit:
            break
    return found
