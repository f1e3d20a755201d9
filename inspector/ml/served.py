"""A model loaded as the daemon serves it, for the offline commands (``predict``, ``calibrate``).

Through :func:`inspector.backends.load_model`, the daemon's own loader, so a command scores with
what the daemon would serve: ``precision: auto`` is the daemon's measured choice
(:mod:`inspector.backends.auto`), read from the same cache (``model.auto_cache_dir``, by default
``$XDG_CACHE_HOME/inspector``) when this machine has already measured this checkpoint at this
batch size, and measured and cached there otherwise; ``int8`` is the checkpoint's int8 record;
an export (``--backend openvino|onnxruntime``) runs on its own graph. The same machine and
checkpoint thus score with the same precision in the daemon and in every command.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch

from inspector.backends import LoadedModel, load_model
from inspector.model.device import resolve_device
from inspector.model.engine import Backend
from inspector.model.fastpath import RuntimeOptions
from inspector.runtime.config import ModelConfig

log = logging.getLogger(__name__)

ServedPrecision = Literal["fp32", "bf16", "int8", "auto"]
DeviceName = Literal["auto", "cpu", "cuda"]


def default_auto_cache_dir() -> Path | None:
    """The daemon's default ``model.auto_cache_dir`` (``$XDG_CACHE_HOME/inspector``)."""
    return ModelConfig().auto_cache_dir


def command_device(backend: Backend, device: DeviceName) -> torch.device:
    """Where a command runs: ``auto`` is the CPU for an export (exports run on the CPU).

    Raises:
        ConfigError: ``cuda`` on a machine without a CUDA GPU.
    """
    if backend != "torch" and device == "auto":
        return torch.device("cpu")
    return resolve_device(device)


def load_served(
    path: Path,
    backend: Backend,
    *,
    device: DeviceName,
    precision: ServedPrecision,
    batch_size: int,
    auto_cache_dir: Path | None,
) -> LoadedModel:
    """Load a checkpoint or an export as the daemon would serve it, and log what serves.

    Args:
        path: The checkpoint (``torch``) or the export folder.
        backend: ``torch``, ``openvino`` or ``onnxruntime`` (the daemon's ``model.backend``).
        device: The daemon's ``model.device`` (``auto``: the CPU for an export).
        precision: The daemon's ``model.precision`` (``torch`` only: an export carries its own).
        batch_size: Images per forward pass; with ``auto``, the batch the choice is measured at
            (the daemon's ``batcher.max_batch_size``: give the same to share its cached choice).
        auto_cache_dir: The daemon's ``model.auto_cache_dir`` (``None``: measure, keep nothing).

    Raises:
        CheckpointError: Not a readable checkpoint (``torch``), or ``int8`` failed its check.
        ExportError: Not a readable export, or the wrong kind for ``backend``.
        BackendUnavailableError: The backend's package is not installed.
        ConfigError: A device that is not available, or ``int8`` without an int8 record.
    """
    loaded = load_model(
        path,
        backend,
        command_device(backend, device),
        RuntimeOptions(precision=precision),
        batch_size=batch_size,
        auto_cache_dir=auto_cache_dir,
    )
    if loaded.auto is not None:
        # The daemon's log line, so the two can be compared.
        log.info(
            "precision %s: %s on %s (%s%s)",
            precision,
            loaded.auto.precision,
            loaded.auto.backend,
            loaded.auto.reason,
            "; cached" if loaded.auto.cached else "",
        )
    return loaded
