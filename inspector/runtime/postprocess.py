"""Postprocess stage: calibrated scores, thresholds, defect masks, regions, result messages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import cv2
import numpy as np
import torch

from inspector.errors import CheckpointError
from inspector.imaging import encode_png_base64
from inspector.messages import (
    Defect,
    Latency,
    MaskPayload,
    ModelRef,
    ResultMessage,
    ShadowVerdict,
    SourceRef,
    ThresholdInfo,
)
from inspector.model.calibration import Calibration
from inspector.runtime.config import PostprocessConfig
from inspector.runtime.records import FrameMeta
from inspector.runtime.regions import FrameView, defects_to_frame, heat_to_frame, mask_to_frame


@dataclass(frozen=True)
class FrameDecision:
    """Postprocessed outcome of one frame before it becomes a message.

    Attributes:
        score: Normalised image score (0..1, threshold of the checkpoint at 0.5).
        raw_score: Raw image score.
        is_anomalous: Score above the applied image threshold.
        defects: Regions in original-frame pixels.
        mask: Defect mask ``(h, w)`` bool in original-frame pixels, ``None`` when not anomalous.
        heatmap: Normalised map ``(H, W)`` float32 covering the whole frame at the map's
            resolution (the model size; a stitched map's, for tiled frames) for overlays;
            ``None`` when the map was not needed.
    """

    score: float
    raw_score: float
    is_anomalous: bool
    defects: list[Defect]
    mask: np.ndarray | None
    heatmap: np.ndarray | None


class Postprocessor:
    """Applies a checkpoint's calibration (or configured overrides) to raw model output.

    Args:
        calibration: The checkpoint's calibration; required.
        model: Identifies the model in every result.
        config: Threshold overrides and region settings.

    Raises:
        CheckpointError: The checkpoint carries no calibration.
    """

    def __init__(
        self, calibration: Calibration | None, model: ModelRef, config: PostprocessConfig
    ) -> None:
        if calibration is None:
            raise CheckpointError(
                "the checkpoint has no calibration (thresholds); re-train with `inspector train` "
                "or calibrate it before running inference"
            )
        self.calibration = calibration
        self.model = model
        self.config = config
        overridden = config.image_threshold is not None or config.pixel_threshold is not None
        self.threshold = ThresholdInfo(
            image=0.5 if config.image_threshold is None else config.image_threshold,
            pixel=0.5 if config.pixel_threshold is None else config.pixel_threshold,
            source="config" if overridden else "checkpoint",
        )

    def with_recipe(
        self,
        image_threshold: float | None,
        pixel_threshold: float | None,
        min_defect_area_px: int | None,
    ) -> Postprocessor:
        """This model's postprocessor with a camera recipe's overrides (``None``: keep)."""
        update = {
            k: v
            for k, v in (
                ("image_threshold", image_threshold),
                ("pixel_threshold", pixel_threshold),
                ("min_defect_area_px", min_defect_area_px),
            )
            if v is not None
        }
        varied = Postprocessor(self.calibration, self.model, self.config.model_copy(update=update))
        if image_threshold is not None or pixel_threshold is not None:
            varied.threshold = varied.threshold.model_copy(update={"source": "recipe"})
        return varied

    def needs_map(self, raw_scores: torch.Tensor) -> torch.Tensor:
        """Which frames can be anomalous, from their raw scores ``(N,)``: ``(N,)`` bool.

        The model worker asks this to bring back only those frames' maps; it is the same
        comparison :meth:`decide` makes.
        """
        # float64, as decide() computes each score: the two agree at the boundary bit for bit
        # (in float32 a threshold such as 0.8 is rounded and they could disagree).
        normalised = self.calibration.normalise_image(raw_scores.double())
        return normalised > self.threshold.image

    def decide(
        self,
        raw_map: torch.Tensor | None,
        raw_score: float,
        image_size: tuple[int, int],
        view: FrameView | None = None,
    ) -> FrameDecision:
        """Score, threshold and segment one frame.

        Args:
            raw_map: Raw anomaly map ``(H, W)`` at the model size (any device), or of the
                view's region (a stitched map); may be ``None`` for a frame that
                :meth:`needs_map` ruled out.
            raw_score: Raw image score.
            image_size: Original frame ``(h, w)``.
            view: The frame's region of interest and tiles (``None``: the whole frame,
                resized): the map covers that region; regions are found in it and reported
                in frame pixels.

        Returns:
            The decision with regions and mask in original-frame pixels.

        Raises:
            ValueError: An anomalous frame came without its map.
        """
        if view is None or view.roi is None:
            return self._decide(raw_map, raw_score, image_size)
        # Segmented in the region's pixels, then placed in the frame's.
        found = self._decide(raw_map, raw_score, view.region_size)
        return FrameDecision(
            found.score,
            found.raw_score,
            found.is_anomalous,
            defects_to_frame(found.defects, view),
            None if found.mask is None else mask_to_frame(found.mask, view),
            None if found.heatmap is None else heat_to_frame(found.heatmap, view),
        )

    def _decide(
        self, raw_map: torch.Tensor | None, raw_score: float, image_size: tuple[int, int]
    ) -> FrameDecision:
        cal = self.calibration
        score = cal.normalise_score(raw_score)
        anomalous = score > self.threshold.image
        heat = None
        if raw_map is not None:
            heat = cal.normalise_pixel_array(raw_map.detach().float().cpu().numpy())
        if not anomalous:
            return FrameDecision(score, raw_score, False, [], None, heat)
        if heat is None:
            raise ValueError("an anomalous frame needs its anomaly map")
        defects, mask = self._segment(heat, image_size)
        return FrameDecision(score, raw_score, True, defects, mask, heat)

    def _segment(
        self, heat: np.ndarray, image_size: tuple[int, int]
    ) -> tuple[list[Defect], np.ndarray]:
        """Defect regions and mask of a normalised map ``(H, W)``, in frame pixels ``(h, w)``.

        Regions are found at the map's own resolution, the resolution its information has,
        and their geometry is scaled to the frame: labelling the map upscaled to a 1920 x 1080
        frame would visit ~30 times the pixels of a 256 x 256 map for the same regions.
        """
        h, w = image_size
        sx, sy = w / heat.shape[1], h / heat.shape[0]
        binary = (heat > self.threshold.pixel).astype(np.uint8)
        count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary, connectivity=8)
        areas = stats[:, cv2.CC_STAT_AREA] * (sx * sy)  # in frame pixels
        regions = [i for i in range(1, count) if areas[i] >= self.config.min_defect_area_px]
        regions.sort(key=lambda i: -float(areas[i]))
        regions = regions[: self.config.max_defects]
        defects = []
        for i in regions:
            x, y, bw, bh = (int(v) for v in stats[i, :4])
            x0, y0 = int(x * sx), int(y * sy)
            x1, y1 = min(w, math.ceil((x + bw) * sx)), min(h, math.ceil((y + bh) * sy))
            # Within the region's box only: a stitched map has megapixels and up to
            # max_defects regions; the whole map compared per region would cost that product.
            box = (slice(y, y + bh), slice(x, x + bw))
            values = heat[box][labels[box] == i]
            defects.append(
                Defect(
                    bbox=(x0, y0, x1 - x0, y1 - y0),
                    area_px=round(float(areas[i])),
                    max_score=float(values.max()),
                    mean_score=float(values.mean()),
                    # Pixel centres: model pixel c covers frame pixels [c * s, (c + 1) * s).
                    centroid=(
                        float((centroids[i, 0] + 0.5) * sx - 0.5),
                        float((centroids[i, 1] + 0.5) * sy - 0.5),
                    ),
                )
            )
        # The kept regions upscaled smoothly (linear, then halfway), not in blocks of s pixels.
        keep = np.zeros(count, dtype=np.uint8)
        keep[regions] = 255
        mask = cv2.resize(keep[labels], (w, h), interpolation=cv2.INTER_LINEAR) > 127
        return defects, mask

    def to_message(
        self,
        frame: FrameMeta,
        decision: FrameDecision,
        latency: Latency,
        late: bool | None = None,
        shadow: ShadowVerdict | None = None,
    ) -> ResultMessage:
        """Build the public result message for a decided frame (``late``, ``shadow``: schema)."""
        mask = None
        if decision.mask is not None and self.config.include_mask:
            h, w = decision.mask.shape
            mask = MaskPayload(height=h, width=w, data=encode_png_base64(decision.mask))
        source = None
        if frame.source_topic is not None:
            source = SourceRef(
                topic=frame.source_topic,
                partition=frame.source_partition or 0,
                offset=frame.source_offset or 0,
            )
        return ResultMessage(
            frame_id=frame.frame_id,
            camera_id=frame.camera_id,
            part_id=frame.part_id,
            source=source,
            captured_at=frame.captured_at,
            processed_at=datetime.now(UTC).isoformat(),
            model=self.model,
            score=decision.score,
            raw_score=decision.raw_score,
            is_anomalous=decision.is_anomalous,
            threshold=self.threshold,
            defects=decision.defects,
            mask=mask,
            image_size=frame.image_size,
            latency_ms=latency,
            late=late,
            shadow=shadow,
        )
