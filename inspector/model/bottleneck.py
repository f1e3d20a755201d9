"""One-Class Bottleneck Embedding (OCBE): fuses encoder layers 1-3 into a compact code.

Parameter names follow anomalib's ``OCBE`` so its checkpoints load one to one, minus the 1x1
``conv4``/``bn4`` that both the official code and anomalib define but never call (8.4 M dead
parameters for wide_resnet50_2).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, conv1x1, conv3x3

from inspector.model.init import init_resnet_weights


class OCBE(nn.Module):
    """Multi-scale feature fusion followed by a ResNet-layer4-like stage.

    Args:
        bottleneck_block: Use Bottleneck blocks (ResNet-50 family) rather than BasicBlocks.
        blocks: Number of residual blocks in the stage (3 for Bottleneck, 2 for BasicBlock).
        width_per_group: Inner width of Bottleneck blocks per group (64: anomalib, 128: official
            RD4AD for wide_resnet50_2). BasicBlocks only support 64.
    """

    def __init__(self, bottleneck_block: bool, blocks: int, width_per_group: int = 64) -> None:
        super().__init__()
        block: type[BasicBlock | Bottleneck] = Bottleneck if bottleneck_block else BasicBlock
        if block is BasicBlock and width_per_group != 64:
            raise ValueError("BasicBlock backbones (resnet18/34) only support OCBE width 64")
        expansion = block.expansion
        self.conv1 = conv3x3(64 * expansion, 128 * expansion, 2)
        self.bn1 = nn.BatchNorm2d(128 * expansion)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(128 * expansion, 256 * expansion, 2)
        self.bn2 = nn.BatchNorm2d(256 * expansion)
        self.conv3 = conv3x3(128 * expansion, 256 * expansion, 2)
        self.bn3 = nn.BatchNorm2d(256 * expansion)

        fused = 3 * 256 * expansion
        out = 512 * expansion
        downsample = nn.Sequential(conv1x1(fused, out, 2), nn.BatchNorm2d(out))
        stage: list[nn.Module] = [
            block(fused, 512, 2, downsample, base_width=width_per_group),
            *(block(out, 512, base_width=width_per_group) for _ in range(1, blocks)),
        ]
        self.bn_layer = nn.Sequential(*stage)

        init_resnet_weights(self)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Fuse and embed.

        Args:
            features: Encoder layers 1-3, shapes ``(N, C1, H/4, W/4)``, ``(N, C2, H/8, W/8)``,
                ``(N, C3, H/16, W/16)``.

        Returns:
            The one-class embedding, shape ``(N, 512 * expansion, H/32, W/32)``.
        """
        f0 = self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(features[0]))))))
        f1 = self.relu(self.bn3(self.conv3(features[1])))
        out: torch.Tensor = self.bn_layer(torch.cat([f0, f1, features[2]], 1))
        return out
