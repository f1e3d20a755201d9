"""The records of the results API: a label request, a retained frame, a page, a detail.

Pydantic models, so FastAPI validates requests with them (a bad field is a 422 naming it) and
``/v1/openapi.json`` describes the answers. Retained files' names stay internal: a record
says which pictures a frame has (``views``), never where they are.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from inspector.messages import ResultMessage
from inspector.runtime.retention.records import (
    MAX_KIND_CHARS,
    MAX_NOTE_CHARS,
    Label,
    RetainedFrame,
    View,
)


def _printable(text: str) -> str:
    if not text.isprintable():
        raise ValueError("must be printable: no control or format characters")
    return text


def _printable_lines(text: str) -> str:  # a note may have several lines
    if not text.replace("\n", "").replace("\t", "").isprintable():
        raise ValueError("must be printable text (newlines and tabs allowed)")
    return text


class LabelRequest(BaseModel):
    """``POST /v1/results/{frame_id}/label``: an operator's verdict on a retained frame."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)

    label: Label = Field(
        description="false_alarm: flagged but good; defect: flagged and defective; "
        "missed_defect: not flagged but defective"
    )
    kind: (
        Annotated[
            str,
            StringConstraints(min_length=1, max_length=MAX_KIND_CHARS),
            AfterValidator(_printable),
        ]
        | None
    ) = Field(default=None, description="defect kind (defect, missed_defect only), e.g. scratch")
    note: (
        Annotated[
            str, StringConstraints(max_length=MAX_NOTE_CHARS), AfterValidator(_printable_lines)
        ]
        | None
    ) = Field(default=None, description="free text")


class RetainedResult(BaseModel):
    """One retained frame: its verdict, its label and which pictures it has."""

    model_config = ConfigDict(frozen=True)

    seq: int = Field(description="retained order; pass as before/after to page")
    frame_id: str
    camera_id: str
    score: float
    threshold: float
    is_anomalous: bool
    model_name: str
    captured_at: str | None
    processed_at: str
    retained_at: str
    label: Label | None
    kind: str | None
    note: str | None
    labelled_at: str | None
    exported_at: str | None
    views: list[View] = Field(description="the pictures it has: frame, overlay, mask")

    @classmethod
    def of(cls, frame: RetainedFrame) -> RetainedResult:
        """The API's view of an index row (file names stay internal)."""
        views: list[View] = ["frame"]
        if frame.overlay_file is not None:
            views.append("overlay")
        if frame.mask_file is not None:
            views.append("mask")
        return cls(
            seq=frame.seq,
            frame_id=frame.frame_id,
            camera_id=frame.camera_id,
            score=frame.score,
            threshold=frame.threshold,
            is_anomalous=frame.is_anomalous,
            model_name=frame.model_name,
            captured_at=frame.captured_at,
            processed_at=frame.processed_at,
            retained_at=frame.retained_at,
            label=frame.label,
            kind=frame.label_kind,
            note=frame.note,
            labelled_at=frame.labelled_at,
            exported_at=frame.exported_at,
            views=views,
        )


class ResultsPage(BaseModel):
    """A page of retained frames, newest first."""

    items: list[RetainedResult]
    next_before: int | None = Field(
        description="pass as before for the next (older) page; null: this was the last"
    )


class ResultDetail(BaseModel):
    """One retained frame and its result message as published (mask data left out)."""

    frame: RetainedResult
    result: ResultMessage | None = Field(
        description="the retained result message; null if its file cannot be read"
    )


__all__ = ["LabelRequest", "ResultDetail", "ResultsPage", "RetainedResult"]
