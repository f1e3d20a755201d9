"""Preprocessing shared by training, evaluation, prediction and the daemon.

One function for all of them, so a deployed model sees exactly what it was trained on
(anomalib's exported graphs lose antialiasing and drift from training inputs).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocessing(BaseModel):
    """How images become model input; stored in every checkpoint, applied everywhere.

    Training, evaluation, prediction and the daemon all pass a checkpoint's own preprocessing
    to :func:`preprocess` / :func:`normalise`: a model imported from anomalib with other
    statistics sees the inputs it was trained on.

    Attributes:
        color: Channel order the network expects.
        resize: Resizing to the model size.
        mean: Per-channel mean subtracted (RGB, of pixel values in 0..1).
        std: Per-channel standard deviation divided by.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    color: Literal["rgb"] = "rgb"
    resize: Literal["bilinear_antialias"] = "bilinear_antialias"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD


#: The preprocessing of models trained here (torchvision's ImageNet statistics).
IMAGENET = Preprocessing()


def to_tensor_rgb(image_bgr: np.ndarray) -> torch.Tensor:
    """Convert an OpenCV BGR uint8 image ``(H, W, 3)`` to an RGB uint8 tensor ``(3, H, W)``."""
    rgb = np.ascontiguousarray(image_bgr[..., ::-1])
    return torch.from_numpy(rgb).permute(2, 0, 1)


def preprocess(
    images: torch.Tensor, size: tuple[int, int], preprocessing: Preprocessing = IMAGENET
) -> torch.Tensor:
    """Resize with antialiasing and normalise with ``preprocessing``'s statistics.

    Args:
        images: RGB images, uint8 ``(N, 3, h, w)`` (0..255) or float ``(N, 3, h, w)`` (0..1).
        size: Target ``(H, W)``.
        preprocessing: The checkpoint's (default: ImageNet statistics).

    Returns:
        Float32 tensor ``(N, 3, H, W)`` ready for the model.
    """
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return normalise(x, preprocessing)


def normalise(images: torch.Tensor, preprocessing: Preprocessing = IMAGENET) -> torch.Tensor:
    """Normalisation of float RGB in 0..1, ``(N, 3, H, W)`` -> same shape."""
    mean = torch.tensor(preprocessing.mean, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(preprocessing.std, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std
