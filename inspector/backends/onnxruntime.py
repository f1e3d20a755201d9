"""onnxruntime runs an exported ONNX model (``model.backend: onnxruntime``).

``pip install 'inspector[onnxruntime]'``. The same ``model.onnx`` serves in Triton's
onnxruntime backend; this engine is how the daemon, ``predict`` and ``eval`` check that it gives
the daemon's verdicts.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from inspector.backends.manifest import INPUT, META_KEY, OUTPUTS, LoadedExport, check_embedded_meta
from inspector.backends.manifest import check_io as check_graph_io
from inspector.errors import BackendUnavailableError, ExportError
from inspector.model.engine import Backend
from inspector.model.records import InferenceBatch

INSTALL = "pip install 'inspector[onnxruntime]'"


def import_onnxruntime() -> Any:
    """The ``onnxruntime`` module, or an error naming the install."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendUnavailableError(
            f"model.backend onnxruntime needs onnxruntime: {INSTALL}"
        ) from exc
    return onnxruntime


class OnnxRuntimeEngine:
    """An ONNX export in an onnxruntime CPU session.

    Args:
        export: The verified export (``graph_format: onnx``).

    Raises:
        ExportError: The graph's input, outputs or embedded metadata are not its manifest's.
        BackendUnavailableError: onnxruntime is not installed.
    """

    backend: Backend = "onnxruntime"

    def __init__(self, export: LoadedExport) -> None:
        ort = import_onnxruntime()
        if export.manifest.graph_format != "onnx":
            raise ExportError(
                f"{export.folder} is an {export.manifest.graph_format} export; model.backend "
                "onnxruntime runs `inspector export --format onnx` folders (use openvino)"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            session = ort.InferenceSession(
                str(export.graph), options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own untyped errors for a bad graph
            raise ExportError(f"{export.graph} is not a loadable ONNX model: {exc}") from exc
        check_embedded_meta(export, session.get_modelmeta().custom_metadata_map.get(META_KEY))
        inputs = {
            i.name: [d if isinstance(d, int) else None for d in i.shape]
            for i in session.get_inputs()
        }
        check_graph_io(export, inputs, {o.name for o in session.get_outputs()})
        self._session = session
        self.precision = export.manifest.precision
        self.image_size = export.manifest.meta.model.image_size
        self.device = torch.device("cpu")

    def __call__(self, images: torch.Tensor) -> InferenceBatch:
        """Maps ``(N, 1, H, W)`` and scores ``(N,)``, float32 on the CPU.

        Args:
            images: Normalised images ``(N, 3, H, W)`` float32 on the CPU.
        """
        batch = np.ascontiguousarray(images.detach().float().numpy())
        maps, scores = self._session.run(list(OUTPUTS), {INPUT: batch})
        return InferenceBatch(torch.from_numpy(maps), torch.from_numpy(scores))
