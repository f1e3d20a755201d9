"""The public result message, ``inspector.result/v1``.

Kafka subscribers and ``inspector predict`` receive it; its JSON Schema is generated from these
models.

This module is a leaf: it imports nothing else from inspector. Extending it is fine; renaming a
field needs a schema version bump. Readers ignore fields they do not know (so a subscriber of
today reads tomorrow's messages), and the published schema allows them; what this package
writes is fixed by the typed constructors (mypy checks their keywords).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_ID: Literal["inspector.result/v1"] = "inspector.result/v1"


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class SourceRef(_Message):
    """Kafka coordinates of the input frame; subscribers de-duplicate on them."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class ModelRef(_Message):
    """Which model produced the result."""

    name: str
    backbone: str
    checkpoint_sha256: str


class ThresholdInfo(_Message):
    """Thresholds actually applied, on the normalised 0..1 scale."""

    image: float
    pixel: float
    source: Literal["checkpoint", "config", "recipe"] = Field(
        description="where the thresholds come from: the checkpoint, the daemon's postprocess "
        "config, or the camera's recipe"
    )


class Defect(_Message):
    """One connected defect region, in the original frame's pixels."""

    bbox: tuple[int, int, int, int] = Field(description="x, y, width, height")
    area_px: int = Field(ge=0)
    max_score: float = Field(ge=0, le=1)
    mean_score: float = Field(ge=0, le=1)
    centroid: tuple[float, float] = Field(description="x, y")


class MaskPayload(_Message):
    """Defect mask of the whole frame (255 = defect) as a base64 single-channel PNG."""

    encoding: Literal["png-base64"] = "png-base64"
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    data: str


class Latency(_Message):
    """Milliseconds spent per stage for this frame."""

    decode: float = 0.0
    queue: float = 0.0
    inference: float = 0.0
    postprocess: float = 0.0
    total: float = 0.0


class ShadowVerdict(_Message):
    """A camera's shadow model's verdict on the same frame (never acted on).

    Present only when the camera's recipe names a ``shadow_model`` and the shadow could score
    the frame without delaying served frames; absent when it was skipped.
    """

    model: str = Field(description="the shadow model's name")
    score: float = Field(ge=0, le=1, description="normalised by the shadow model's calibration")
    is_anomalous: bool


class ResultMessage(_Message):
    """One inspection result per frame."""

    schema_: Literal["inspector.result/v1"] = Field(default=SCHEMA_ID, alias="schema")
    frame_id: str
    camera_id: str
    part_id: str | None = Field(
        default=None,
        description="the part in front of the camera, from the frame's part_id header; absent "
        "when the frame had none (camera and directory sources, or a producer that sends none)",
    )
    source: SourceRef | None = None
    captured_at: str | None = None
    processed_at: str
    model: ModelRef
    score: float = Field(ge=0, le=1, description="normalised; the threshold maps to 0.5")
    raw_score: float = Field(description="max of the blurred anomaly map")
    is_anomalous: bool
    threshold: ThresholdInfo
    defects: list[Defect]
    mask: MaskPayload | None
    image_size: tuple[int, int] = Field(description="original frame height, width")
    latency_ms: Latency
    late: bool | None = Field(
        default=None,
        description=(
            "the verdict was ready after the camera's deadline_ms from captured_at (too late to "
            "act on the part); null: the camera has no deadline or the frame no capture time"
        ),
    )

    shadow: ShadowVerdict | None = Field(
        default=None,
        description="the camera's shadow model's verdict on this frame; absent without a "
        "shadow model or when the shadow was skipped so as not to delay served frames",
    )

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def capture_to_verdict_ms(self) -> float | None:
        """Milliseconds from ``captured_at`` to ``processed_at`` (:func:`capture_to_verdict_ms`)."""
        return capture_to_verdict_ms(self.captured_at, self.processed_at)

    def to_json(self) -> str:
        """Serialise with the public field names (``schema``, not ``schema_``).

        ``shadow`` and ``part_id`` are left out when there is none (absent, not ``null``:
        readers of messages from before the field see exactly what they saw).
        """
        absent = {n for n in ("shadow", "part_id") if getattr(self, n) is None}
        return self.model_dump_json(by_alias=True, exclude=absent or None)

    @classmethod
    def from_json(cls, data: str | bytes) -> ResultMessage:
        """Read a published message; fields added by later versions of v1 are ignored."""
        return cls.model_validate_json(data)


def capture_to_verdict_ms(captured_at: str | None, processed_at: str) -> float | None:
    """Milliseconds from a frame's capture to its verdict, from a result's two timestamps.

    What a line cares about: how long after the part was photographed its verdict was ready
    (what ``late`` is judged on). It is ``latency_ms.total`` (the daemon's own time, from
    taking the frame in) plus everything before: the camera's and the broker's transport and
    the time the frame waited in the topic. Both are wall-clock times, so between machines it
    includes their clock offset.

    Args:
        captured_at: The result's ``captured_at`` (RFC 3339; no zone means UTC), or ``None``.
        processed_at: The result's ``processed_at``.

    Returns:
        The difference in ms, or ``None`` when the frame has no (readable) capture time.
    """
    if captured_at is None:
        return None
    try:
        captured, verdict = (_utc(datetime.fromisoformat(t)) for t in (captured_at, processed_at))
    except ValueError:
        return None
    return (verdict - captured).total_seconds() * 1000


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def result_json_schema() -> dict[str, Any]:
    """JSON Schema of :class:`ResultMessage` (what ``inspector schema`` prints)."""
    schema = ResultMessage.model_json_schema(by_alias=True, mode="serialization")
    schema["$id"] = SCHEMA_ID
    return schema


def result_json_schema_text() -> str:
    """The schema as indented JSON text."""
    return json.dumps(result_json_schema(), indent=2, sort_keys=True) + "\n"
