"""Typed records passed between the daemon's stages.

Plain NamedTuples and dataclasses: cheap, immutable and explicit about shapes, so a stage
never has to guess what a loose dict holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from inspector.dead_letters import ErrorType, FailureStage
from inspector.messages import ResultMessage


class ScoredBatch(NamedTuple):
    """The model worker's output for one batch, on the host.

    Only frames that can be anomalous carry their map: for the rest (most frames on a healthy
    line) the map never leaves the device and is never post-processed.

    Attributes:
        scores: Raw image scores, shape ``(N,)``, float32.
        maps: Per frame, the raw map ``(H, W)`` float32 at the model size (a frame with a
            region of interest and tiling: its stitched region map ``(h, w)`` at native
            resolution), or ``None`` when the frame's score rules out an anomaly.
    """

    scores: torch.Tensor
    maps: list[torch.Tensor | None]


@dataclass(frozen=True)
class FrameMeta:
    """Where a frame came from and what it looked like before preprocessing.

    Attributes:
        frame_id: Unique id (header, or ``topic:partition:offset``, or file name).
        camera_id: Camera that took it.
        image_size: Original ``(height, width)`` in pixels; masks and boxes use this size.
        source_topic: Kafka topic, ``None`` for camera or file input.
        source_partition: Kafka partition.
        source_offset: Kafka offset.
        captured_at: Capture time as given by the producer (RFC 3339), if any.
        part_id: The part in front of the camera (the producer's ``part_id`` header), if
            given; what a PLC rejects or passes.
        received_monotonic: ``time.monotonic()`` when the frame entered the pipeline.
        decode_ms: Time spent decoding it.
    """

    frame_id: str
    camera_id: str
    image_size: tuple[int, int]
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    captured_at: str | None = None
    part_id: str | None = None
    received_monotonic: float = 0.0
    decode_ms: float = 0.0


#: Called once when a frame's result or dead letter is durably delivered (or definitively
#: failed); sources use it to commit offsets only after delivery.
AckFn = Callable[[], None]


def _no_ack() -> None:
    """Ack of sources with nothing to commit (cameras, files)."""


@dataclass(frozen=True)
class RawMessage:
    """An input message exactly as received, kept so it can be dead-lettered unchanged.

    Attributes:
        value: Message payload (the encoded image).
        key: Message key (camera id by convention).
        headers: Message headers, in order.
        topic: Source topic.
        partition: Source partition.
        offset: Source offset.
    """

    value: bytes
    key: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Frame:
    """A decoded frame on its way to the model.

    Attributes:
        meta: Identity, origin and original size.
        image: BGR uint8 pixels ``(h, w, 3)`` (numpy), or RGB uint8 ``(3, h, w)`` (a torch
            tensor, possibly on the GPU, when decoded there).
        ack: Call once its result is delivered.
        raw: The message it was decoded from (Kafka input), so a frame that fails later
            (inference, post-processing) is dead-lettered with its original payload.
    """

    meta: FrameMeta
    image: np.ndarray | torch.Tensor
    ack: AckFn = _no_ack
    raw: RawMessage | None = None


@dataclass(frozen=True)
class DeadLetter:
    """Input that cannot be processed, with the reason; never dropped silently.

    Attributes:
        reason: Human-readable cause (``not a decodable image (12 bytes ...)``).
        error_type: Machine-readable kind, a contract (DLQ header, metric label): see
            :class:`~inspector.dead_letters.ErrorType`.
        stage: Pipeline stage that gave up, ``error_type.stage``.
        camera_id: Camera it claims to come from.
        raw: The original message, for Kafka input.
        failed_at: UTC time of failure, RFC 3339.
        ack: Call once the dead letter is delivered.
    """

    reason: str
    error_type: ErrorType
    stage: FailureStage
    camera_id: str
    raw: RawMessage | None
    failed_at: str
    ack: AckFn = _no_ack


@dataclass(frozen=True)
class Inspection:
    """A finished frame: the public message plus what sinks may need besides it.

    Attributes:
        message: The result as published.
        frame: The frame it came from (pixels for overlays, ack for delivery).
        heatmap: Normalised anomaly map ``(H, W)`` float32 covering the whole frame at the
            map's pixel density (the model size; frame resolution for a tiled frame); ``None``
            for frames whose map was not needed (not anomalous).
        mask: Defect mask ``(h, w)`` bool at the frame size, ``None`` when not anomalous.
    """

    message: ResultMessage
    frame: Frame
    heatmap: np.ndarray | None
    mask: np.ndarray | None
