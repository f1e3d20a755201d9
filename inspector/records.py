"""Typed records passed between stages and returned by the model.

Records are plain NamedTuples/dataclasses: cheap, immutable and explicit about tensor shapes,
so a stage never has to guess what a loose dict holds.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict

from inspector.messages import ResultMessage


class InferenceBatch(NamedTuple):
    """What the Reverse Distillation model returns in evaluation mode.

    Attributes:
        anomaly_map: Raw (un-normalised) anomaly maps, shape ``(N, 1, H, W)`` at the model's
            input size, float32.
        pred_score: Raw image scores (max of each map), shape ``(N,)``, float32.
    """

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor


class ScoredBatch(NamedTuple):
    """The model worker's output for one batch, on the host.

    Only frames that can be anomalous carry their map: for the rest (most frames on a healthy
    line) the map never leaves the device and is never post-processed.

    Attributes:
        scores: Raw image scores, shape ``(N,)``, float32.
        maps: Per frame, the raw map ``(H, W)`` float32 at the model size, or ``None`` when
            the frame's score rules out an anomaly.
    """

    scores: torch.Tensor
    maps: list[torch.Tensor | None]


class FeaturePair(NamedTuple):
    """Encoder and decoder features that the loss and the anomaly map compare.

    Attributes:
        encoder: Encoder features of layers 1-3, shapes ``(N, C_k, H/2^(k+1), W/2^(k+1))``.
        decoder: Decoder reconstructions with the same shapes, in the same order.
    """

    encoder: list[torch.Tensor]
    decoder: list[torch.Tensor]


class Calibration(BaseModel):
    """Thresholds and min/max normalisation fitted on held-out validation data.

    Normalisation follows anomalib: ``clip((x - threshold) / (max - min) + 0.5, 0, 1)``, so the
    threshold maps to 0.5 for image scores and pixel maps alike.

    Attributes:
        mode: How the thresholds were chosen: ``f1`` (best F1 on labelled validation images),
            ``good_only`` (quantile of good validation scores for a target false-alarm rate), or
            ``imported`` (taken from another tool's checkpoint).
        image_threshold: Raw image-score threshold.
        image_min: Smallest raw image score seen in calibration.
        image_max: Largest raw image score seen in calibration.
        pixel_threshold: Raw anomaly-map threshold.
        pixel_min: Smallest raw map value seen in calibration.
        pixel_max: Largest raw map value seen in calibration.
        target_false_alarm_rate: For ``good_only``: the fraction of good images allowed above
            the threshold.
        n_good: Good images used.
        n_anomalous: Anomalous images used.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: Literal["f1", "good_only", "imported"]
    image_threshold: float
    image_min: float
    image_max: float
    pixel_threshold: float
    pixel_min: float
    pixel_max: float
    target_false_alarm_rate: float | None = None
    n_good: int = 0
    n_anomalous: int = 0

    def normalise_image(self, scores: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Normalise raw image scores ``(N,)`` to 0..1, ``threshold`` (default: fitted) at 0.5."""
        return _normalise(
            scores,
            self.image_threshold if threshold is None else threshold,
            self.image_min,
            self.image_max,
        )

    def normalise_score(self, score: float, threshold: float | None = None) -> float:
        """One raw image score normalised as by :meth:`normalise_image`, in float64.

        Plain float arithmetic: per frame, torch's per-call overhead costs more than the maths.
        Bit for bit what :meth:`normalise_image` gives for a float64 tensor.
        """
        t = self.image_threshold if threshold is None else threshold
        span = max(self.image_max - self.image_min, _MIN_SPAN)
        return min(max((score - t) / span + 0.5, 0.0), 1.0)

    def normalise_pixel(self, maps: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """Normalise raw maps (any shape) to 0..1 with ``threshold`` (default: fitted) at 0.5."""
        return _normalise(
            maps,
            self.pixel_threshold if threshold is None else threshold,
            self.pixel_min,
            self.pixel_max,
        )

    def normalise_pixel_array(self, maps: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """:meth:`normalise_pixel` for maps on the host (any shape) -> float32, same shape.

        NumPy in place: on a 256 x 256 map torch's per-call overhead was most of the cost.
        """
        t = self.pixel_threshold if threshold is None else threshold
        span = max(self.pixel_max - self.pixel_min, _MIN_SPAN)
        out: np.ndarray = np.subtract(maps, np.float32(t), dtype=np.float32)
        out /= np.float32(span)
        out += np.float32(0.5)
        np.clip(out, 0.0, 1.0, out=out)
        return out


_MIN_SPAN = 1e-12


def _normalise(x: torch.Tensor, threshold: float, lo: float, hi: float) -> torch.Tensor:
    # A degenerate range (all calibration scores equal) would divide by zero; any positive span
    # keeps the threshold at 0.5 and the ordering intact.
    span = max(hi - lo, _MIN_SPAN)
    return ((x - threshold) / span + 0.5).clamp(0.0, 1.0)


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
        error_type: Short machine-readable kind (``undecodable``, ``empty``, ``oversized``...).
        stage: Pipeline stage that gave up (``decode``, ``inference``, ``postprocess``).
        camera_id: Camera it claims to come from.
        raw: The original message, for Kafka input.
        failed_at: UTC time of failure, RFC 3339.
        ack: Call once the dead letter is delivered.
    """

    reason: str
    error_type: str
    stage: str
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
        heatmap: Normalised anomaly map ``(H, W)`` float32 at the model size; ``None`` for
            frames whose map was not needed (not anomalous).
        mask: Defect mask ``(h, w)`` bool at the frame size, ``None`` when not anomalous.
    """

    message: ResultMessage
    frame: Frame
    heatmap: np.ndarray | None
    mask: np.ndarray | None
