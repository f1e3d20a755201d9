from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from inspector.checkpoint import LoadedCheckpoint
from inspector.errors import DatasetError
from inspector.ml.config import TrainConfig
from inspector.ml.evaluate import evaluate
from inspector.ml.trainer import TrainResult, train
from inspector.model.config import ArchitectureConfig
from inspector.tools.synth import SynthSummary

# Trains models (minutes on two cores): the component tier (make component), not make unit.
pytestmark = pytest.mark.component

# A random-init resnet18 trained for a few epochs reaches clearly above 0.5 on the synthetic
# line (see the issue note for measured figures); an untrained or broken model stays near 0.5.
AUROC_FLOOR = 0.75


def test_loss_falls(trained: TrainResult) -> None:
    losses = [h.train_loss for h in trained.history]
    assert losses[-1] < 0.7 * losses[0]
    assert trained.history[-1].val_loss < trained.history[0].val_loss


def test_trained_model_detects_synthetic_defects(
    checkpoint: LoadedCheckpoint, data_root: Path
) -> None:
    report = evaluate(checkpoint, data_root)
    assert report["image_auroc"] > AUROC_FLOOR
    assert report["pixel_auroc"] > AUROC_FLOOR
    assert 0.0 <= report["pixel_aupro"] <= 1.0
    assert report["n_images"] == 12 + 4 * 5


def test_untrained_model_does_not_pass_the_floor(
    checkpoint: LoadedCheckpoint, data_root: Path
) -> None:
    # The floor must be one a broken model cannot pass: the same architecture with a freshly
    # initialised decoder (what a training loop that never steps would produce).
    import torch

    from inspector.checkpoint import LoadedCheckpoint as Loaded
    from inspector.model import ReverseDistillation

    torch.manual_seed(123)
    fresh = ReverseDistillation(checkpoint.meta.model).eval()
    fresh.encoder.load_state_dict(checkpoint.model.encoder.state_dict())
    report = evaluate(Loaded(fresh, checkpoint.meta, "0" * 64, checkpoint.path), data_root)
    assert report["image_auroc"] < AUROC_FLOOR


def test_checkpoint_knows_its_threshold(trained: TrainResult, checkpoint: LoadedCheckpoint) -> None:
    cal = checkpoint.meta.calibration
    assert cal is not None and cal.mode == "good_only"  # synth has no validation/ defects
    assert cal.image_min <= cal.image_threshold <= cal.image_max
    training = checkpoint.meta.training
    assert training["weights"] == "none"
    assert training["n_train"] + training["n_val_good"] == 40
    assert len(training["history"]) == len(trained.history)


def test_corrupt_training_image_is_skipped_and_reported(
    synth_data: SynthSummary, tmp_path: Path
) -> None:
    root = tmp_path / "data"
    good = root / "train" / "good"
    good.mkdir(parents=True)
    for src in sorted((synth_data.root / "train" / "good").iterdir())[:6]:
        shutil.copy(src, good / src.name)
    (good / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (good / "zz_empty.jpg").write_bytes(b"")
    result = train(
        root,
        tmp_path / "m.safetensors",
        model_config=ArchitectureConfig(backbone="resnet18", image_size=64),
        train_config=TrainConfig(epochs=1, batch_size=4, weights="none", device="cpu"),
        progress=False,
    )
    assert sorted(p.name for p, _ in result.skipped) == ["zz_corrupt.png", "zz_empty.jpg"]
    assert result.checkpoint.is_file()


def test_early_stopping_keeps_best_epoch(synth_data: SynthSummary, tmp_path: Path) -> None:
    # A min_delta no later epoch can beat: patience must stop training two epochs after the first.
    result = train(
        synth_data.root,
        tmp_path / "m.safetensors",
        model_config=ArchitectureConfig(backbone="resnet18", image_size=64),
        train_config=TrainConfig(
            epochs=30, batch_size=8, weights="none", device="cpu", patience=2, min_delta=10.0
        ),
        progress=False,
    )
    assert len(result.history) == 3  # epoch 1 is best; 2 and 3 fail to beat it by min_delta
    assert result.best_epoch == 1


def test_validation_folder_enables_f1_calibration(synth_data: SynthSummary, tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_data.root / "train", root / "train")
    for cls in ("good", "crack"):
        shutil.copytree(synth_data.root / "test" / cls, root / "validation" / cls)
    shutil.copytree(synth_data.root / "ground_truth" / "crack", root / "ground_truth" / "crack")
    result = train(
        root,
        tmp_path / "m.safetensors",
        model_config=ArchitectureConfig(backbone="resnet18", image_size=64),
        train_config=TrainConfig(epochs=1, batch_size=8, weights="none", device="cpu"),
        progress=False,
    )
    assert result.calibration.mode == "f1"
    assert result.calibration.n_anomalous == 4


def test_missing_folder_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        train(
            tmp_path / "missing",
            tmp_path / "m.safetensors",
            model_config=ArchitectureConfig(backbone="resnet18", image_size=64),
            train_config=TrainConfig(weights="none", device="cpu"),
            progress=False,
        )
    assert not (tmp_path / "m.safetensors").exists()


def test_same_seed_same_result(synth_data: SynthSummary, tmp_path: Path) -> None:
    def run(name: str) -> list[float]:
        result = train(
            synth_data.root,
            tmp_path / name,
            model_config=ArchitectureConfig(backbone="resnet18", image_size=32),
            train_config=TrainConfig(epochs=1, batch_size=8, weights="none", device="cpu"),
            progress=False,
        )
        return [h.train_loss for h in result.history]

    np.testing.assert_allclose(run("a.safetensors"), run("b.safetensors"), rtol=1e-5)
