"""Tiling finds what resizing loses: a 6 px pit on a 2048 x 2048 frame.

The detector is Reverse Distillation with a random-weight ResNet-18 encoder (no ImageNet
weights offline, and training a decoder takes minutes on two cores) and, in place of the
trained decoder, the closed-form optimum of RD's cosine objective for a decoder that ignores
its input: at each position of each layer, the mean direction of the encoder's features on
good inputs. The anomaly map is RD's own (``1 - cos`` per layer, upsampled, summed, blurred):
how far each place looks from what good surface looks like there. Everything after the
decoder is the daemon's code, driven through its pipeline; thresholds are fitted by the
product's own ``fit_calibration``.

Each camera gets its own model, fitted and calibrated on what it sees of good surface: native
256 px tiles for the tiled camera, whole frames resized to 256 px for the other.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from fakes import FakeSink, FakeSource, make_frame
from prometheus_client import CollectorRegistry
from torch import nn
from waiting import wait_until

from inspector.messages import ModelRef
from inspector.ml.calibration_fit import fit_calibration
from inspector.ml.config import CalibrationMode
from inspector.model import ReverseDistillation
from inspector.model.calibration import Calibration
from inspector.model.config import ArchitectureConfig
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.runtime.config import BatcherConfig, PostprocessConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelSet, ServedModel
from inspector.runtime.pipeline import Pipeline
from inspector.runtime.postprocess import Postprocessor
from inspector.runtime.recipes import CameraRecipe, Recipes, TilingConfig
from inspector.runtime.worker import ModelWorker

FRAME = 2048
SIZE = 256
#: The defect: a black pit of 6 x 6 px, top-left at (x, y).
PIT_X, PIT_Y, PIT = 1203, 997, 6


def _surface(seed: int) -> np.ndarray:
    """Good surface: grey with grain at 2, 8 and 16 px, BGR uint8 ``(2048, 2048, 3)``."""
    rng = np.random.default_rng(seed)
    img = np.full((FRAME, FRAME), 140.0, np.float32)
    for scale, amplitude in ((2, 4.0), (8, 6.0), (16, 6.0)):
        side = FRAME // scale + 2
        noise = rng.normal(0, 1, (side, side)).astype(np.float32)
        grain = cv2.resize(noise, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        img += amplitude * grain[:FRAME, :FRAME] / grain.std()
    grey = np.clip(img, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


class _Pass(nn.Module):
    """The bottleneck: hands the batch on (the decoder below ignores its content)."""

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        return features[0]


class _MeanDecoder(nn.Module):
    """Per layer and position, the unit mean of good features: ``(1, C_k, H_k, W_k)``."""

    def __init__(self, means: list[torch.Tensor]) -> None:
        super().__init__()
        for k, mean in enumerate(means):
            self.register_buffer(f"mean{k}", mean)
        self.layers = len(means)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        means = [getattr(self, f"mean{k}") for k in range(self.layers)]
        return [m.expand(x.shape[0], -1, -1, -1) for m in means]


def _fitted(good: torch.Tensor) -> ReverseDistillation:
    """RD whose decoder is fitted on normalised good inputs ``(N, 3, 256, 256)``."""
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=SIZE)).eval()
    sums: list[torch.Tensor] = []
    with torch.inference_mode():
        for i in range(0, len(good), 8):
            features = model.encoder(good[i : i + 8])
            unit = [F.normalize(f, dim=1).sum(0, keepdim=True) for f in features]
            sums = unit if not sums else [a + b for a, b in zip(sums, unit, strict=True)]
    model.bottleneck = _Pass()  # type: ignore[assignment]
    model.decoder = _MeanDecoder([F.normalize(s, dim=1) for s in sums])  # type: ignore[assignment]
    return model


def _served(name: str, model: ReverseDistillation, calibration: Calibration) -> ServedModel:
    worker = ModelWorker(model, torch.device("cpu"), Metrics(CollectorRegistry()), warmup_batches=0)
    ref = ModelRef(name=name, backbone="resnet18", checkpoint_sha256="0" * 64)
    post = Postprocessor(calibration, ref, PostprocessConfig())
    return ServedModel(name, Path(f"{name}.safetensors"), "0" * 64, worker, post, 0)


def _pit(image: np.ndarray, x: int, y: int, grey: int = 0) -> np.ndarray:
    pitted = image.copy()
    pitted[y : y + PIT, x : x + PIT] = grey
    return pitted


def _pitted_tiles(
    frames: list[np.ndarray], per_frame: int, seed: int
) -> tuple[torch.Tensor, np.ndarray]:
    """Native crops with a pit each (black to dark grey), normalised ``(N, 3, 256, 256)``,
    and the pits' masks ``(N, 256, 256)``.
    """
    rng = np.random.default_rng(seed)
    crops, masks = [], np.zeros((len(frames) * per_frame, SIZE, SIZE), bool)
    for frame in frames:
        for y, x in rng.integers(0, FRAME - SIZE, (per_frame, 2)):
            px, py = rng.integers(48, SIZE - 48 - PIT, 2)
            grey = int(rng.integers(0, 60))
            crops.append(to_tensor_rgb(_pit(frame[y : y + SIZE, x : x + SIZE], px, py, grey)))
            masks[len(crops) - 1, py : py + PIT, px : px + PIT] = True
    return preprocess(torch.stack(crops), (SIZE, SIZE)), masks


def _tiles(frames: list[np.ndarray], per_frame: int, seed: int) -> torch.Tensor:
    """Random 256 px crops at native resolution, normalised ``(N, 3, 256, 256)``."""
    rng = np.random.default_rng(seed)
    crops = []
    for frame in frames:
        for y, x in rng.integers(0, FRAME - SIZE, (per_frame, 2)):
            crops.append(to_tensor_rgb(frame[y : y + SIZE, x : x + SIZE]))
    return preprocess(torch.stack(crops), (SIZE, SIZE))


def _resized(frames: list[np.ndarray]) -> torch.Tensor:
    """Whole frames resized as the untiled path resizes them, ``(N, 3, 256, 256)``."""
    return preprocess(torch.stack([to_tensor_rgb(f) for f in frames]), (SIZE, SIZE))


def test_a_6px_defect_on_a_2048px_frame_is_found_by_tiles_and_lost_by_resizing() -> None:
    good = [_surface(seed) for seed in range(12)]

    # The tiled camera's model: fitted on native tiles, calibrated as `inspector calibrate`
    # does in f1 mode on validation tiles, good ones and ones with a pit (and its mask).
    tiled_model = _fitted(_tiles(good[:2], 8, seed=1))
    valid_good, valid_pitted = _tiles(good[2:4], 8, seed=2), _pitted_tiles(good[2:4], 8, seed=3)
    with torch.inference_mode():
        out = tiled_model(torch.cat([valid_good, valid_pitted[0]]))
    masks = np.concatenate([np.zeros((16, SIZE, SIZE), bool), valid_pitted[1]])
    tiled_calibration = fit_calibration(
        out.pred_score.numpy(),
        np.repeat([0, 1], 16),
        out.anomaly_map[:, 0].numpy(),
        masks,
        mode=CalibrationMode.F1,
        target_false_alarm_rate=0.005,
    )
    # The resized camera's model: fitted and calibrated (good frames only: at 256 px a pit is
    # no label it could learn from) on whole frames resized to 256 px.
    whole_model = _fitted(_resized(good[4:8]))
    with torch.inference_mode():
        whole_out = whole_model(_resized(good[8:]))
    whole_calibration = fit_calibration(
        whole_out.pred_score.numpy(),
        np.zeros(4),
        whole_out.anomaly_map[:, 0].numpy(),
        None,
        mode=CalibrationMode.GOOD_ONLY,
        target_false_alarm_rate=0.005,
    )
    metrics = Metrics(CollectorRegistry())
    models = ModelSet(_served("tiles", tiled_model, tiled_calibration), metrics)
    models.add(_served("whole", whole_model, whole_calibration))

    frame = _surface(seed=99)
    pitted = _pit(frame, PIT_X, PIT_Y)
    recipes = Recipes(
        {
            "tiled": CameraRecipe(model="tiles", tiling=TilingConfig(tile=SIZE, overlap=32)),
            "resized": CameraRecipe(model="whole"),
        }
    )
    frames = [
        make_frame(pitted, "pitted", "tiled"),
        make_frame(pitted, "pitted", "resized"),
        make_frame(frame, "clean", "resized"),
    ]
    sink = FakeSink()
    pipeline = Pipeline(
        [FakeSource(frames)],
        BatcherConfig(max_batch_size=8, max_wait_ms=50),
        models,
        [sink],
        metrics,
        recipes=recipes,
    )
    pipeline.start()
    wait_until(lambda: pipeline.finished, 120, "the pipeline to finish")
    pipeline.close()
    assert not sink.dead_letters
    results = {(r.message.camera_id, r.message.frame_id): r for r in sink.results}
    assert len(results) == 3

    tiled = results["tiled", "pitted"]
    found = [(d.bbox, round(d.max_score, 3), d.area_px) for d in tiled.message.defects]
    assert tiled.message.is_anomalous, (tiled.message.score, found)
    assert len(found) == 1, found  # the pit, and no false alarm anywhere on 4 MP of grain
    defect = tiled.message.defects[0]
    # In full-frame pixels, within the anomaly map's own blur (Gaussian, sigma 4 px) of the
    # truth: each edge within 2 sigma, the centre within 3 px.
    x, y, w, h = defect.bbox
    assert max(abs(x - PIT_X), abs(y - PIT_Y)) <= 8, found
    assert max(abs(x + w - PIT_X - PIT), abs(y + h - PIT_Y - PIT)) <= 8, found
    centre = PIT_X + PIT / 2 - 0.5, PIT_Y + PIT / 2 - 0.5
    assert np.hypot(defect.centroid[0] - centre[0], defect.centroid[1] - centre[1]) <= 3
    assert tiled.mask is not None and tiled.mask.shape == (FRAME, FRAME)
    assert tiled.mask[PIT_Y : PIT_Y + PIT, PIT_X : PIT_X + PIT].any()
    assert tiled.heatmap is not None and tiled.heatmap.shape == (FRAME, FRAME)

    resized = results["resized", "pitted"].message
    clean = results["resized", "clean"].message
    assert not resized.is_anomalous and not resized.defects, resized.score
    # Not a near miss: at 256 px the pit moves the score by less than 1 % of the threshold,
    # so no threshold could tell the pitted frame from the clean one.
    shift = abs(resized.raw_score - clean.raw_score)
    assert shift < 0.01 * whole_calibration.image_threshold, (resized.raw_score, clean.raw_score)
