"""The parity check on load: a model must score its stored probe set as recorded.

Real checkpoints of a small random model (resnet18, 64 px) written with a probe set, loaded by
the daemon's one loader (:func:`load_served_model`); a tampered one is a checkpoint rewritten
with a changed recorded value, as an export or quantization that changed the maps would give.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from probed import SIZE, small_model, tamper, write_probed
from prometheus_client import CollectorRegistry

from inspector.checkpoint import PROBE_IMAGES, CheckpointMeta, load_checkpoint, save_checkpoint
from inspector.errors import ModelParityError
from inspector.ml.calibrate import RecalibrateConfig, recalibrate
from inspector.model.probes import (
    TOLERANCES,
    ProbeValues,
    compare,
    pick_probe_images,
    record_probes,
    tolerance_for,
)
from inspector.runtime.config import InspectorConfig, explicit_config
from inspector.runtime.control.restore import StartingLine, restore_models
from inspector.runtime.control.state import SavedModel
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import ModelSet, load_configured_model, load_served_model


def _serving() -> InspectorConfig:
    return explicit_config({"model": {"device": "cpu", "warmup_batches": 0}})


def _count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("inspector_model_parity_checks_total", {"result": result})
    return value or 0.0


def test_probe_images_are_spread_uint8_and_the_record_is_small(tmp_path: Path) -> None:
    floats = torch.rand(10, 3, SIZE, SIZE)
    picked = pick_probe_images(floats)
    assert picked.dtype == torch.uint8 and picked.shape == (4, 3, SIZE, SIZE)
    assert torch.equal(picked[0], (floats[0] * 255).round().to(torch.uint8))
    assert torch.equal(picked[-1], (floats[-1] * 255).round().to(torch.uint8))
    assert len(pick_probe_images(floats[:2])) == 2

    path = write_probed(tmp_path / "m.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.meta.probes is not None and loaded.meta.probes.source == "training"
    assert len(loaded.meta.probes.values) == 4
    images = loaded.extra[PROBE_IMAGES]
    assert images.dtype == torch.uint8 and images.shape == (4, 3, SIZE, SIZE)
    # 4 x 3 x 64 x 64 bytes beside the weights: the cost of the probe set.
    assert images.numel() * images.element_size() == 49_152
    # The record is the fp32 model's own values on the stored images.
    again = record_probes(loaded.model, images, loaded.meta.preprocessing, "training")
    assert again == loaded.meta.probes


def test_compare_names_the_worst_value_and_refuses_what_moved() -> None:
    model = small_model()
    images = pick_probe_images(torch.rand(4, 3, SIZE, SIZE))
    record = record_probes(
        model, images, CheckpointMeta(name="x", model=model.config).preprocessing, "training"
    )
    tolerance = TOLERANCES[("torch", "fp32")]
    same = compare(record, record.values, tolerance)
    assert same.passed and same.difference == 0.0

    moved = list(record.values)
    moved[2] = moved[2].model_copy(update={"map_max": moved[2].map_max * 1.5})
    worst = compare(record, tuple(moved), tolerance)
    assert not worst.passed and (worst.probe, worst.quantity) == (2, "map_max")
    assert worst.describe().startswith("probe 2 map_max: recorded ")
    assert "exceeds the tolerance" in worst.describe()

    broken = (ProbeValues(score=float("nan"), map_max=0.0, map_mean=0.0), *record.values[1:])
    assert not compare(record, broken, tolerance).passed
    # bf16 and int8 are looser than fp32; an unknown pair gets the loosest entry.
    assert tolerance_for("torch", "bf16").relative > tolerance.relative
    assert tolerance_for("openvino", "int8").relative >= tolerance_for("torch", "bf16").relative
    assert tolerance_for("torch", "fp8") == tolerance_for("onnxruntime", "int8")


def test_an_honest_checkpoint_passes_and_a_tampered_one_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    honest = write_probed(tmp_path / "honest.safetensors")
    caplog.set_level(logging.INFO, "inspector.runtime.parity")
    served = load_served_model("honest", honest, _serving(), metrics)
    assert served.worker.ready and _count(registry, "passed") == 1
    assert "passed the parity check in" in caplog.text  # with its duration

    changed = tamper(honest, tmp_path / "tampered.safetensors")
    with pytest.raises(ModelParityError) as refused:
        load_served_model("tampered", tmp_path / "tampered.safetensors", _serving(), metrics)
    message = str(refused.value)
    assert "probe 1 map_mean: recorded " + f"{changed:.6g}" in message
    assert "difference" in message and "exceeds the tolerance" in message
    assert "torch fp32" in message and "inspector export" in message
    assert "inspector calibrate" in message
    assert _count(registry, "refused") == 1


def test_a_checkpoint_without_a_probe_set_loads_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    old = write_probed(tmp_path / "old.safetensors", probes=False)
    with caplog.at_level(logging.WARNING, "inspector.runtime.parity"):
        served = load_served_model(None, old, _serving(), Metrics(registry))
    assert served.name == "probed"
    assert "has no probe set" in caplog.text and "inspector calibrate" in caplog.text
    assert _count(registry, "unchecked") == 1 and _count(registry, "refused") == 0


def test_probe_images_that_are_not_the_recorded_ones_are_refused(tmp_path: Path) -> None:
    honest = load_checkpoint(write_probed(tmp_path / "honest.safetensors"))
    swapped = dict(honest.extra)
    swapped[PROBE_IMAGES] = swapped[PROBE_IMAGES].flip(-1).contiguous()
    path = tmp_path / "swapped.safetensors"
    save_checkpoint(path, honest.model, honest.meta, swapped)
    with pytest.raises(ModelParityError, match="not the ones its probe set was recorded on"):
        load_served_model(None, path, _serving(), Metrics(CollectorRegistry()))


def test_a_state_file_model_that_fails_parity_is_left_out_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    honest = write_probed(tmp_path / "honest.safetensors")
    tamper(honest, tmp_path / "tampered.safetensors")
    models = ModelSet(load_served_model("default", honest, _serving(), metrics), metrics)
    line = StartingLine(
        (),
        (),
        (SavedModel(name="bad", checkpoint=tmp_path / "tampered.safetensors"),),
        {},
        tmp_path / "state.json",
    )
    with caplog.at_level(logging.ERROR):
        restore_models(line, models, _serving(), metrics)
    assert [m.name for m in models.all()] == ["default"]
    assert "restoring model bad" in caplog.text and "probe 1 map_mean" in caplog.text


def test_calibration_from_good_images_records_a_probe_set(tmp_path: Path) -> None:
    old = write_probed(tmp_path / "old.safetensors", probes=False)
    good = tmp_path / "good"
    good.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        cv2.imwrite(str(good / f"{i:02d}.png"), rng.integers(0, 255, (80, 96, 3), dtype=np.uint8))
    out = tmp_path / "recalibrated.safetensors"
    config = RecalibrateConfig(
        target_false_alarm_rate=0.1, device="cpu", precision="fp32", auto_cache_dir=None
    )
    recalibrate(old, out, config, good=good)
    written = load_checkpoint(out)
    assert written.meta.probes is not None and written.meta.probes.source == "calibration"
    assert written.extra[PROBE_IMAGES].shape == (4, 3, SIZE, SIZE)
    registry = CollectorRegistry()
    load_served_model(None, out, _serving(), Metrics(registry))
    assert _count(registry, "passed") == 1


def test_a_sighup_reload_of_a_tampered_checkpoint_fails_and_is_counted(tmp_path: Path) -> None:
    # What SIGHUP runs (Daemon.reload_model keeps the old model when this raises).
    registry = CollectorRegistry()
    tampered = tmp_path / "tampered.safetensors"
    tamper(write_probed(tmp_path / "honest.safetensors"), tampered)
    config = explicit_config(
        {"model": {"checkpoint": str(tampered), "device": "cpu", "warmup_batches": 0}}
    )
    with pytest.raises(ModelParityError, match="refused by the parity check"):
        load_configured_model(config, Metrics(registry))
    failures = registry.get_sample_value("inspector_model_reloads_total", {"result": "failure"})
    assert failures == 1 and _count(registry, "refused") == 1
