"""Training with the daemon's region of interest and tiling (``inspector train --roi --tile``).

The model must be trained and calibrated on exactly what the daemon shows it: the same crop,
the same tiles at native resolution, and thresholds fitted to frames' stitched maps.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from inspector.checkpoint import load_checkpoint
from inspector.errors import DatasetError
from inspector.ml.config import TrainConfig
from inspector.ml.data import training_items
from inspector.ml.regions import load_regions, score_regions
from inspector.ml.trainer import train
from inspector.model.config import ArchitectureConfig
from inspector.model.region_config import RoiConfig, TilingConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.recipes import CameraRecipe
from inspector.runtime.regions import plan_view
from inspector.runtime.worker import ModelWorker

SIZE = 64
FRAME = (150, 230)  # height, width: a region of several tiles that do not divide it evenly
ROI = RoiConfig(x=20, y=10, width=200, height=130)
TILING = TilingConfig(tile=SIZE, overlap=16)


def _frames(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        grain = cv2.GaussianBlur(rng.normal(128, 40, FRAME).astype(np.float32), (0, 0), 1.5)
        img = np.clip(grain, 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.repeat(img[..., None], 3, axis=2))


@pytest.fixture(scope="module")
def tiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiled")
    _frames(root / "good", 10)
    out = root / "model.safetensors"
    train(
        root / "good",
        out,
        model_config=ArchitectureConfig(backbone="resnet18", image_size=SIZE),
        train_config=TrainConfig(
            weights="none",
            epochs=1,
            batch_size=16,
            val_fraction=0.3,
            device="cpu",
            roi=ROI,
            tiling=TILING,
        ),
        progress=False,
    )
    return out


def test_training_sees_the_tiles_the_daemon_cuts(tiled: Path, tmp_path: Path) -> None:
    meta = load_checkpoint(tiled).meta
    assert meta.training["tiling"] == {"tile": SIZE, "overlap": 16}
    assert meta.training["roi"]["width"] == ROI.width
    view = plan_view(CameraRecipe(roi=ROI, tiling=TILING), FRAME, (SIZE, SIZE))
    assert view is not None and view.grid is not None
    # 7 of 10 frames train (3 held out), each cut into the daemon's tile count.
    assert meta.training["n_train_inputs"] == 7 * view.grid.count
    assert meta.calibration is not None and meta.calibration.n_good == 3


def test_calibration_scores_are_the_daemons_scores(tiled: Path) -> None:
    """What the thresholds were fitted to is what the worker computes for the same frame."""
    loaded = load_checkpoint(tiled)
    folder = tiled.parent / "good"
    regions = load_regions(training_items(folder), (SIZE, SIZE), ROI, TILING)
    scores, maps = score_regions(
        loaded.model, regions, [0, 1], batch_size=8, device=torch.device("cpu")
    )
    assert maps.shape == (2, ROI.height, ROI.width)
    worker = ModelWorker(
        loaded.model, torch.device("cpu"), Metrics(CollectorRegistry()), warmup_batches=0
    )
    frames = [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))[:2]]
    views = [plan_view(CameraRecipe(roi=ROI, tiling=TILING), FRAME, (SIZE, SIZE))] * 2
    out = worker.score_views(frames, views)  # type: ignore[arg-type]
    np.testing.assert_allclose(out.scores.numpy(), scores, rtol=1e-4, atol=1e-5)
    first = out.maps[0]
    assert first is not None
    np.testing.assert_allclose(np.asarray(first), maps[0], rtol=1e-4, atol=1e-5)


def test_tile_must_be_the_model_size(tmp_path: Path) -> None:
    _frames(tmp_path / "good", 3)
    with pytest.raises(DatasetError, match="--image-size 32"):
        load_regions(
            training_items(tmp_path / "good"), (SIZE, SIZE), None, TilingConfig(tile=32, overlap=8)
        )


def test_frames_of_another_size_are_refused(tmp_path: Path) -> None:
    _frames(tmp_path / "good", 2)
    cv2.imwrite(str(tmp_path / "good" / "zz.png"), np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(DatasetError, match=r"zz\.png is 100x100"):
        load_regions(training_items(tmp_path / "good"), (SIZE, SIZE), None, TILING)
