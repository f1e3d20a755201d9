"""The frozen ImageNet encoder: a torchvision ResNet cut after layer 3.

Only the stem and layers 1-3 exist in this module: the official RD4AD code also builds and
runs layer4 (about 2.9 GMACs at 256 px for wide_resnet50_2) whose output is never used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn
from torchvision import models


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about one supported backbone.

    Attributes:
        channels: Output channels of layers 1, 2 and 3.
        bottleneck_block: ``True`` for Bottleneck-block ResNets (50 and up), ``False`` for
            BasicBlock ones (18, 34).
        decoder_blocks: Blocks in each decoder stage, deepest first (mirrors layers 3, 2, 1).
        decoder_width_per_group: Width per group of the decoder's bottleneck blocks.
        ocbe_blocks: Residual blocks in the OCBE stage.
    """

    channels: tuple[int, int, int]
    bottleneck_block: bool
    decoder_blocks: tuple[int, int, int]
    decoder_width_per_group: int
    ocbe_blocks: int


BACKBONES: dict[str, BackboneSpec] = {
    "resnet18": BackboneSpec((64, 128, 256), False, (2, 2, 2), 64, 2),
    "resnet34": BackboneSpec((64, 128, 256), False, (3, 4, 6), 64, 2),
    "resnet50": BackboneSpec((256, 512, 1024), True, (3, 4, 6), 64, 3),
    "wide_resnet50_2": BackboneSpec((256, 512, 1024), True, (3, 4, 6), 128, 3),
}

#: Prefixes of a full torchvision ResNet state dict that the cut encoder does not have.
UNUSED_PREFIXES = ("layer4.", "fc.")


class Encoder(nn.Module):
    """ResNet stem and layers 1-3, frozen.

    The module stays in eval mode whatever ``train()`` is called with, and its parameters never
    require gradients: batch-norm statistics of the ImageNet encoder must not drift.

    Args:
        backbone: One of :data:`BACKBONES`.
    """

    def __init__(self, backbone: str) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose one of {sorted(BACKBONES)}")
        full = getattr(models, backbone)(weights=None)
        self.conv1 = full.conv1
        self.bn1 = full.bn1
        self.relu = full.relu
        self.maxpool = full.maxpool
        self.layer1 = full.layer1
        self.layer2 = full.layer2
        self.layer3 = full.layer3
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Encoder:
        """Keep the encoder in eval mode (frozen batch-norm statistics) regardless of ``mode``."""
        del mode
        return super().train(False)

    def load_torchvision_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load weights saved from a full torchvision ResNet of the same architecture.

        Keys of layer4 and fc are ignored; every key this module has must be present.

        Args:
            state_dict: A torchvision ``ResNet.state_dict()`` (or the ImageNet weights file).

        Raises:
            KeyError: A key of this module is missing or a shape differs.
        """
        kept = {k: v for k, v in state_dict.items() if not k.startswith(UNUSED_PREFIXES)}
        result = self.load_state_dict(kept, strict=False)
        if result.missing_keys or result.unexpected_keys:
            raise KeyError(
                f"weights do not fit this encoder: missing {result.missing_keys[:5]}, "
                f"unexpected {result.unexpected_keys[:5]}"
            )

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Extract multi-scale features.

        Args:
            images: Normalised images, shape ``(N, 3, H, W)``.

        Returns:
            Features of layers 1, 2, 3 with shapes ``(N, C1, H/4, W/4)``,
            ``(N, C2, H/8, W/8)`` and ``(N, C3, H/16, W/16)``.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        f1 = self.layer1(x)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        return [f1, f2, f3]
