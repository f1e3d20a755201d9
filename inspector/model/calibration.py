"""Thresholds and normalisation of raw anomaly scores, fitted on held-out data.

Stored in every checkpoint; applied by the daemon's post-processing and by evaluation alike.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, field_validator

from inspector.model.drift import BINS


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
        good_score_quintiles: The 4 inner quintiles of the held-out good images' raw image
            scores, ascending: the reference of the daemon's score drift
            (:mod:`inspector.model.drift`); ``None`` when fewer than 50 good images were held
            out, and in checkpoints calibrated before they were stored (no drift figure).
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
    good_score_quintiles: tuple[float, ...] | None = None

    @field_validator("good_score_quintiles")
    @classmethod
    def _quintiles(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if value is None:
            return None
        if len(value) != BINS - 1:
            raise ValueError(f"needs {BINS - 1} quintiles, got {len(value)}")
        if not all(math.isfinite(v) for v in value) or list(value) != sorted(value):
            raise ValueError("quintiles must be finite and ascending")
        return value

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

    def normalise_pixel_array(self, maps: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Normalise raw maps (any shape) to float32 0..1, ``threshold`` (default: fitted) at 0.5.

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
