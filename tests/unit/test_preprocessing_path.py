"""A checkpoint's own preprocessing is what training, evaluation, prediction and serving apply."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from fakes import UNIT_CALIBRATION
from prometheus_client import CollectorRegistry

from inspector.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from inspector.ml.predict import predict
from inspector.ml.trainer import score_images
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.model.preprocess import IMAGENET, Preprocessing, preprocess, to_tensor_rgb
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon
from inspector.runtime.metrics import Metrics
from inspector.runtime.worker import ModelWorker

#: Not ImageNet's: an anomalib import of a model trained with its own statistics.
OTHER = Preprocessing(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()
    meta = CheckpointMeta(
        name="other-stats", model=model.config, calibration=UNIT_CALIBRATION, preprocessing=OTHER
    )
    path = tmp_path_factory.mktemp("ckpt") / "m.safetensors"
    save_checkpoint(path, model, meta)
    return path


def _image() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)


def _reference(model: ReverseDistillation, image: np.ndarray, pre: Preprocessing) -> np.ndarray:
    with torch.inference_mode():
        out = model(preprocess(to_tensor_rgb(image).unsqueeze(0), (64, 64), pre))
    return out.anomaly_map[0, 0].numpy()


def test_every_path_applies_the_checkpoints_statistics(saved: Path, tmp_path: Path) -> None:
    loaded = load_checkpoint(saved)
    assert loaded.meta.preprocessing == OTHER  # stored and read back
    image = _image()
    expected = _reference(loaded.model, image, OTHER)
    imagenet = _reference(loaded.model, image, IMAGENET)
    assert np.abs(expected - imagenet).max() > 1e-3  # the statistics matter for this model

    # Serving: the worker as the daemon builds it.
    worker = ModelWorker(
        loaded.model,
        torch.device("cpu"),
        Metrics(CollectorRegistry()),
        warmup_batches=0,
        preprocessing=loaded.meta.preprocessing,
    )
    served = worker.score([image]).maps[0]
    assert served is not None
    np.testing.assert_allclose(served.numpy(), expected, atol=1e-5)

    # Evaluation and calibration: images in 0..1 at the model size.
    images01 = to_tensor_rgb(image).unsqueeze(0).float() / 255.0
    _, maps = score_images(
        loaded.model,
        images01,
        batch_size=1,
        device=torch.device("cpu"),
        preprocessing=loaded.meta.preprocessing,
    )
    np.testing.assert_allclose(maps[0], expected, atol=1e-5)

    # Offline prediction.
    cv2.imwrite(str(tmp_path / "part.png"), image)
    predict(
        loaded,
        [tmp_path / "part.png"],
        tmp_path / "out",
        save_maps=True,
        overlays=False,
        precision="fp32",
    )
    np.testing.assert_allclose(np.load(tmp_path / "out" / "maps" / "part.npy"), expected, atol=1e-5)


def test_the_daemon_serves_with_the_checkpoints_statistics(saved: Path) -> None:
    config = InspectorConfig.model_validate(
        {
            "model": {"checkpoint": str(saved), "device": "cpu", "warmup_batches": 0},
            "sources": [{"type": "directory", "path": str(saved.parent / "*.png")}],
            "sinks": {"kafka": {"enabled": False}},
        }
    )
    worker = Daemon(config, registry=CollectorRegistry())._load_model().worker
    assert worker.preprocessing == OTHER
