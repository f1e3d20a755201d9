"""Our side of ``inspector bench --compare``: the default path and our exports.

``ours`` is the daemon's default path as it would serve on this machine (``precision: auto``
measured, with an int8 record when OpenVINO paths are compared); ``ours-openvino``,
``ours-openvino-int8`` and ``ours-onnxruntime`` are ``inspector export`` folders, each run
through a ``ModelWorker`` as the daemon runs them; ``ours-pt2e-int8`` is PyTorch's own int8.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from inspector.backends import LoadedModel, load_model
from inspector.backends.manifest import GraphFormat
from inspector.checkpoint import load_checkpoint
from inspector.ml.export import export_model
from inspector.ml.int8_guard import Int8Settings, guard_data
from inspector.ml.interop import convert_anomalib_state_dict
from inspector.ml.quantize import quantize_checkpoint
from inspector.model import ReverseDistillation
from inspector.model.config import AnomalyMapMode
from inspector.model.engine import Backend
from inspector.model.int8 import Int8Model, quantize_int8
from inspector.model.records import InferenceBatch
from inspector.runtime.metrics import Metrics
from inspector.runtime.worker import ModelWorker
from inspector.tools.benchmark.model import make_worker
from inspector.tools.benchmark.options import BenchOptions
from inspector.tools.benchmark.timing import Batch
from inspector.tools.synth.dataset import generate_dataset

log = logging.getLogger(__name__)

RAW_MAP = "raw: the model's un-normalised map (1 - cos per layer, summed, blurred)"
#: Good images both int8 paths calibrate on: ours holds a quarter out for its guard, anomalib's
#: Folder datamodule takes the other three quarters as its validation split, which it
#: calibrates on; so both fit their ranges on 24 good images.
CALIBRATION_GOOD = 32
CALIBRATION_SHARE = 0.75

Run = Callable[[Batch], InferenceBatch]


@dataclass
class Peer:
    """One way of running the model.

    Attributes:
        name: Its row in the result's ``paths`` table.
        family: ``ours`` or ``anomalib``: which fp32 reference it is compared with.
        run: Frames -> raw maps ``(N, 1, H, W)`` and scores ``(N,)`` on the host.
        info: What it is (backend, precision, map kind, how it was made), for the result.
    """

    name: str
    family: str
    run: Run
    info: dict[str, Any] = field(default_factory=dict)


def same_weights(module: Any, size: tuple[int, int]) -> ReverseDistillation:
    """Our model with the weights of anomalib's Lightning ``module`` (anomalib's map mode)."""
    config, tensors, _ = convert_anomalib_state_dict(
        module.model.state_dict(), image_size=size, anomaly_map_mode=AnomalyMapMode.ADD
    )
    ours = ReverseDistillation(config)
    ours.load_state_dict(tensors, strict=True)
    return ours.eval()


def calibration_folder(root: Path, options: BenchOptions) -> Path:
    """Synthetic good images for both sides' int8 (``root/train/good``), in MVTec layout.

    anomalib's ``Folder`` datamodule also wants a defect kind under ``test``: one, small.
    """
    generate_dataset(
        root,
        seed=options.seed + 1,
        image_size=options.image_size,
        n_train=CALIBRATION_GOOD,
        n_test_good=2,
        n_test_per_defect=1,
        defect_kinds=("scratch",),
    )
    return root


def _worker(loaded: LoadedModel, options: BenchOptions) -> ModelWorker:
    """A worker over a loaded engine, as the daemon builds it."""
    return ModelWorker(
        loaded.engine,
        loaded.engine.device,
        Metrics(CollectorRegistry()),
        max_batch_size=options.batch_size,
        preprocessing=loaded.meta.preprocessing,
    )


def ours_default(
    ours: ReverseDistillation,
    checkpoint: Path,
    calibration: Path,
    groups: set[str],
    device: torch.device,
    options: BenchOptions,
) -> tuple[ModelWorker, dict[str, Any]]:
    """``ours``: the daemon's default path, as it would serve here.

    With ``precision: auto`` that is what the daemon measures and serves: fp32, bf16 or, for a
    checkpoint with an ``inspector quantize`` int8 record (made here on the synthetic good
    images when OpenVINO paths are compared), int8.
    """
    if options.precision != "auto":
        worker = make_worker(ours, device, options)
        made_by = "ModelWorker.infer: the daemon's preprocessing and fast path"
        return worker, {
            "backend": "torch",
            "precision": worker.fast.precision,
            "map": RAW_MAP,
            "made_by": f"{made_by} (channels_last {options.channels_last}, "
            f"compile {options.compile})",
        }
    source = checkpoint
    if "openvino" in groups and device.type == "cpu":
        source = checkpoint.with_name("ours-int8.safetensors")
        settings = Int8Settings(good=calibration / "train" / "good", seed=options.seed)
        quantize_checkpoint(checkpoint, source, settings)
    loaded = load_model(source, "torch", device, options.runtime, batch_size=options.batch_size)
    worker = _worker(loaded, options)
    auto = loaded.auto
    return worker, {
        "backend": loaded.engine.backend,
        "precision": loaded.engine.precision,
        "map": RAW_MAP,
        "made_by": "precision auto, as the daemon: "
        + (auto.reason if auto is not None else "")
        + (
            "; int8 record by inspector quantize --good (synthetic)" if source != checkpoint else ""
        ),
        "auto_images_per_s": auto.images_per_s if auto is not None else {},
    }


@dataclass(frozen=True)
class _Pt2eEngine:
    """PyTorch's own int8 (:func:`inspector.model.int8.quantize_int8`) as an engine."""

    model: Int8Model
    image_size: tuple[int, int]
    backend: Backend = "torch"
    precision: str = "int8"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    def __call__(self, images: torch.Tensor) -> InferenceBatch:
        with torch.inference_mode():
            out: InferenceBatch = self.model(images)
        return out


