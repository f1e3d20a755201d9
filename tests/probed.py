"""Checkpoints with a probe set, honest or tampered, for the parity check's tests.

A small random model (resnet18, 64 px): its probe set is recorded as training records one
(:func:`inspector.ml.probes.with_probes`); a tampered copy is the file rewritten with one
recorded value changed and sealed again, as an export or quantization that changed the maps
would leave a model whose scores no longer match its record.
"""

from __future__ import annotations

from pathlib import Path

import torch
from fakes import UNIT_CALIBRATION

from inspector.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from inspector.ml.probes import with_probes
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig

#: The models' input size.
SIZE = 64


def small_model() -> ReverseDistillation:
    """resnet18 at :data:`SIZE` px, seeded random weights, eval mode."""
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=SIZE)).eval()


def write_probed(path: Path, *, probes: bool = True) -> Path:
    """A calibrated checkpoint of :func:`small_model` with a probe set of 4 random images."""
    model = small_model()
    meta = CheckpointMeta(name="probed", model=model.config, calibration=UNIT_CALIBRATION)
    extra: dict[str, torch.Tensor] = {}
    if probes:
        images = torch.rand(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
        meta, extra = with_probes(meta, model, images, "training")
    save_checkpoint(path, model, meta, extra)
    return path


def tamper(source: Path, out: Path, probe: int = 1, by: float = 0.5) -> float:
    """Rewrite ``source`` at ``out`` with probe ``probe``'s recorded map mean moved by ``by``.

    Sealed again as any writer seals a checkpoint (its digest fits), so only the parity check
    can tell. Returns the recorded value written.
    """
    loaded = load_checkpoint(source)
    assert loaded.meta.probes is not None
    values = list(loaded.meta.probes.values)
    changed = values[probe].map_mean + by
    values[probe] = values[probe].model_copy(update={"map_mean": changed})
    probes = loaded.meta.probes.model_copy(update={"values": tuple(values)})
    save_checkpoint(
        out, loaded.model, loaded.meta.model_copy(update={"probes": probes}), loaded.extra
    )
    return changed
