"""Device selection shared by training, evaluation and the worker."""

from __future__ import annotations

import torch

from inspector.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA if available else CPU; ``cuda`` without a GPU is a config error.

    Raises:
        ConfigError: ``cuda`` asked for on a machine without a CUDA GPU.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device: {name} was asked for but no CUDA GPU is available; use cpu or auto"
        )
    return torch.device(name)
