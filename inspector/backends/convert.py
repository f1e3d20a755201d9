"""The model as an OpenVINO graph, fp32 or NNCF int8, built in this process.

Shared by ``inspector export`` (which saves the graphs) and ``precision: auto`` (which times an
int8 graph quantized on the good images a checkpoint stores, :mod:`inspector.backends.auto`).
The anomaly map (``1 - cos`` of nearly equal vectors, upsampling, the blur's convolutions) is
left out of quantization by scope and stays fp32.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

import numpy as np
import torch

from inspector.backends.manifest import INPUT, META_KEY, OUTPUTS, embedded_meta_json
from inspector.checkpoint import CheckpointMeta
from inspector.errors import BackendUnavailableError
from inspector.model.engine import ExportGraph
from inspector.model.reverse_distillation import ReverseDistillation

#: OpenVINO's converter names nodes after the modules they come from.
MAP_SCOPE = ".*anomaly_map.*"


def no_telemetry() -> None:
    """Keep OpenVINO's converter and NNCF from sending usage telemetry.

    Both send events to Google Analytics (from a forked process) unless the user opted out in a
    file under their home folder, and fall back to a no-op when ``openvino_telemetry`` cannot be
    imported. A daemon on a plant network never phones home, so the module is made unimportable
    for this process before either is imported.
    """
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def require(module: str, install: str) -> Any:
    """Import ``module`` or say which ``pip install`` brings it (never with telemetry)."""
    no_telemetry()
    try:
        return __import__(module)
    except ImportError as exc:
        raise BackendUnavailableError(f"{module} is not installed: {install}") from exc


def name_ports(model: Any) -> None:
    """Give an OpenVINO model's input and outputs the export's names."""
    model.inputs[0].get_tensor().set_names({INPUT})
    for port, name in zip(model.outputs, OUTPUTS, strict=True):
        port.get_tensor().set_names({name})


def openvino_model(model: ReverseDistillation, meta: CheckpointMeta, install: str) -> Any:
    """The whole model as an ``openvino.Model``, dynamic batch, metadata embedded."""
    ov = require("openvino", install)
    h, w = meta.model.image_size
    graph = ExportGraph(model).eval()
    # OpenVINO's PyTorch front end traces with torch.jit, which warns that it is deprecated.
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", FutureWarning)
        converted = ov.convert_model(
            graph, example_input=torch.zeros(1, 3, h, w), input=[(-1, 3, h, w)]
        )
    name_ports(converted)
    converted.set_rt_info(embedded_meta_json(meta), [META_KEY, "meta"])
    return converted


def quantize_openvino(
    model: Any, images: np.ndarray, meta: CheckpointMeta, install: str
) -> tuple[Any, str]:
    """NNCF post-training int8 of an OpenVINO model on normalised good images.

    Args:
        model: From :func:`openvino_model`.
        images: Normalised model inputs ``(n, 3, H, W)`` float32.
        meta: Embedded in the result.
        install: What to ``pip install`` if NNCF is missing.

    Returns:
        The int8 model and a line saying how it was made.
    """
    nncf = require("nncf", install)
    # NNCF logs a line per operation it leaves alone; its progress bars stay.
    logging.getLogger("nncf").setLevel(logging.WARNING)
    quantized = nncf.quantize(
        model,
        nncf.Dataset([x[None] for x in images]),
        subset_size=len(images),
        preset=nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=nncf.IgnoredScope(patterns=[MAP_SCOPE], validate=False),
    )
    name_ports(quantized)
    quantized.set_rt_info(embedded_meta_json(meta), [META_KEY, "meta"])
    return quantized, method_line(nncf.__version__, len(images))


def method_line(version: str, n: int) -> str:
    """How an int8 graph was made, for manifests and checkpoints."""
    return (
        f"nncf {version} quantize, preset performance (symmetric int8), per-channel weights, "
        f"{n} good calibration images; anomaly map kept fp32"
    )
