"""The e2e benchmark's checkpoint: seeded random weights, thresholds fitted to the frames."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from inspector.checkpoint import CheckpointMeta, save_checkpoint
from inspector.model import ReverseDistillation
from inspector.model.calibration import Calibration
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.tools.benchmark.model import random_model
from inspector.tools.benchmark.options import BenchOptions, decode_jpegs

#: Share of frames the benchmark checkpoint's thresholds flag as anomalous.
ANOMALOUS_SHARE = 0.25
#: Frames its thresholds are fitted on.
CALIBRATION_FRAMES = 16


def calibrate(model: ReverseDistillation, jpegs: Sequence[bytes]) -> Calibration:
    """Thresholds that flag about ``ANOMALOUS_SHARE`` of the frames.

    Random weights have no meaningful thresholds, yet how many frames are flagged decides the
    daemon's post-processing work (defect regions, PNG masks): neither all nor none, but a
    line with a high defect rate.
    """
    distinct = list(dict.fromkeys(jpegs))[:CALIBRATION_FRAMES]
    images = decode_jpegs(distinct)
    device = next(model.parameters()).device
    batch = torch.stack([to_tensor_rgb(img) for img in images]).to(device)
    with torch.inference_mode():
        out = model.eval()(preprocess(batch, model.config.image_size))
    scores = out.pred_score.float().cpu()
    threshold = float(torch.quantile(scores, 1 - ANOMALOUS_SHARE))
    return Calibration(
        mode="good_only",
        image_threshold=threshold,
        image_min=float(scores.min()),
        image_max=float(scores.max()),
        # The score is the map's maximum: pixels above the image threshold make the regions.
        pixel_threshold=threshold,
        pixel_min=float(out.anomaly_map.min()),
        pixel_max=float(out.anomaly_map.max()),
        target_false_alarm_rate=ANOMALOUS_SHARE,
        n_good=len(images),
    )


def write_checkpoint(
    folder: Path, options: BenchOptions, device: torch.device, jpegs: Sequence[bytes]
) -> Path:
    """A checkpoint with seeded random weights (speed does not depend on them)."""
    model = random_model(options, device)
    calibration = calibrate(model, jpegs)
    model = model.to("cpu")
    path = folder / f"bench-{options.backbone}.safetensors"
    meta = CheckpointMeta(
        name=f"bench-{options.backbone}", model=model.config, calibration=calibration
    )
    save_checkpoint(path, model, meta)
    return path
