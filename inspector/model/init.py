"""Weight initialisation of the trainable parts (OCBE and decoder)."""

from __future__ import annotations

from torch import nn


def init_resnet_weights(module: nn.Module) -> None:
    """Torchvision's ResNet scheme: Kaiming-normal convolutions, unit/zero batch norms."""
    for child in module.modules():
        if isinstance(child, nn.Conv2d):
            nn.init.kaiming_normal_(child.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(child, nn.BatchNorm2d):
            nn.init.constant_(child.weight, 1)
            nn.init.constant_(child.bias, 0)
