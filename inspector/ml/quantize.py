"""``inspector quantize``: store an int8 variant with a checkpoint, guarded against fp32.

The checkpoint keeps its fp32 weights and gains what ``precision: auto`` needs to serve it in
int8 on any machine (:mod:`inspector.backends.auto`): the good images the int8 model is
calibrated on and those it was checked on (uint8 tensors beside the weights, under the same
integrity digest), the guard's figures and the thresholds re-fitted to int8 scores. The int8
model is OpenVINO's (NNCF post-training quantization; the anomaly map stays fp32): on CPUs
with int8 dot-product instructions it is the fastest path this project measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from inspector.backends.convert import openvino_model, quantize_openvino
from inspector.backends.openvino import OpenVINOEngine
from inspector.checkpoint import (
    INT8_CALIBRATION,
    INT8_HELD_OUT,
    Int8Record,
    load_checkpoint,
    save_checkpoint,
)
from inspector.ml.int8_guard import Int8Settings, guard_data, run_guard
from inspector.model.fastpath import FastModel, RuntimeOptions

INSTALL = "pip install 'inspector[export]'"


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize_checkpoint` wrote.

    Attributes:
        path: The checkpoint written.
        sha256: Its SHA-256.
        record: Its int8 record (guard figures, re-fitted thresholds).
    """

    path: Path
    sha256: str
    record: Int8Record


def quantize_checkpoint(checkpoint: Path, out: Path, settings: Int8Settings) -> QuantizeResult:
    """Quantize, guard, and write ``checkpoint`` with its int8 variant to ``out``.

    Args:
        checkpoint: The fp32 checkpoint.
        out: Where to write (atomically; may be ``checkpoint`` itself).
        settings: Calibration images and the guard.

    Raises:
        ConfigError: No or too few good images.
        QuantizationRefusedError: The int8 model lost accuracy (nothing written).
        BackendUnavailableError: OpenVINO or NNCF is missing.
    """
    loaded = load_checkpoint(checkpoint)
    meta = loaded.meta
    data = guard_data(settings, meta)
    cpu = torch.device("cpu")
    reference = FastModel(loaded.model, cpu, RuntimeOptions(precision="fp32"))
    quantized, method = quantize_openvino(
        openvino_model(loaded.model, meta, INSTALL), data.calibration.numpy(), meta, INSTALL
    )
    int8 = OpenVINOEngine.from_model(quantized, "int8", meta.model.image_size)
    report, calibration = run_guard(
        reference, int8, data, meta, method=method, tolerance=settings.tolerance
    )
    record = Int8Record(guard=report, calibration=calibration)
    # The probe set's images stay with its record (the daemon checks the int8 model on them).
    extra = {
        **loaded.extra,
        INT8_CALIBRATION: data.calibration_rgb,
        INT8_HELD_OUT: data.held_out_good_rgb,
    }
    sha = save_checkpoint(out, loaded.model, meta.model_copy(update={"int8": record}), extra)
    return QuantizeResult(out, sha, record)
