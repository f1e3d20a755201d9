"""Where a model runs: PyTorch from a checkpoint, or an exported graph in OpenVINO/onnxruntime.

:func:`load_model` is the one entry point (the build table): the daemon, ``predict``, ``eval``
and ``calibrate`` load what ``--backend`` / ``model.backend`` names through it and get an
:class:`~inspector.model.engine.Engine` plus the metadata a checkpoint would give.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from inspector.backends.auto import AutoChoice, choose, serve_int8
from inspector.backends.manifest import (
    GRAPH_FILES,
    MANIFEST,
    LoadedExport,
    is_export,
    load_manifest,
    load_probe_images,
)
from inspector.checkpoint import PROBE_IMAGES, CheckpointMeta, load_checkpoint
from inspector.errors import ExportError
from inspector.model.engine import Backend, Engine
from inspector.model.fastpath import FastModel, RuntimeOptions
from inspector.model.reverse_distillation import ReverseDistillation

BACKENDS: tuple[Backend, ...] = ("torch", "openvino", "onnxruntime")


@dataclass(frozen=True)
class LoadedModel:
    """A verified model ready to run.

    Attributes:
        engine: Runs it.
        meta: Its metadata (an export's: the checkpoint's, int8 thresholds re-fitted).
        sha256: The checkpoint's SHA-256, or the export manifest's.
        path: What was loaded.
        model: The PyTorch model (``torch`` backend only).
        memory_bytes: Bytes its weights take (parameters and buffers, or the graph's files).
        auto: What ``precision: auto`` measured and chose, or what ``precision: int8`` serves
            (``torch`` backend only).
        probe_images: The probe set's images, uint8 ``(n, 3, H, W)`` (``meta.probes`` records
            their values); ``None`` when it has none.
    """

    engine: Engine
    meta: CheckpointMeta
    sha256: str
    path: Path
    model: ReverseDistillation | None
    memory_bytes: int
    auto: AutoChoice | None = None
    probe_images: torch.Tensor | None = None


def _exported(build: Callable[[LoadedExport], Engine]) -> Callable[[Path], LoadedModel]:
    def load(path: Path) -> LoadedModel:
        export = load_manifest(path)
        graph = GRAPH_FILES[export.manifest.graph_format]
        size = sum((export.folder / name).stat().st_size for name in graph)
        meta, probes = export.manifest.meta, load_probe_images(export)
        return LoadedModel(build(export), meta, export.sha256, path, None, size, None, probes)

    return load


def _openvino(export: LoadedExport) -> Engine:
    from inspector.backends.openvino import OpenVINOEngine

    return OpenVINOEngine(export)


def _onnxruntime(export: LoadedExport) -> Engine:
    from inspector.backends.onnxruntime import OnnxRuntimeEngine

    return OnnxRuntimeEngine(export)


def engine_for_export(export: LoadedExport, backend: Backend) -> Engine:
    """The engine of an export already verified (or being made: ``inspector export``)."""
    return {"openvino": _openvino, "onnxruntime": _onnxruntime}[backend](export)


_EXPORTED: dict[Backend, Callable[[Path], LoadedModel]] = {
    "openvino": _exported(_openvino),
    "onnxruntime": _exported(_onnxruntime),
}


def load_model(
    path: Path,
    backend: Backend,
    device: torch.device,
    options: RuntimeOptions | None = None,
    *,
    batch_size: int = 8,
    auto_cache_dir: Path | None = None,
) -> LoadedModel:
    """Load and verify a checkpoint (``torch``) or an export (``openvino``, ``onnxruntime``).

    Args:
        path: The checkpoint file, or the export folder (or its manifest).
        backend: Which runtime.
        device: For ``torch``; exports run on the CPU.
        options: The torch fast path's switches.
        batch_size: The torch fast path's CUDA-graph batch shape, and the batch ``precision:
            auto`` times.
        auto_cache_dir: Where ``precision: auto`` keeps its choices (``None``: measure always).

    Raises:
        CheckpointError: Not a readable checkpoint (``torch``).
        ExportError: Not a readable export, or the wrong kind for ``backend``.
        BackendUnavailableError: The backend's package is not installed.
    """
    if backend == "torch":
        if is_export(path):
            raise ExportError(
                f"{path} is an exported model; run it with model.backend openvino or "
                "onnxruntime (--backend), or pass its source checkpoint"
            )
        loaded = load_checkpoint(path)
        options = options or RuntimeOptions()
        auto = None
        meta = loaded.meta
        engine: Engine
        if options.precision in ("auto", "int8"):
            pick = choose if options.precision == "auto" else serve_int8
            auto, engine = pick(
                loaded, device, options, batch_size=batch_size, cache_dir=auto_cache_dir
            )
            if auto.precision == "int8" and meta.int8 is not None:
                # Served with the thresholds re-fitted to the int8 model's scores.
                meta = meta.model_copy(update={"calibration": meta.int8.calibration})
        else:
            engine = FastModel(loaded.model, device, options, batch_size=batch_size)
        tensors = [*loaded.model.parameters(), *loaded.model.buffers()]
        memory = sum(t.numel() * t.element_size() for t in tensors)
        probes = loaded.extra.get(PROBE_IMAGES)
        return LoadedModel(engine, meta, loaded.sha256, path, loaded.model, memory, auto, probes)
    if device.type != "cpu":
        raise ExportError(
            f"model.backend {backend} runs on the CPU here, but device {device} was asked for; "
            "use device: cpu, or model.backend: torch on a GPU"
        )
    if not is_export(path) and path.is_dir():
        raise ExportError(f"{path} has no {MANIFEST}: not a folder written by `inspector export`")
    if not is_export(path):
        raise ExportError(
            f"{path} is not an exported model folder; model.backend {backend} needs "
            f"`inspector export --checkpoint {path} --format "
            f"{'onnx' if backend == 'onnxruntime' else 'openvino'} --out DIR`"
        )
    return _EXPORTED[backend](path)
