"""The random encoder's remedies (``weights: none``): timm's initialisation and AdaBN."""

from __future__ import annotations

import torch
from torch import nn

from inspector.ml.random_encoder import adapt_batchnorm, timm_init
from inspector.model.encoder import Encoder
from inspector.model.preprocess import normalise


def _images(n: int = 12, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    # Not ImageNet-like on purpose: bright, low-contrast images shift every channel's statistics.
    return 0.7 + 0.1 * torch.rand(n, 3, size, size, generator=g)


def test_adabn_sets_every_layer_to_the_statistics_of_its_inputs() -> None:
    torch.manual_seed(0)
    encoder = Encoder("resnet18")
    images = _images()
    assert adapt_batchnorm(encoder, images, batch_size=4, device=torch.device("cpu")) == 15
    # Check the stem's batch norm against the statistics of what it sees, by hand.
    with torch.no_grad():
        pre = encoder.conv1(normalise(images))
    expected_mean = pre.mean(dim=(0, 2, 3))
    torch.testing.assert_close(encoder.bn1.running_mean, expected_mean, rtol=1e-4, atol=1e-4)
    expected_var = pre.var(dim=(0, 2, 3), unbiased=True)
    # Per-batch unbiased variances averaged (three batches of 4) vs the pooled variance:
    # close, not equal; the default (1.0) is far off.
    torch.testing.assert_close(encoder.bn1.running_var, expected_var, rtol=0.1, atol=1e-3)
    # The encoder is frozen and in eval mode again, momentum restored.
    assert all(not m.training for m in encoder.modules())
    assert all(m.momentum == 0.1 for m in encoder.modules() if isinstance(m, nn.BatchNorm2d))
    assert not any(p.requires_grad for p in encoder.parameters())


def test_adabn_normalises_what_the_default_statistics_do_not() -> None:
    torch.manual_seed(0)
    encoder = Encoder("resnet18")
    images = _images()
    with torch.no_grad():
        before = encoder.bn1(encoder.conv1(normalise(images)))
        adapt_batchnorm(encoder, images, batch_size=16, device=torch.device("cpu"))
        after = encoder.bn1(encoder.conv1(normalise(images)))
    # Per-channel means: far from 0 with the built-in statistics, about 0 once adapted.
    assert before.mean(dim=(0, 2, 3)).abs().max() > 0.5
    assert after.mean(dim=(0, 2, 3)).abs().max() < 1e-3


def test_adabn_leaves_weights_alone_and_takes_bytes() -> None:
    torch.manual_seed(0)
    encoder = Encoder("resnet18")
    weights = {k: v.clone() for k, v in encoder.state_dict().items() if "running" not in k}
    as_bytes = (_images() * 255).round().to(torch.uint8)
    adapt_batchnorm(encoder, as_bytes, batch_size=4, device=torch.device("cpu"))
    after = encoder.state_dict()
    for key, value in weights.items():
        if key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(after[key], value)


def test_timm_init_starts_every_block_as_its_shortcut() -> None:
    torch.manual_seed(0)
    encoder = Encoder("resnet18")
    timm_init(encoder)
    for layer in (encoder.layer1, encoder.layer2, encoder.layer3):
        for block in layer:
            assert torch.count_nonzero(block.bn2.weight) == 0
    # The identity blocks of layer1 pass their input through (ReLU of a ReLU output).
    x = torch.rand(2, 64, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(encoder.layer1(x), x)
