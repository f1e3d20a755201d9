"""The reverse decoder: ResNet layers 3, 2, 1 mirrored, upsampling with transposed convolutions.

Parameter names follow anomalib's ``ResNetDecoder`` (``layer1`` is the deepest stage) so its
checkpoints load one to one.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import conv1x1, conv3x3

from inspector.model.init import init_resnet_weights


class DecoderBasicBlock(nn.Module):
    """BasicBlock with its stride-2 3x3 conv replaced by a 2x2 transposed conv.

    Args:
        inplanes: Input channels.
        planes: Output channels.
        stride: 2 to upsample by two, else 1.
        upsample: Projection of the identity branch when shapes change.
    """

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, upsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1: nn.Module = (
            nn.ConvTranspose2d(inplanes, planes, kernel_size=2, stride=2, bias=False)
            if stride == 2
            else conv3x3(inplanes, planes)
        )
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: ``(N, inplanes, h, w)`` -> ``(N, planes, h*stride, w*stride)``."""
        identity = x if self.upsample is None else self.upsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + identity)


class DecoderBottleneck(nn.Module):
    """Bottleneck block whose stride-2 3x3 conv is a 2x2 transposed conv.

    Args:
        inplanes: Input channels.
        planes: Bottleneck channels; the output has ``4 * planes``.
        stride: 2 to upsample by two, else 1.
        upsample: Projection of the identity branch when shapes change.
        base_width: Width per group (64 standard, 128 for wide ResNets).
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        upsample: nn.Module | None = None,
        base_width: int = 64,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0))
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2: nn.Module = (
            nn.ConvTranspose2d(width, width, kernel_size=2, stride=2, bias=False)
            if stride == 2
            else conv3x3(width, width)
        )
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.upsample = upsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block: ``(N, inplanes, h, w)`` -> ``(N, 4*planes, h*stride, w*stride)``."""
        identity = x if self.upsample is None else self.upsample(x)
        out = torch.relu(self.bn1(self.conv1(x)))
        out = torch.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return torch.relu(out + identity)


class ResNetDecoder(nn.Module):
    """Three upsampling stages from the OCBE embedding back to encoder layers 3, 2, 1.

    Args:
        bottleneck_block: Use DecoderBottleneck (ResNet-50 family) rather than DecoderBasicBlock.
        blocks: Blocks per stage, deepest first.
        width_per_group: Inner width of bottleneck blocks per group.
    """

    def __init__(
        self, bottleneck_block: bool, blocks: tuple[int, int, int], width_per_group: int = 64
    ) -> None:
        super().__init__()
        self._bottleneck = bottleneck_block
        self._width = width_per_group
        self._inplanes = 512 * self._expansion
        self.layer1 = self._make_stage(256, blocks[0])
        self.layer2 = self._make_stage(128, blocks[1])
        self.layer3 = self._make_stage(64, blocks[2])
        init_resnet_weights(self)

    @property
    def _expansion(self) -> int:
        return DecoderBottleneck.expansion if self._bottleneck else DecoderBasicBlock.expansion

    def _block(self, inplanes: int, planes: int, stride: int, up: nn.Module | None) -> nn.Module:
        if self._bottleneck:
            return DecoderBottleneck(inplanes, planes, stride, up, base_width=self._width)
        return DecoderBasicBlock(inplanes, planes, stride, up)

    def _make_stage(self, planes: int, blocks: int) -> nn.Sequential:
        out = planes * self._expansion
        upsample = nn.Sequential(
            nn.ConvTranspose2d(self._inplanes, out, kernel_size=2, stride=2, bias=False),
            nn.BatchNorm2d(out),
        )
        stage = [self._block(self._inplanes, planes, 2, upsample)]
        stage += [self._block(out, planes, 1, None) for _ in range(1, blocks)]
        self._inplanes = out
        return nn.Sequential(*stage)

    def forward(self, embedding: torch.Tensor) -> list[torch.Tensor]:
        """Reconstruct encoder features.

        Args:
            embedding: OCBE output, shape ``(N, 512 * expansion, H/32, W/32)``.

        Returns:
            Reconstructions ordered like the encoder's layers 1, 2, 3:
            ``(N, C1, H/4, W/4)``, ``(N, C2, H/8, W/8)``, ``(N, C3, H/16, W/16)``.
        """
        a = self.layer1(embedding)
        b = self.layer2(a)
        c = self.layer3(b)
        return [c, b, a]
