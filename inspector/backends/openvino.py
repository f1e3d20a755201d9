"""OpenVINO runs an exported model: ``model.backend: openvino``.

``pip install 'inspector[openvino]'``.

OpenVINO's CPU plugin runs int8 graphs (VNNI, AMX) where PyTorch's eager path has no int8
kernels for this model; its threads are its own (TBB), beside torch's OpenMP team of the
preprocessing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from inspector.backends.manifest import (
    INPUT,
    META_KEY,
    OUTPUTS,
    LoadedExport,
    check_embedded_meta,
    check_io,
)
from inspector.errors import BackendUnavailableError, ExportError
from inspector.model.engine import Backend
from inspector.model.records import InferenceBatch

INSTALL = "pip install 'inspector[openvino]'"


def import_openvino() -> Any:
    """The ``openvino`` module, or an error naming the install (never with telemetry)."""
    from inspector.backends.convert import no_telemetry

    no_telemetry()
    try:
        import openvino
    except ImportError as exc:
        raise BackendUnavailableError(
            f"model.backend openvino needs the OpenVINO runtime: {INSTALL}"
        ) from exc
    return openvino


def compile_cpu(core: Any, model: Any) -> Any:
    """Compile for the CPU; returns the inference request the engine reuses."""
    # f32 for what is not int8: the anomaly map (1 - cos of nearly equal vectors) needs it.
    compiled = core.compile_model(
        model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    )
    return compiled.create_infer_request()


class OpenVINOEngine:
    """An OpenVINO IR export compiled for the CPU.

    Args:
        export: The verified export (``graph_format: openvino``).

    Raises:
        ExportError: The graph's input, outputs or embedded metadata are not its manifest's.
        BackendUnavailableError: OpenVINO is not installed.
    """

    backend: Backend = "openvino"

    def __init__(self, export: LoadedExport) -> None:
        ov = import_openvino()
        if export.manifest.graph_format != "openvino":
            raise ExportError(
                f"{export.folder} is an {export.manifest.graph_format} export; model.backend "
                "openvino runs `inspector export --format openvino` folders (use onnxruntime)"
            )
        core = ov.Core()
        try:
            model = core.read_model(str(export.graph))
        except RuntimeError as exc:
            raise ExportError(f"{export.graph} is not a readable OpenVINO model: {exc}") from exc
        embedded = (
            model.get_rt_info([META_KEY, "meta"]).astype(str)
            if model.has_rt_info([META_KEY, "meta"])
            else None
        )
        check_embedded_meta(export, embedded)
        inputs = {
            next(iter(port.get_names()), ""): [
                None if d.is_dynamic else d.get_length() for d in port.get_partial_shape()
            ]
            for port in model.inputs
        }
        check_io(export, inputs, {name for port in model.outputs for name in port.get_names()})
        self._request = compile_cpu(core, model)
        self.precision: str = export.manifest.precision
        self.image_size = export.manifest.meta.model.image_size
        self.device = torch.device("cpu")

    @classmethod
    def from_model(cls, model: Any, precision: str, image_size: tuple[int, int]) -> OpenVINOEngine:
        """An engine for an ``openvino.Model`` built in this process (``precision: auto``)."""
        engine = cls.__new__(cls)
        engine._request = compile_cpu(import_openvino().Core(), model)
        engine.precision = precision
        engine.image_size = image_size
        engine.device = torch.device("cpu")
        return engine

    def __call__(self, images: torch.Tensor) -> InferenceBatch:
        """Maps ``(N, 1, H, W)`` and scores ``(N,)``, float32 on the CPU.

        Args:
            images: Normalised images ``(N, 3, H, W)`` float32 on the CPU.
        """
        batch = np.ascontiguousarray(images.detach().float().numpy())
        self._request.infer({INPUT: batch})
        # Copies: the request's output buffers are reused by the next call.
        maps, scores = (np.array(self._request.get_tensor(name).data) for name in OUTPUTS)
        return InferenceBatch(torch.from_numpy(maps), torch.from_numpy(scores))
