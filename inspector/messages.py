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


class ResultMessage(_Message):
    """One inspection result per frame."""

    schema_: Literal["inspector.result/v1"] = Field(default=SCHEMA_ID, alias="schema")
    frame_id: str
    camera_id: str
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

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    def to_json(self) -> str:
        """Serialise with the public field names (``schema``, not ``schema_``)."""
        return self.model_dump_json(by_alias=True)

    @classmethod
    def from_json(cls, data: str | bytes) -> ResultMessage:
        """Read a published message; fields added by later versions of v1 are ignored."""
        return cls.model_validate_json(data)


def result_json_schema() -> dict[str, Any]:
    """JSON Schema of :class:`ResultMessage` (what ``inspector schema`` prints)."""
    schema = ResultMessage.model_json_schema(by_alias=True, mode="serialization")
    schema["$id"] = SCHEMA_ID
    return schema


def result_json_schema_text() -> str:
    """The schema as indented JSON text."""
    return json.dumps(result_json_schema(), indent=2, sort_keys=True) + "\n"
