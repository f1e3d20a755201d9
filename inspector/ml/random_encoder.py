"""Making a randomly initialised encoder useful (``weights: none``), measured in bench/detection.py.

With ImageNet weights the encoder is the paper's and nothing here runs. Without them the
encoder is a random ResNet whose batch-norm layers hold the defaults (mean 0, variance 1):
statistics of no data at all, so each channel's scale and offset after every block is
whatever the random filters happen to produce on these images. Two remedies, each switchable
in :class:`~inspector.ml.config.TrainConfig`:

- ``encoder_init``: torchvision's ResNet initialisation, or timm's (what anomalib builds its
  random encoder with: the last batch norm of each residual block starts at zero, so every
  block starts as its shortcut);
- ``adapt_batchnorm``: AdaBN (Li et al., "Revisiting Batch Normalization For Practical Domain
  Adaptation", 2016): the batch-norm statistics are estimated once on the good training images
  before training, then frozen like the rest of the encoder, so every channel of every layer is
  centred and scaled on this product. They are buffers of the encoder and so are stored in the
  checkpoint; inference is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from inspector.model.encoder import Encoder
from inspector.model.preprocess import IMAGENET, Preprocessing, normalise


def timm_init(encoder: Encoder) -> None:
    """Re-initialise ``encoder`` as timm initialises a ResNet (``zero_init_last=True``).

    Convolutions: Kaiming normal (fan out, ReLU), as torchvision; batch norms: weight 1, bias 0;
    then the last batch norm of every residual block gets weight 0.
    """
    for module in encoder.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for layer in (encoder.layer1, encoder.layer2, encoder.layer3):
        for block in layer:
            last = block.bn3 if hasattr(block, "bn3") else block.bn2
            nn.init.zeros_(last.weight)


@torch.no_grad()
def adapt_batchnorm(
    encoder: Encoder,
    images: torch.Tensor,
    *,
    batch_size: int,
    device: torch.device,
    preprocessing: Preprocessing = IMAGENET,
) -> int:
    """Replace every batch-norm layer's running statistics with those of ``images`` (AdaBN).

    Each layer's mean and variance are the exact averages over all batches (``momentum=None``),
    computed in one pass with the layers in training mode, so each layer is normalised with the
    statistics of its own, already adapted, inputs. Weights do not change.

    Args:
        encoder: The (frozen, random) encoder; left in eval mode.
        images: Good training images, RGB float32 in 0..1 or uint8, ``(N, 3, H, W)``.
        batch_size: Images per forward pass (a leftover single image joins the last batch:
            batch statistics of one image at 1x1 would be undefined).
        device: Where to run.
        preprocessing: Normalisation applied before the encoder, as in training.

    Returns:
        The number of batch-norm layers adapted.
    """
    layers = [m for m in encoder.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative average: every batch counts the same
        layer.training = True  # Encoder.train() is pinned to eval; set the layers directly
    try:
        starts = list(range(0, len(images), batch_size))
        if len(starts) > 1 and len(images) - starts[-1] == 1:
            starts.pop()
        for i, start in enumerate(starts):
            end = starts[i + 1] if i + 1 < len(starts) else len(images)
            batch = images[start:end].to(device)
            if batch.dtype == torch.uint8:  # tiles are kept as bytes (inspector.ml.regions)
                batch = batch.float() / 255.0
            encoder(normalise(batch, preprocessing))
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
            layer.training = False
    return len(layers)
