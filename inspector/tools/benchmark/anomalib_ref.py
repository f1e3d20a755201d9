"""anomalib's ``ReverseDistillationModel`` side by side with ours: same weights, same inputs.

anomalib is a dev dependency; inspector never needs it at run time, so it is imported here
only when ``--compare-anomalib`` asks for it.
"""

from __future__ import annotations

import importlib.metadata
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from inspector.errors import ConfigError
from inspector.ml.interop import convert_anomalib_state_dict
from inspector.model import ReverseDistillation
from inspector.model.config import AnomalyMapMode
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.runtime.worker import ModelWorker
from inspector.tools.benchmark.options import BenchOptions
from inspector.tools.benchmark.timing import Batch, throughput, timed


def _anomalib_class() -> Any:
    try:
        with warnings.catch_warnings():
            # Importing anomalib 2.7 warns about its dependencies' renamed modules (timm's
            # timm.models.layers, its own deprecated dinov2 package); not ours to fix.
            warnings.filterwarnings("ignore", "Importing from timm.models.layers", FutureWarning)
            warnings.filterwarnings(
                "ignore", "The anomalib.models.components.dinov2", FutureWarning
            )
            from anomalib.models.image.reverse_distillation.torch_model import (
                ReverseDistillationModel,
            )
    except ImportError as exc:
        raise ConfigError(
            f"--compare-anomalib needs anomalib ({exc}): pip install 'inspector[dev]'"
        ) from exc
    return ReverseDistillationModel


def build_pair(
    options: BenchOptions, device: torch.device
) -> tuple[ReverseDistillation, nn.Module]:
    """Build anomalib's model with seeded random weights, and ours from its state dict.

    Returns:
        ``(ours, anomalib's)``; anomalib's in eval mode on ``device``, ours on the CPU (the
        worker moves it).
    """
    reference_cls = _anomalib_class()
    torch.manual_seed(options.seed)
    size = (options.image_size, options.image_size)
    reference: nn.Module = reference_cls(
        backbone=options.backbone,
        input_size=size,
        layers=["layer1", "layer2", "layer3"],
        anomaly_map_mode="add",
        pre_trained=False,
    )
    config, tensors, _ = convert_anomalib_state_dict(
        reference.state_dict(), image_size=size, anomaly_map_mode=AnomalyMapMode.ADD
    )
    ours = ReverseDistillation(config)
    ours.load_state_dict(tensors, strict=True)
    return ours, reference.to(device).eval()


def compare(
    worker: ModelWorker,
    reference: nn.Module,
    batches: Sequence[Batch],
    options: BenchOptions,
    device: torch.device,
) -> dict[str, Any]:
    """Time both models on the same batches, alternating which goes first, and diff the maps.

    anomalib runs as its users run it: fp32, contiguous layout, eval mode under
    ``torch.no_grad``, on the same preprocessing (:func:`inspector.model.preprocess` of the
    same uint8 batch) with its maps brought back to the host, like the worker does.

    Returns:
        ``seconds`` (our per-batch times), ``anomalib_images_per_s``, ``speedup``,
        ``max_abs_diff``, ``anomalib_map_max`` (scale of the maps) and ``anomalib_version``.
    """

    def run_reference(batch: Batch) -> torch.Tensor:
        with torch.no_grad():
            x = preprocess(torch.stack([to_tensor_rgb(img) for img in batch]).to(device), size)
            maps: torch.Tensor = reference(x).anomaly_map
            return maps.float().cpu()

    size = worker.image_size
    for i in range(options.warmup):
        # The same warm-up for both, in the same alternating order as the timed loop.
        batch = batches[i % len(batches)]
        for run in (worker.infer, run_reference) if i % 2 == 0 else (run_reference, worker.infer):
            run(batch)
    ours_s: list[float] = []
    theirs_s: list[float] = []
    max_diff = 0.0
    scale = 0.0
    for i, batch in enumerate(batches):
        # Alternate the order so neither model always runs on caches the other warmed.
        if i % 2 == 0:
            out, t_ours = timed(worker.infer, batch)
            expected, t_theirs = timed(run_reference, batch)
        else:
            expected, t_theirs = timed(run_reference, batch)
            out, t_ours = timed(worker.infer, batch)
        ours_s.append(t_ours)
        theirs_s.append(t_theirs)
        max_diff = max(max_diff, float((out.anomaly_map - expected).abs().max()))
        scale = max(scale, float(expected.abs().max()))
    ours_rate = throughput(ours_s, options.batch_size)
    theirs_rate = throughput(theirs_s, options.batch_size)
    return {
        "seconds": ours_s,
        "anomalib_images_per_s": theirs_rate,
        "speedup": ours_rate / theirs_rate,
        "max_abs_diff": max_diff,
        "anomalib_map_max": scale,
        "anomalib_version": importlib.metadata.version("anomalib"),
    }
