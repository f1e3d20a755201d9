"""The public label message, ``inspector.label/v1``: an operator's verdict on a retained frame.

Published to ``kafka.labels_topic`` (key: the camera id) when an operator labels a frame in the
console or with ``POST /v1/results/{frame_id}/label``, so that a training pipeline or a quality
database learns of it without reading the daemon's retention folder. Its JSON Schema is
generated from this model and kept in ``schemas/label.v1.json`` (a test checks they agree).

**Clearing.** ``DELETE /v1/results/{frame_id}/label`` removes a frame's label; it is published
as ``"action": "clear"`` with ``"label": null`` (and no kind or note), ``labelled_at`` then
being when it was removed. A label set is ``"action": "set"`` (the default: messages written
before clears existed have no ``action`` and mean the same). The last message of a frame wins;
messages of one camera share a partition, so they arrive in the order they were sent. Both
fields change together on purpose: a reader of the first version that validates against its
schema refuses a clear (``label`` must be a string there) instead of taking it for a label.

This module is a leaf like :mod:`inspector.messages`: it imports nothing else from inspector.
Extending it is fine; renaming a field needs a schema version bump. Readers ignore fields they
do not know.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

LABEL_SCHEMA_ID: Literal["inspector.label/v1"] = "inspector.label/v1"
#: What a label message does: ``set`` a frame's label, or ``clear`` it.
LabelAction = Literal["set", "clear"]
#: The validator's rule in the published schema, for subscribers that validate with it.
_ACTION_RULE: dict[str, Any] = {
    "if": {"properties": {"action": {"const": "clear"}}, "required": ["action"]},
    "then": {
        "properties": {
            "label": {"type": "null"},
            "kind": {"type": "null"},
            "note": {"type": "null"},
        }
    },
    "else": {"properties": {"label": {"type": "string"}}},
}


class LabelMessage(BaseModel):
    """One operator label of one retained frame, with the verdict it judges."""

    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        populate_by_name=True,
        json_schema_extra={"allOf": [_ACTION_RULE]},
    )

    schema_: Literal["inspector.label/v1"] = Field(default=LABEL_SCHEMA_ID, alias="schema")
    frame_id: str = Field(description="the producer's frame id, as in the result message")
    camera_id: str
    action: LabelAction = Field(
        default="set",
        description="set: the frame's label is now label; clear: the frame has no label any "
        "more (label, kind and note are null)",
    )
    label: Literal["false_alarm", "defect", "missed_defect"] | None = Field(
        description="false_alarm: flagged but good; defect: flagged and a real defect; "
        "missed_defect: not flagged but defective; null exactly when action is clear"
    )
    kind: str | None = Field(default=None, description="defect kind, e.g. scratch")
    note: str | None = Field(default=None, description="the operator's free text")
    labelled_at: str = Field(
        description="when the label was set, or for a clear removed (RFC 3339, UTC)"
    )
    score: float = Field(description="the result's normalised score (threshold at 0.5)")
    threshold: float = Field(description="the image threshold applied, normalised")
    is_anomalous: bool = Field(description="whether the model flagged the frame")
    model_name: str = Field(description="the model that judged the frame")
    captured_at: str | None = None
    processed_at: str = Field(description="when the verdict was made (RFC 3339)")

    @model_validator(mode="after")
    def _label_matches_action(self) -> LabelMessage:
        if (self.label is None) != (self.action == "clear"):
            raise ValueError("label is null exactly when action is clear")
        if self.action == "clear" and (self.kind is not None or self.note is not None):
            raise ValueError("a clear carries no kind or note")
        return self

    def to_json(self) -> str:
        """Serialise with the public field names (``schema``, not ``schema_``)."""
        return self.model_dump_json(by_alias=True)


def label_json_schema() -> dict[str, Any]:
    """JSON Schema of :class:`LabelMessage`, as kept in ``schemas/label.v1.json``."""
    schema = LabelMessage.model_json_schema(by_alias=True, mode="serialization")
    schema["$id"] = LABEL_SCHEMA_ID
    return schema


def label_json_schema_text() -> str:
    """The schema as indented JSON text."""
    return json.dumps(label_json_schema(), indent=2, sort_keys=True) + "\n"


__all__ = [
    "LABEL_SCHEMA_ID",
    "LabelAction",
    "LabelMessage",
    "label_json_schema",
    "label_json_schema_text",
]
