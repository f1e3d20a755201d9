"""The model's architecture: what every checkpoint stores to rebuild its network.

A leaf of the model package: pydantic only, no I/O.
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


class Frozen(BaseModel):
    """Base of every configuration model: immutable, unknown keys refused, floats finite.

    An infinity (``1e999`` reads as one) passes a ``gt=0`` bound, and neither it nor ``NaN``
    can be written back as JSON (a state file, an API answer): refused for every float field
    of every configuration model at once.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ArchitectureConfig(Frozen):
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
