"""Why a frame was dead-lettered: the ``error_type`` and ``stage`` every dead letter carries.

These values are a public contract: the Kafka DLQ headers ``error_type`` and ``stage``, the
JSONL dead-letter lines (``schemas/dead_letter.v1.json``), the labels of
``inspector_frames_failed_total{stage, reason}`` and the README's dead-letter table all use
them, and tests/unit/test_dead_letter_contract.py holds those four together. Adding a member
is an extension (readers treat an unknown value as a failure of its stage); renaming or
removing one breaks dashboards and alerts, so it needs a schema version bump.

This module is a leaf: it imports nothing from inspector, so the model, the errors and the
metrics can all use it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class FailureStage(StrEnum):
    """The pipeline stage that gave up on a frame (the ``stage`` header and metric label)."""

    FETCH = "fetch"
    """The Kafka client reading records off the broker."""
    DECODE = "decode"
    """Turning the message value or file into pixels."""
    PARSE = "parse"
    """Turning the record's key and headers into the frame's identity and capture time."""
    INFERENCE = "inference"
    """Routing the frame to its camera's model and running it."""
    POSTPROCESS = "postprocess"
    """Turning the model's output into the result message."""
    PUBLISH = "publish"
    """Handing the result (or the dead letter) to the sinks."""


class ErrorType(StrEnum):
    """Why input became a dead letter: each member's docstring says when, and what to do.

    The ``error`` header (the JSONL ``reason``) says the same in words, with the details of
    the one frame; this is the bounded, machine-readable kind to alert and filter on. Each
    kind belongs to one :class:`FailureStage` (:attr:`stage`).
    """

    CORRUPT_RECORD = "corrupt_record"
    """The Kafka client cannot read the record (e.g. a header key that is not UTF-8).

    Only its coordinates are dead-lettered, since its value cannot be read; the records after
    it in the same record batch end the same way. Do: fix the producer that wrote it (the
    ``source_*`` headers say where it is); the daemon has moved past it.
    """
    EMPTY = "empty"
    """The message value has no bytes. Do: fix the producer, which sent no image."""
    OVERSIZED = "oversized"
    """The value is over ``kafka.max_message_bytes``, so it is neither decoded nor copied.

    The dead letter leaves the value out (``value_dropped`` says so). Do: raise
    ``kafka.max_message_bytes`` (and the topics' ``max.message.bytes``) if frames are
    legitimately that large, else fix the producer.
    """
    UNDECODABLE = "undecodable"
    """Not an image the decoder reads (JPEG, PNG, BMP, TIFF), or a JPEG cut off.

    Do: check the producer's encoder and its transport (a truncated JPEG is an upload cut
    short); the ``error`` header says what the bytes start with.
    """
    TOO_LARGE = "too_large"
    """More pixels than ``sources[*].max_pixels``, read from the header before decoding.

    A 20 KB PNG can declare 12000 x 12000 px, so the limit is checked before any memory is
    spent. Do: raise ``sources[*].max_pixels`` if frames are legitimately that large, else
    find the producer sending them.
    """
    INVALID_HEADER = "invalid_header"
    """A ``captured_at`` header that is neither RFC 3339 nor epoch milliseconds.

    Do: fix the producer's clock format (the ``error`` header quotes the value), or leave the
    header out (the record timestamp is then used).
    """
    MALFORMED_RECORD = "malformed_record"
    """Anything else that stops a record from becoming a frame; no rule anticipated it.

    Do: report it with the ``error`` header (the exception) and the record's coordinates.
    """
    UNKNOWN_MODEL = "unknown_model"
    """The camera's recipe names a model that is not served (e.g. one that no longer loads).

    Do: load the model again (``POST /v1/models``) or point the recipe at a served one
    (``PUT /v1/cameras/{id}``); frames come as dead letters until then.
    """
    ROI_OUTSIDE_FRAME = "roi_outside_frame"
    """The frame is smaller than its camera's ``roi`` reaches.

    Do: fix the recipe's ``roi`` (``PUT /v1/cameras/{id}``) or the camera's resolution.
    """
    TILING_MISMATCH = "tiling_mismatch"
    """The region is smaller than one tile, or the tile is not the model's input size.

    Typically a recipe restored from the state file after its model changed. Do: fix the
    recipe's ``tiling`` or ``roi`` with ``PUT /v1/cameras/{id}``.
    """
    INFERENCE_ERROR = "inference_error"
    """The model failed on the frame's batch (e.g. out of device memory), or routing it did.

    Do: read the logged traceback; if it persists, lower ``batcher.max_batch_size`` or report
    it.
    """
    POSTPROCESS_ERROR = "postprocess_error"
    """Post-processing (normalising, thresholding, defect regions, the result) failed on it.

    Do: read the logged traceback and report it; other frames are unaffected.
    """
    PUBLISH_REFUSED = "publish_refused"
    """A sink refused the frame's result for good (e.g. over ``kafka.max_message_bytes``).

    The frame is dead-lettered instead, so its partition's commits go on. Do: raise the
    sink's limit (large masks make large results) or set ``postprocess.include_mask: false``.
    """

    @property
    def stage(self) -> FailureStage:
        """The stage whose failure this is (the ``stage`` of its dead letters)."""
        return _STAGE_OF[self]


_STAGE_OF: Final[dict[ErrorType, FailureStage]] = {
    ErrorType.CORRUPT_RECORD: FailureStage.FETCH,
    ErrorType.EMPTY: FailureStage.DECODE,
    ErrorType.OVERSIZED: FailureStage.DECODE,
    ErrorType.UNDECODABLE: FailureStage.DECODE,
    ErrorType.TOO_LARGE: FailureStage.DECODE,
    ErrorType.INVALID_HEADER: FailureStage.PARSE,
    ErrorType.MALFORMED_RECORD: FailureStage.PARSE,
    ErrorType.UNKNOWN_MODEL: FailureStage.INFERENCE,
    ErrorType.ROI_OUTSIDE_FRAME: FailureStage.INFERENCE,
    ErrorType.TILING_MISMATCH: FailureStage.INFERENCE,
    ErrorType.INFERENCE_ERROR: FailureStage.INFERENCE,
    ErrorType.POSTPROCESS_ERROR: FailureStage.POSTPROCESS,
    ErrorType.PUBLISH_REFUSED: FailureStage.PUBLISH,
}

#: ``inspector_frames_failed_total`` reason of a dead letter that a sink refused too (stage
#: ``publish``): the frame is left uncommitted, no dead letter exists, so it is no error type.
DEAD_LETTER_REFUSED: Final = "dead_letter_refused"

#: Every ``(stage, reason)`` label pair of ``inspector_frames_failed_total``: each error type
#: with its stage, and the refused dead letter. The metric is bounded by these.
FAILED_LABELS: Final[tuple[tuple[FailureStage, str], ...]] = (
    *((kind.stage, kind.value) for kind in ErrorType),
    (FailureStage.PUBLISH, DEAD_LETTER_REFUSED),
)

__all__ = ["DEAD_LETTER_REFUSED", "FAILED_LABELS", "ErrorType", "FailureStage"]
