"""Anomaly maps from encoder/decoder feature pairs, and the training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from inspector.model.config import AnomalyMapMode


def gaussian_kernel_size(sigma: float) -> int:
    """Kernel size used by RD4AD and anomalib: ``2 * int(4 * sigma + 0.5) + 1`` (33 for 4)."""
    return 2 * int(4.0 * sigma + 0.5) + 1


class GaussianBlur(nn.Module):
    """Separable Gaussian blur with reflect padding.

    Two 1-D passes give the same result as anomalib's 2-D kernel (the 2-D Gaussian is the outer
    product of two 1-D ones, both normalised) at 2k instead of k^2 multiply-adds per pixel.

    Args:
        sigma: Standard deviation in pixels.
    """

    kernel: torch.Tensor

    def __init__(self, sigma: float) -> None:
        super().__init__()
        size = gaussian_kernel_size(sigma)
        x = torch.arange(size, dtype=torch.float64) - size // 2
        kernel = torch.exp(-(x**2) / (2.0 * sigma**2))
        # Not persistent: derived from sigma, which the checkpoint stores in its config.
        self.register_buffer("kernel", (kernel / kernel.sum()).float(), persistent=False)
        self.pad = size // 2

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        """Blur single-channel maps, shape ``(N, 1, H, W)`` -> ``(N, 1, H, W)``."""
        k = self.kernel.to(maps.dtype)
        x = F.pad(maps, (self.pad, self.pad, self.pad, self.pad), mode="reflect")
        x = F.conv2d(x, k.view(1, 1, 1, -1))
        return F.conv2d(x, k.view(1, 1, -1, 1))


def cosine_distance(encoder: torch.Tensor, decoder: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` over channels, ``(N, C, h, w)`` twice -> ``(N, h, w)``, in float32.

    ``F.cosine_similarity`` written in plain ops, in ATen's order (each vector divided by its
    norm clamped at ``eps``, then the dot product), which gives the same float32 bits: ONNX has
    no cosine operator and OpenVINO's PyTorch front end has no rule for
    ``aten::cosine_similarity``, so an exported graph needs this form, and one form for eager
    and exported models keeps their maps equal. Float32 even under autocast: ``1 - cos`` of
    nearly equal vectors loses most of its digits in bf16.
    """
    a, b = encoder.float(), decoder.float()
    a = a / torch.linalg.vector_norm(a, dim=1, keepdim=True).clamp_min(_COSINE_EPS)
    b = b / torch.linalg.vector_norm(b, dim=1, keepdim=True).clamp_min(_COSINE_EPS)
    distance: torch.Tensor = 1 - (a * b).sum(dim=1)
    return distance


#: ``F.cosine_similarity``'s default ``eps``.
_COSINE_EPS = 1e-8


class AnomalyMapGenerator(nn.Module):
    """``1 - cos`` per layer, upsampled to the input size, combined, blurred.

    Args:
        image_size: Output ``(H, W)``, the model's input size.
        mode: ADD (sum over layers) or MULTIPLY (product over layers).
        sigma: Gaussian blur standard deviation.
    """

    def __init__(self, image_size: tuple[int, int], mode: AnomalyMapMode, sigma: float) -> None:
        super().__init__()
        self.image_size = image_size
        self.mode = AnomalyMapMode(mode)
        self.blur = GaussianBlur(sigma)

    def forward(self, encoder: list[torch.Tensor], decoder: list[torch.Tensor]) -> torch.Tensor:
        """Compute anomaly maps.

        Args:
            encoder: Encoder features, ``(N, C_k, H_k, W_k)`` for k = 1..3.
            decoder: Decoder reconstructions, same shapes.

        Returns:
            Anomaly maps, shape ``(N, 1, H, W)``, float32.
        """
        combined: torch.Tensor | None = None
        for enc, dec in zip(encoder, decoder, strict=True):
            distance = cosine_distance(enc, dec)
            distance = F.interpolate(
                distance.unsqueeze(1), size=self.image_size, mode="bilinear", align_corners=True
            )
            if combined is None:
                combined = distance
            elif self.mode is AnomalyMapMode.ADD:
                combined = combined + distance
            else:
                combined = combined * distance
        if combined is None:
            raise ValueError("no feature maps given")
        blurred: torch.Tensor = self.blur(combined)
        return blurred


def cosine_loss(encoder: list[torch.Tensor], decoder: list[torch.Tensor]) -> torch.Tensor:
    """The RD4AD training loss: flattened ``1 - cos`` per layer, batch mean, summed over layers.

    Each image's whole ``C*H*W`` feature tensor is one vector (the per-pixel form of the paper
    trains worse, RD4AD issue 22). ``reshape`` rather than ``view`` so channels-last or otherwise
    non-contiguous features work.

    Args:
        encoder: Encoder features, ``(N, C_k, H_k, W_k)`` for each layer.
        decoder: Decoder reconstructions, same shapes.

    Returns:
        Scalar loss, in ``[0, 2 * len(encoder)]``.
    """
    total = torch.zeros((), device=encoder[0].device)
    for enc, dec in zip(encoder, decoder, strict=True):
        n = enc.shape[0]
        cos = F.cosine_similarity(enc.reshape(n, -1).float(), dec.reshape(n, -1).float())
        total = total + torch.mean(1 - cos)
    return total


def max_score(maps: torch.Tensor) -> torch.Tensor:
    """Image scores: maximum of each map, ``(N, 1, H, W)`` -> ``(N,)``."""
    return torch.amax(maps, dim=(-3, -2, -1))


__all__ = [
    "AnomalyMapGenerator",
    "GaussianBlur",
    "cosine_distance",
    "cosine_loss",
    "gaussian_kernel_size",
    "max_score",
]
