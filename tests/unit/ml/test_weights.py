from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torchvision import models

from inspector.errors import ConfigError, WeightsUnavailableError
from inspector.ml.weights import cached_weights_path, load_encoder_weights
from inspector.model import Encoder


@pytest.fixture()
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    return tmp_path


def test_cache_path_follows_torch_home(torch_home: Path) -> None:
    path = cached_weights_path("resnet18")
    assert path.parent == torch_home / "hub" / "checkpoints"
    assert path.name.startswith("resnet18-") and path.suffix == ".pth"


def test_offline_without_cache_names_the_file_to_place(torch_home: Path) -> None:
    with pytest.raises(WeightsUnavailableError) as info:
        load_encoder_weights(Encoder("resnet18"), "resnet18", "imagenet", download=False)
    message = str(info.value)
    assert str(cached_weights_path("resnet18")) in message
    assert "https://download.pytorch.org/models/resnet18-" in message
    assert "--weights none" in message


def test_imagenet_weights_load_from_the_cache(torch_home: Path) -> None:
    torch.manual_seed(1)
    reference = models.resnet18(weights=None)
    path = cached_weights_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    encoder = Encoder("resnet18")
    source = load_encoder_weights(encoder, "resnet18", "imagenet", download=False)
    assert "cache" in source
    torch.testing.assert_close(encoder.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)
    assert not any(p.requires_grad for p in encoder.parameters())


def test_local_file_and_wrong_backbone(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": models.resnet18(weights=None).state_dict()}, path)
    assert load_encoder_weights(Encoder("resnet18"), "resnet18", str(path), download=False)
    with pytest.raises(ConfigError, match="do not fit"):
        load_encoder_weights(Encoder("resnet34"), "resnet34", str(path), download=False)
    with pytest.raises(ConfigError, match="neither"):
        load_encoder_weights(
            Encoder("resnet18"), "resnet18", str(tmp_path / "x.pth"), download=False
        )


def test_garbage_weights_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.pth"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="cannot read"):
        load_encoder_weights(Encoder("resnet18"), "resnet18", str(path), download=False)


def test_none_leaves_random_init() -> None:
    encoder = Encoder("resnet18")
    before = encoder.conv1.weight.clone()
    assert load_encoder_weights(encoder, "resnet18", "none", download=False) == "none"
    assert torch.equal(before, encoder.conv1.weight)
