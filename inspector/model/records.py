"""What the Reverse Distillation network returns: typed, with their tensor shapes."""

from __future__ import annotations

from typing import NamedTuple

import torch


class InferenceBatch(NamedTuple):
    """What the Reverse Distillation model returns in evaluation mode.

    Attributes:
        anomaly_map: Raw (un-normalised) anomaly maps, shape ``(N, 1, H, W)`` at the model's
            input size, float32.
        pred_score: Raw image scores (max of each map), shape ``(N,)``, float32.
    """

    anomaly_map: torch.Tensor
    pred_score: torch.Tensor


class FeaturePair(NamedTuple):
    """Encoder and decoder features that the loss and the anomaly map compare.

    Attributes:
        encoder: Encoder features of layers 1-3, shapes ``(N, C_k, H/2^(k+1), W/2^(k+1))``.
        decoder: Decoder reconstructions with the same shapes, in the same order.
    """

    encoder: list[torch.Tensor]
    decoder: list[torch.Tensor]
