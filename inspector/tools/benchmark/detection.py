"""Detection quality without downloaded weights: the project's training against anomalib's.

Each case trains one model on a dataset's good images and scores its test images; the figures
are image AUROC (good test images against one defect kind), pixel AUROC and AU-PRO (over the
same images), per defect kind and over all kinds. Cases:

- ``ours``: the project's training with its defaults (torchvision's initialisation, the
  batch-norm statistics a random network is built with, no flips);
- ``ours-adabn``: the same with the batch-norm statistics adapted to the good images first
  (``adapt_batchnorm``, :mod:`inspector.ml.random_encoder`);
- ``ours-flips``: the same with random flips of the training images (``augment_flips``);
- ``anomalib``: anomalib's own ``ReverseDistillationModel`` and loss, trained with the same
  settings (Adam at the same rate with anomalib's betas, same epochs and batch size, the same
  images at the same size, every good training image, the last epoch kept).

The project's cases run :func:`inspector.ml.trainer.train` itself, exactly as ``inspector
train`` does (its held-out share and best-epoch choice included).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspector.checkpoint import load_checkpoint
from inspector.ml.config import TrainConfig
from inspector.ml.data import LoadedImages, labelled_items, load_items, training_items
from inspector.ml.metrics import image_auroc, pixel_aupro, pixel_auroc
from inspector.ml.trainer import score_images, train
from inspector.model.config import ArchitectureConfig, Backbone
from inspector.model.preprocess import normalise

#: The settings every case shares (the issue's: resnet18, 128 px, 10 epochs, Adam 0.005, 16).
BACKBONE: Backbone = "resnet18"
IMAGE_SIZE = 128
EPOCHS = 10
BATCH_SIZE = 16
LEARNING_RATE = 0.005
#: The project's training switches of each case.
OURS: dict[str, dict[str, Any]] = {
    "ours": {},
    "ours-adabn": {"adapt_batchnorm": True},
    "ours-flips": {"augment_flips": True},
}
CASES: tuple[str, ...] = (*OURS, "anomalib")


@dataclass(frozen=True)
class Scored:
    """One trained model's test scores.

    Attributes:
        scores: Image scores ``(N,)``.
        maps: Anomaly maps ``(N, H, W)``.
        train_seconds: Wall time of training (and, for the project, calibration).
    """

    scores: np.ndarray
    maps: np.ndarray
    train_seconds: float


def _ours(
    data: Path, test: LoadedImages, seed: int, overrides: dict[str, Any], epochs: int
) -> Scored:
    with tempfile.TemporaryDirectory(prefix="inspector-detection-") as tmp:
        t0 = time.perf_counter()
        train(
            data,
            Path(tmp) / "model.safetensors",
            model_config=ArchitectureConfig(backbone=BACKBONE, image_size=(IMAGE_SIZE, IMAGE_SIZE)),
            train_config=TrainConfig(
                weights="none",
                epochs=epochs,
                batch_size=BATCH_SIZE,
                learning_rate=LEARNING_RATE,
                seed=seed,
                device="cpu",
                **overrides,
            ),
            progress=False,
        )
        seconds = time.perf_counter() - t0
        loaded = load_checkpoint(Path(tmp) / "model.safetensors")
    scores, maps = score_images(
        loaded.model, test.images, batch_size=BATCH_SIZE, device=torch.device("cpu")
    )
    return Scored(scores, maps, seconds)


def _anomalib(data: Path, test: LoadedImages, seed: int, epochs: int) -> Scored:
    from anomalib.models.image.reverse_distillation.anomaly_map import (
        AnomalyMapGenerationMode,
    )
    from anomalib.models.image.reverse_distillation.loss import ReverseDistillationLoss
    from anomalib.models.image.reverse_distillation.torch_model import (
        ReverseDistillationModel,
    )

    size = (IMAGE_SIZE, IMAGE_SIZE)
    images = load_items(training_items(data), size).images
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = ReverseDistillationModel(
        backbone=BACKBONE,
        input_size=size,
        layers=["layer1", "layer2", "layer3"],
        anomaly_map_mode=AnomalyMapGenerationMode.ADD,
        pre_trained=False,
    )
    loss_fn = ReverseDistillationLoss()
    # anomalib's ReverseDistillation.configure_optimizers: Adam on decoder + bottleneck.
    optimizer = torch.optim.Adam(
        [*model.decoder.parameters(), *model.bottleneck.parameters()],
        lr=LEARNING_RATE,
        betas=(0.5, 0.99),
    )
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.split(torch.randperm(len(images), generator=generator), BATCH_SIZE):
            if len(idx) < 2:  # the encoder's batch norm is frozen, the decoder's is not
                continue
            encoded, decoded = model(normalise(images[idx]))
            loss = loss_fn(encoded, decoded)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - t0
    model.eval()
    scores, maps = [], []
    with torch.inference_mode():
        for start in range(0, len(test.images), BATCH_SIZE):
            out = model(normalise(test.images[start : start + BATCH_SIZE]))
            scores.append(out.pred_score.reshape(-1).float().numpy())
            maps.append(out.anomaly_map[:, 0].float().numpy())
    return Scored(np.concatenate(scores), np.concatenate(maps), seconds)


def metrics_per_kind(test: LoadedImages, scored: Scored) -> dict[str, dict[str, float]]:
    """Image AUROC, pixel AUROC and AU-PRO over all kinds (``all``) and per defect kind.

    Each kind is scored on the good test images plus that kind's images.
    """
    labels = np.array([it.label for it in test.items])
    kinds = np.array([it.defect for it in test.items])
    masks = test.masks.numpy() if test.masks is not None else np.zeros(scored.maps.shape, bool)
    out: dict[str, dict[str, float]] = {}
    for kind in ["all", *sorted(set(kinds.tolist()) - {"good"})]:
        sel = np.ones(len(kinds), bool) if kind == "all" else (kinds == "good") | (kinds == kind)
        out[kind] = {
            "image_auroc": image_auroc(labels[sel], scored.scores[sel]),
            "pixel_auroc": pixel_auroc(masks[sel], scored.maps[sel]),
            "pixel_aupro": pixel_aupro(masks[sel], scored.maps[sel]),
        }
    return out


def run_case(
    case: str, data: Path, seed: int, *, epochs: int = EPOCHS
) -> tuple[dict[str, dict[str, float]], float]:
    """Train ``case`` on ``data`` with ``seed``; per-kind metrics and training seconds."""
    test = load_items(labelled_items(data, "test"), (IMAGE_SIZE, IMAGE_SIZE), with_masks=True)
    if case == "anomalib":
        scored = _anomalib(data, test, seed, epochs)
    else:
        scored = _ours(data, test, seed, OURS[case], epochs)
    return metrics_per_kind(test, scored), scored.train_seconds
