"""The Reverse Distillation model: frozen encoder, trainable OCBE and decoder."""

from __future__ import annotations

import torch
from torch import nn

from inspector.errors import InputSizeError
from inspector.model.anomaly_map import AnomalyMapGenerator, max_score
from inspector.model.bottleneck import OCBE
from inspector.model.config import ArchitectureConfig
from inspector.model.decoder import ResNetDecoder
from inspector.model.encoder import BACKBONES, Encoder
from inspector.model.records import FeaturePair, InferenceBatch


def ocbe_width_per_group(config: ArchitectureConfig) -> int:
    """Resolve ``ocbe_width`` to a width per group.

    ``anomalib`` is 64 for every backbone; ``official`` follows RD4AD, which uses the wide
    backbone's 128 for wide_resnet50_2 and 64 otherwise.
    """
    if isinstance(config.ocbe_width, int):
        return config.ocbe_width
    if config.ocbe_width == "official":
        return BACKBONES[config.backbone].decoder_width_per_group
    return 64


class ReverseDistillation(nn.Module):
    """Reverse Distillation (Deng & Li, CVPR 2022) for one-class anomaly detection.

    In training mode :meth:`forward` is not used; call :meth:`features` and
    :func:`~inspector.model.anomaly_map.cosine_loss`. In eval mode :meth:`forward` returns
    anomaly maps and image scores.

    Args:
        config: Architecture; its image size must be a multiple of 32.
    """

    def __init__(self, config: ArchitectureConfig) -> None:
        super().__init__()
        spec = BACKBONES[config.backbone]
        self.config = config
        self.encoder = Encoder(config.backbone)
        self.bottleneck = OCBE(
            spec.bottleneck_block, spec.ocbe_blocks, ocbe_width_per_group(config)
        )
        self.decoder = ResNetDecoder(
            spec.bottleneck_block, spec.decoder_blocks, spec.decoder_width_per_group
        )
        self.anomaly_map = AnomalyMapGenerator(
            config.image_size, config.anomaly_map_mode, config.sigma
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the OCBE and decoder (the encoder is frozen)."""
        return [*self.bottleneck.parameters(), *self.decoder.parameters()]

    def _check_input(self, images: torch.Tensor) -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputSizeError(
                f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}"
            )
        height, width = images.shape[-2:]
        if (height, width) != tuple(self.config.image_size):
            expected = "x".join(map(str, self.config.image_size))
            raise InputSizeError(
                f"input is {height}x{width} but this model was built for {expected}; "
                "resize with inspector.model.preprocess (sizes must be multiples of 32)"
            )

    def features(self, images: torch.Tensor) -> FeaturePair:
        """Encoder features and their decoder reconstructions.

        Args:
            images: Normalised images, shape ``(N, 3, H, W)``.

        Returns:
            Three encoder/decoder feature pairs (layers 1-3).
        """
        self._check_input(images)
        with torch.no_grad():
            encoded = self.encoder(images)
        decoded = self.decoder(self.bottleneck(encoded))
        return FeaturePair(encoded, decoded)

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Anomaly maps and image scores.

        Args:
            images: Normalised images, shape ``(N, 3, H, W)``.

        Returns:
            Raw maps ``(N, 1, H, W)`` and scores ``(N,)``, float32.
        """
        pair = self.features(images)
        maps = self.anomaly_map(pair.encoder, pair.decoder)
        return InferenceBatch(anomaly_map=maps, pred_score=max_score(maps))
