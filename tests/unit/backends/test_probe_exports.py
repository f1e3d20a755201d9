"""An export carries its checkpoint's probe set and passes the daemon's parity check.

A small random model's checkpoint (resnet18, 64 px) exported to ONNX, served by onnxruntime
through the daemon's loader; recalibrating the export (a resealed folder) keeps the probes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from probed import write_probed
from prometheus_client import CollectorRegistry

from inspector.backends import load_model
from inspector.backends.manifest import PROBES_FILE, load_manifest
from inspector.checkpoint import PROBE_IMAGES, load_checkpoint
from inspector.ml.export import export_model
from inspector.ml.reseal import reseal_export
from inspector.runtime.config import explicit_config
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import load_served_model

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def test_an_onnx_export_carries_the_probe_set_and_passes_parity(tmp_path: Path) -> None:
    checkpoint = write_probed(tmp_path / "m.safetensors")
    source = load_checkpoint(checkpoint)
    folder = export_model(checkpoint, tmp_path / "onnx", "onnx").folder
    export = load_manifest(folder)
    assert PROBES_FILE in export.manifest.files
    assert export.manifest.meta.probes == source.meta.probes
    loaded = load_model(folder, "onnxruntime", torch.device("cpu"))
    assert loaded.probe_images is not None
    assert torch.equal(loaded.probe_images, source.extra[PROBE_IMAGES])

    registry = CollectorRegistry()
    metrics = Metrics(registry)
    serving = explicit_config(
        {"model": {"device": "cpu", "backend": "onnxruntime", "warmup_batches": 0}}
    )
    load_served_model(None, folder, serving, metrics)
    passed = {"result": "passed"}
    assert registry.get_sample_value("inspector_model_parity_checks_total", passed) == 1

    # `inspector calibrate` on an export writes it anew: the probe images go with it.
    resealed = tmp_path / "onnx-2"
    reseal_export(export, resealed, export.manifest.meta)
    assert PROBES_FILE in load_manifest(resealed).manifest.files
    load_served_model(None, resealed, serving, metrics)
    assert registry.get_sample_value("inspector_model_parity_checks_total", passed) == 2