def ours_pt2e(checkpoint: Path, good: Path, options: BenchOptions) -> Peer:
    """``ours-pt2e-int8``: PT2E static int8 with the x86 Inductor quantizer, not served.

    Calibrated on the same good images as ``inspector quantize`` (its guard's split), so the
    row shows why the daemon serves OpenVINO's int8 instead (``precision: int8``).
    """
    loaded = load_checkpoint(checkpoint)
    data = guard_data(Int8Settings(good=good, seed=options.seed), loaded.meta)
    t0 = time.perf_counter()
    batches = [
        data.calibration[i : i + options.batch_size]
        for i in range(0, len(data.calibration), options.batch_size)
    ]
    quantized = quantize_int8(loaded.model, batches)
    log.info("PT2E int8 quantized in %.1f s", time.perf_counter() - t0)
    engine = _Pt2eEngine(quantized, loaded.meta.model.image_size)
    worker = ModelWorker(
        engine,
        engine.device,
        Metrics(CollectorRegistry()),
        max_batch_size=options.batch_size,
        preprocessing=loaded.meta.preprocessing,
    )
    info = {
        "backend": "torch",
        "precision": "int8",
        "map": RAW_MAP,
        "made_by": "inspector.model.int8.quantize_int8 (PT2E, X86InductorQuantizer, encoder, "
        "OCBE and decoder; compiled with Inductor freezing), calibrated on the good images "
        "inspector quantize uses; a library path, not served",
    }
    return Peer("ours-pt2e-int8", "ours", worker.infer, info)


def ours_exported(
    groups: set[str], checkpoint: Path, good: Path, work: Path, options: BenchOptions
) -> list[Peer]:
    """Our exports (``inspector export``), each run through a ``ModelWorker`` as the daemon.

    With ``openvino``, also PyTorch's own int8 (:func:`ours_pt2e`) beside OpenVINO's.
    """
    wanted: list[tuple[str, GraphFormat, bool]] = []
    if "openvino" in groups:
        wanted += [("ours-openvino", "openvino", False), ("ours-openvino-int8", "openvino", True)]
    if "onnxruntime" in groups:
        wanted.append(("ours-onnxruntime", "onnx", False))
    peers = []
    for name, fmt, int8 in wanted:
        t0 = time.perf_counter()
        folder = work / name
        settings = Int8Settings(good=good, seed=options.seed) if int8 else None
        exported = export_model(checkpoint, folder, fmt, int8=settings)
        log.info("exported %s in %.1f s", name, time.perf_counter() - t0)
        backend: Backend = "openvino" if fmt == "openvino" else "onnxruntime"
        loaded = load_model(folder, backend, torch.device("cpu"))
        worker = _worker(loaded, options)
        made_by = f"inspector export --format {fmt}" + (
            " --int8 --good (synthetic)" if int8 else ""
        )
        info: dict[str, Any] = {
            "backend": backend,
            "precision": "int8" if int8 else "fp32",
            "map": RAW_MAP,
            "made_by": made_by,
        }
        if backend == "openvino":
            info["compiled"] = "PERFORMANCE_HINT LATENCY, INFERENCE_PRECISION_HINT f32"
        report = exported.manifest.quantization
        if report is not None:
            info["quantization"] = report.method
        peers.append(Peer(name, "ours", worker.infer, info))
    if "openvino" in groups:
        peers.append(ours_pt2e(checkpoint, good, options))
    return peers
