"""Training and calibration settings (``inspector train``)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import Field

from inspector.model.config import Frozen
from inspector.model.region_config import RoiConfig, TilingConfig


class CalibrationMode(StrEnum):
    """How the checkpoint's thresholds are chosen after training."""

    AUTO = "auto"  # f1 when labelled anomalous validation images exist, else good_only
    F1 = "f1"
    GOOD_ONLY = "good_only"


class TrainConfig(Frozen):
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
        encoder_init: With ``weights: none`` only: how the random encoder is initialised
            (``torchvision`` or ``timm``, anomalib's; see :mod:`inspector.ml.random_encoder`).
        adapt_batchnorm: With ``weights: none`` only: estimate the random encoder's batch-norm
            statistics on the good training images once before training (AdaBN). ImageNet
            weights keep theirs: that encoder stays exactly the paper's.
        augment_flips: Train on random horizontal and vertical flips of the good images (only
            for products whose good look is symmetric under flips).
        roi: Train on this region of every image only, as a camera with ``cameras.<id>.roi``
            is inspected (``None``: whole images).
        tiling: Train on tiles of the region at native resolution, as a camera with
            ``cameras.<id>.tiling`` is inspected; ``tile`` must be the model's image size.
            Thresholds are then fitted to held-out frames' stitched maps.
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
    encoder_init: Literal["torchvision", "timm"] = "torchvision"
    adapt_batchnorm: bool = False
    augment_flips: bool = False
    roi: RoiConfig | None = None
    tiling: TilingConfig | None = None
