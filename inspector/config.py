"""Configuration models: one frozen pydantic root with a sub-model per stage.

This module is a leaf: it imports nothing else from inspector, so every stage can use it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Backbones the encoder/decoder pair is defined for.
Backbone = Literal["resnet18", "resnet34", "resnet50", "wide_resnet50_2"]


class AnomalyMapMode(StrEnum):
    """How the three per-layer distance maps are combined."""

    ADD = "add"
    MULTIPLY = "multiply"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelConfig(_Frozen):
    """Architecture of a Reverse Distillation model; stored in every checkpoint.

    Attributes:
        backbone: Encoder architecture (torchvision ResNet family, layers 1-3).
        image_size: Model input ``(height, width)`` in pixels; both multiples of 32.
        ocbe_width: Inner width of the OCBE bottleneck blocks: ``anomalib`` (width per group 64,
            loads anomalib checkpoints), ``official`` (RD4AD: 128 for wide_resnet50_2) or an
            explicit width per group.
        anomaly_map_mode: ``add`` (paper evaluation) or ``multiply``.
        sigma: Standard deviation of the Gaussian blur on the anomaly map.
    """

    backbone: Backbone = "wide_resnet50_2"
    image_size: tuple[int, int] = (256, 256)
    ocbe_width: Literal["anomalib", "official"] | int = "anomalib"
    anomaly_map_mode: AnomalyMapMode = AnomalyMapMode.ADD
    sigma: float = Field(default=4.0, gt=0)

    @field_validator("image_size", mode="before")
    @classmethod
    def _square_from_int(cls, value: object) -> object:
        # A single number means a square input, as on the command line (--image-size 256).
        return (value, value) if isinstance(value, int) else value

    @field_validator("image_size")
    @classmethod
    def _multiple_of_32(cls, value: tuple[int, int]) -> tuple[int, int]:
        height, width = value
        if height <= 0 or width <= 0 or height % 32 or width % 32:
            nearest = tuple(max(32, round(v / 32) * 32) for v in value)
            raise ValueError(
                f"image size {height}x{width} is not a multiple of 32: the encoder halves it five "
                f"times and the decoder doubles it back, so shapes would not line up; "
                f"use e.g. {nearest[0]}x{nearest[1]}"
            )
        return value


class CalibrationMode(StrEnum):
    """How the checkpoint's thresholds are chosen after training."""

    AUTO = "auto"  # f1 when labelled anomalous validation images exist, else good_only
    F1 = "f1"
    GOOD_ONLY = "good_only"


class TrainConfig(_Frozen):
    """Training hyper-parameters; defaults are the paper's.

    Attributes:
        epochs: Maximum epochs (early stopping usually ends sooner).
        batch_size: Images per step.
        learning_rate: Adam learning rate.
        betas: Adam betas (the paper's; anomalib hard-codes (0.5, 0.99)).
        val_fraction: Share of the good training images held out for validation loss and
            calibration (at least one image).
        patience: Epochs without a validation-loss improvement before stopping; 0 disables.
        min_delta: Smallest validation-loss decrease that counts as an improvement.
        seed: Seeds the split, the initialisation and the batch order.
        device: ``auto`` picks CUDA when available.
        weights: Encoder weights: ``imagenet``, ``none`` or a path to a torchvision state dict.
        download: Whether ``imagenet`` may download when not cached.
        calibration: Threshold fitting mode.
        target_false_alarm_rate: For ``good_only``: share of good images allowed to be flagged.
    """

    epochs: int = Field(default=200, ge=1)
    batch_size: int = Field(default=16, ge=1)
    learning_rate: float = Field(default=0.005, gt=0)
    betas: tuple[float, float] = (0.5, 0.999)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    patience: int = Field(default=10, ge=0)
    min_delta: float = Field(default=1e-4, ge=0)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    weights: str = "imagenet"
    download: bool = True
    calibration: CalibrationMode = CalibrationMode.AUTO
    target_false_alarm_rate: float = Field(default=0.005, gt=0, lt=1)


class PostprocessConfig(_Frozen):
    """Turning anomaly maps into decisions, masks and defect regions.

    Attributes:
        image_threshold: Override of the image threshold on the normalised 0..1 scale
            (``None``: the checkpoint's, which is 0.5 on that scale).
        pixel_threshold: Override of the pixel threshold on the normalised scale.
        min_defect_area_px: Smallest connected region, in original-frame pixels, kept as a defect.
        max_defects: Regions reported per frame at most (largest first).
        include_mask: Attach the PNG mask to anomalous results.
    """

    image_threshold: float | None = Field(default=None, ge=0, le=1)
    pixel_threshold: float | None = Field(default=None, ge=0, le=1)
    min_defect_area_px: int = Field(default=16, ge=1)
    max_defects: int = Field(default=50, ge=1)
    include_mask: bool = True
