"""The probe set a training or calibration run stores with its checkpoint.

A few of the good images the run used, at the model's input size, and the fp32 model's values
on them (:mod:`inspector.model.probes`); every load of the model, in the daemon, compares the
served model with them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import torch

from inspector.checkpoint import PROBE_IMAGES, CheckpointMeta
from inspector.ml.data import LabelledImage, list_images, load_items
from inspector.model import ReverseDistillation
from inspector.model.probes import PROBE_COUNT, pick_probe_images, record_probes

log = logging.getLogger(__name__)


def with_probes(
    meta: CheckpointMeta,
    model: ReverseDistillation,
    images: torch.Tensor,
    source: Literal["training", "calibration"],
    extra: dict[str, torch.Tensor] | None = None,
) -> tuple[CheckpointMeta, dict[str, torch.Tensor]]:
    """``meta`` and ``extra`` with a probe set recorded from ``images`` (one replaced).

    Args:
        meta: The checkpoint's metadata (its preprocessing normalises the probes).
        model: The model, on the CPU (fp32 reference).
        images: Good images the run used, uint8 or float in 0..1, ``(N, 3, H, W)`` at the
            model's input size; ``N == 0``: ``meta`` and ``extra`` are returned unchanged.
        source: ``training`` or ``calibration``.
        extra: The checkpoint's other stored tensors (the int8 record's images), kept.

    Returns:
        The metadata with :attr:`~CheckpointMeta.probes`, and the tensors to store with
        :data:`~inspector.checkpoint.PROBE_IMAGES` among them.
    """
    kept = dict(extra or {})
    if not len(images):
        return meta, kept
    picked = pick_probe_images(images)
    probes = record_probes(model, picked, meta.preprocessing, source)
    log.info(
        "probe set: %d %s image(s) recorded for the load-time parity check", len(picked), source
    )
    return meta.model_copy(update={"probes": probes}), {**kept, PROBE_IMAGES: picked}


def probe_images_from(folder: Path, size: tuple[int, int]) -> torch.Tensor:
    """Up to :data:`~inspector.model.probes.PROBE_COUNT` images of ``folder``, evenly spread.

    Read and resized as training reads them (unreadable ones are skipped, so fewer may come).

    Args:
        folder: Good images (``inspector calibrate --good``).
        size: The model's input ``(H, W)``.

    Returns:
        Float RGB in 0..1 ``(n, 3, H, W)``, ``n`` possibly 0.
    """
    paths = list_images(folder)
    if not paths:
        return torch.empty(0, 3, *size)
    step = max(1, len(paths) // PROBE_COUNT)
    chosen = paths[::step][:PROBE_COUNT]
    return load_items([LabelledImage(p) for p in chosen], size).images
