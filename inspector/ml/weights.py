"""ImageNet encoder weights: torchvision's enum, a local file, or the TORCH_HOME cache.

Only training needs them: checkpoints carry the encoder's tensors, so the daemon never does.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torchvision import models

from inspector.errors import ConfigError, WeightsUnavailableError
from inspector.model import Encoder

log = logging.getLogger(__name__)


def imagenet_weights_enum(backbone: str) -> Any:
    """The torchvision weights entry used for ``weights: imagenet``.

    IMAGENET1K_V1 is what RD4AD and the published numbers used (V2 weights exist for some
    backbones but change the features the decoder learns to reconstruct).
    """
    return models.get_model_weights(backbone).IMAGENET1K_V1


def cached_weights_path(backbone: str) -> Path:
    """Where torchvision caches (and where offline users place) the ImageNet weights file.

    ``$TORCH_HOME/hub/checkpoints/<file>`` (``~/.cache/torch`` when TORCH_HOME is unset).
    """
    url: str = imagenet_weights_enum(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _load_file(path: Path) -> Mapping[str, torch.Tensor]:
    try:
        # weights_only: a weights file must never be able to run code.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file; all mean the same here
        raise WeightsUnavailableError(f"cannot read encoder weights {path}: {exc}") from exc
    if isinstance(obj, Mapping) and "state_dict" in obj:
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping):
        raise WeightsUnavailableError(f"{path} does not hold a state dict")
    return obj


def load_encoder_weights(encoder: Encoder, backbone: str, weights: str, *, download: bool) -> str:
    """Fill ``encoder`` with the requested weights.

    Args:
        encoder: The encoder to load into.
        backbone: Its architecture name.
        weights: ``imagenet``, ``none`` or the path of a torchvision ResNet state-dict file.
        download: Whether ``imagenet`` may download when the cache is empty.

    Returns:
        A short description of what was loaded, for the checkpoint's training summary.

    Raises:
        WeightsUnavailableError: The weights cannot be found or read; the message says which
            file to place where.
        ConfigError: The file does not fit the backbone.
    """
    if weights == "none":
        log.warning(
            "encoder weights: none (random initialisation); expect far weaker detection than "
            "with ImageNet weights"
        )
        return "none"
    if weights == "imagenet":
        path = cached_weights_path(backbone)
        if path.is_file():
            state = _load_file(path)
            source = f"imagenet:{path.name} (cache)"
        elif download:
            entry = imagenet_weights_enum(backbone)
            try:
                state = entry.get_state_dict(progress=True, check_hash=True)
            except OSError as exc:  # URLError is an OSError: offline, DNS, proxy, disk
                raise WeightsUnavailableError(_offline_message(backbone, path, exc)) from exc
            source = f"imagenet:{path.name} (downloaded)"
        else:
            raise WeightsUnavailableError(_offline_message(backbone, path, None))
    else:
        path = Path(weights)
        if not path.is_file():
            raise ConfigError(
                f"weights: {weights!r} is neither 'imagenet', 'none' nor an existing file"
            )
        state = _load_file(path)
        source = f"file:{path.name}"
    try:
        encoder.load_torchvision_state_dict(state)
    except (KeyError, RuntimeError) as exc:
        raise ConfigError(f"weights {source} do not fit backbone {backbone}: {exc}") from exc
    log.info("encoder weights: %s", source)
    return source


def _offline_message(backbone: str, path: Path, exc: Exception | None) -> str:
    url = imagenet_weights_enum(backbone).url
    reason = f" ({exc})" if exc else " (downloads disabled)"
    return (
        f"ImageNet weights for {backbone} are not cached and cannot be downloaded{reason}. "
        f"Fetch {url} on a machine with internet access and place it at {path} "
        f"(set TORCH_HOME to change the cache folder), or pass --weights /path/to/file.pth, "
        f"or --weights none to train from random initialisation."
    )
