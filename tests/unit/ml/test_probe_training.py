"""Training stores a probe set: a few of the images trained on and the fp32 model's values."""

from __future__ import annotations

from pathlib import Path

import torch

from inspector.checkpoint import PROBE_IMAGES, load_checkpoint
from inspector.ml.config import TrainConfig
from inspector.ml.trainer import train
from inspector.model.config import ArchitectureConfig
from inspector.model.probes import record_probes
from inspector.tools.synth import generate_dataset


def test_training_stores_a_probe_set_of_its_own_images(tmp_path: Path) -> None:
    data = generate_dataset(
        tmp_path / "data",
        category="metal",
        seed=3,
        image_size=64,
        n_train=6,
        n_test_good=1,
        n_test_per_defect=1,
    )
    out = tmp_path / "m.safetensors"
    train(
        data.root,
        out,
        model_config=ArchitectureConfig(backbone="resnet18", image_size=64),
        train_config=TrainConfig(epochs=1, batch_size=4, weights="none", device="cpu", seed=0),
        progress=False,
    )
    loaded = load_checkpoint(out)
    probes = loaded.meta.probes
    assert probes is not None and probes.source == "training" and len(probes.values) == 4
    images = loaded.extra[PROBE_IMAGES]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 64, 64)
    # The recorded values are the saved (best-epoch) model's, on the stored images.
    assert record_probes(loaded.model, images, loaded.meta.preprocessing, "training") == probes
