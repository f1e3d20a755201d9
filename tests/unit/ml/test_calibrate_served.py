"""``inspector calibrate`` scores with the model the daemon serves: an export, int8, auto.

An export is calibrated on its own graph and written as a new, verified export; a checkpoint
served from its int8 record gets the record's thresholds refitted; ``precision auto`` is the
daemon's cached choice in ``predict`` and ``calibrate`` alike.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from inspector.backends import load_model
from inspector.checkpoint import (
    INT8_CALIBRATION,
    LoadedCheckpoint,
    load_checkpoint,
    save_checkpoint,
)
from inspector.cli import main
from inspector.ml.calibrate import RecalibrateConfig, recalibrate
from inspector.ml.export import ExportResult, export_model
from inspector.ml.predict import predict
from inspector.ml.served import command_device
from inspector.model.calibration import Calibration
from inspector.model.fastpath import RuntimeOptions
from inspector.runtime.config import InspectorConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.models import load_served_model
from inspector.tools.synth import SynthSummary, generate_dataset

CPU = torch.device("cpu")
RATE = 0.1
N_GOOD = 40
BACKEND = {"openvino": "openvino", "onnx": "onnxruntime"}
FIELDS = ("image_threshold", "image_min", "image_max", "pixel_threshold", "pixel_min", "pixel_max")


@dataclass(frozen=True)
class Setup:
    stale: Path  # the session's model, thresholds that flag nothing
    stale_calibration: Calibration
    good: Path  # N_GOOD good images it was not trained on
    torch_fp32: Calibration  # what calibrate refits on PyTorch fp32 from `good`


@pytest.fixture(scope="module")
def setup(checkpoint: LoadedCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("served")
    cal = checkpoint.meta.calibration
    assert cal is not None
    stale_cal = cal.model_copy(
        update={"image_threshold": 10 * cal.image_max, "pixel_threshold": 10 * cal.pixel_max}
    )
    stale = root / "stale.safetensors"
    save_checkpoint(
        stale, checkpoint.model, checkpoint.meta.model_copy(update={"calibration": stale_cal})
    )
    size = checkpoint.meta.model.image_size[0]
    generate_dataset(
        root / "good", seed=303, image_size=size, n_train=N_GOOD, n_test_good=0,
        n_test_per_defect=0,
    )  # fmt: skip
    good = root / "good" / "train" / "good"
    config = RecalibrateConfig(
        target_false_alarm_rate=RATE, device="cpu", precision="fp32", auto_cache_dir=None
    )
    report = recalibrate(stale, root / "torch.safetensors", config, good=good)
    return Setup(stale, stale_cal, good, report.after)


@pytest.fixture(scope="module")
def exports(setup: Setup, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ExportResult]:
    out = tmp_path_factory.mktemp("served-exports")
    return {fmt: export_model(setup.stale, out / fmt, fmt) for fmt in ("openvino", "onnx")}  # type: ignore[arg-type]


def _calibrate(*argv: str | Path) -> int:
    return main(["calibrate", "--false-alarm-rate", str(RATE), *map(str, argv)])


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_an_export_is_calibrated_on_its_graph_into_a_new_verified_export(
    fmt: str, setup: Setup, exports: dict[str, ExportResult], tmp_path: Path
) -> None:
    backend = BACKEND[fmt]
    source = exports[fmt]
    new, report_path = tmp_path / "recalibrated", tmp_path / "report.json"
    code = _calibrate("--backend", backend, "--checkpoint", source.folder, "--good", setup.good,
                      "--out", new, "--json", report_path)  # fmt: skip
    assert code == 0
    report = json.loads(report_path.read_text())
    loaded = load_model(new, backend, CPU)  # verified: every digest and the embedded metadata
    after = loaded.meta.calibration
    assert after is not None and after == Calibration.model_validate(report["after"])
    assert after != setup.stale_calibration
    # The export's maps are PyTorch's within 1e-4 (test_export.py): the same thresholds.
    for field in FIELDS:
        assert getattr(after, field) == pytest.approx(getattr(setup.torch_fp32, field), abs=2e-4)
    assert (report["backend"], report["precision"], report["refitted"]) == (
        backend, "fp32", "calibration",
    )  # fmt: skip
    # A new identity, the same graph: only the metadata changed.
    assert loaded.sha256 == report["out_sha256"] != source.sha256
    before = load_model(source.folder, backend, CPU)
    images = torch.randn(
        2, 3, *loaded.meta.model.image_size, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(loaded.engine(images).anomaly_map, before.engine(images).anomaly_map)
    # The input export is untouched, and the history names it.
    assert before.meta.calibration == setup.stale_calibration and before.sha256 == source.sha256
    (entry,) = loaded.meta.training["recalibrations"]
    assert entry["from_sha256"] == source.sha256 and entry["backend"] == backend


def test_an_export_calibrated_in_place_takes_its_earlier_results(
    setup: Setup, exports: dict[str, ExportResult], tmp_path: Path
) -> None:
    served = tmp_path / "served"
    shutil.copytree(exports["openvino"].folder, served)
    predicted = tmp_path / "pred"
    code = main(["predict", "--backend", "openvino", "--checkpoint", str(served), "--out",
                 str(predicted), "--no-overlays", str(setup.good)])  # fmt: skip
    assert code == 0
    results = predicted / "results.jsonl"
    # --out naming the input: the daemon's folder, replaced whole (then SIGHUP).
    assert _calibrate("--backend", "openvino", "--checkpoint", served, "--scores", results,
                      "--out", served) == 0  # fmt: skip
    once = load_model(served, "openvino", CPU)
    assert once.sha256 != exports["openvino"].sha256
    assert once.meta.calibration is not None
    assert once.meta.calibration.image_threshold == pytest.approx(
        setup.torch_fp32.image_threshold, abs=2e-4
    )
    # The results name the export before its recalibration: same graph, taken as its own.
    assert _calibrate("--backend", "openvino", "--checkpoint", served, "--scores", results,
                      "--out", served) == 0  # fmt: skip
    twice = load_model(served, "openvino", CPU)
    assert [e["from_sha256"] for e in twice.meta.training["recalibrations"]] == [
        exports["openvino"].sha256,
        once.sha256,
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred", "served"]  # nothing left over


def test_an_export_is_written_only_where_an_export_may_go(
    setup: Setup, exports: dict[str, ExportResult], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code = _calibrate("--backend", "openvino", "--checkpoint", exports["openvino"].folder,
                      "--good", setup.good, "--out", taken)  # fmt: skip
    assert code == 2 and "--out" in capsys.readouterr().err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    # A checkpoint is not an export, nor an export a checkpoint: each names the fix.
    code = _calibrate("--backend", "openvino", "--checkpoint", setup.stale, "--good", setup.good,
                      "--out", tmp_path / "x")  # fmt: skip
    assert code == 2 and "inspector export --checkpoint" in capsys.readouterr().err
    code = _calibrate("--checkpoint", exports["onnx"].folder, "--good", setup.good,
                      "--out", tmp_path / "y.safetensors")  # fmt: skip
    assert code == 2 and "is an exported model" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]
    # Exports run on the CPU: --device auto means the CPU for them.
    assert command_device("openvino", "auto") == CPU


def test_a_checkpoint_served_in_int8_gets_its_int8_thresholds_refitted(
    setup: Setup, synth_data: SynthSummary, tmp_path: Path
) -> None:
    quantized = tmp_path / "int8.safetensors"
    root = synth_data.root
    code = main(["quantize", "--checkpoint", str(setup.stale), "--out", str(quantized),
                 "--good", str(root / "train" / "good"), "--eval", str(root)])  # fmt: skip
    assert code == 0
    record = load_checkpoint(quantized).meta.int8
    assert record is not None and record.calibration is not None
    out = tmp_path / "recalibrated.safetensors"
    config = RecalibrateConfig(
        target_false_alarm_rate=RATE, device="cpu", precision="int8", auto_cache_dir=None
    )
    report = recalibrate(quantized, out, config, good=setup.good)
    assert (report.backend, report.precision, report.refitted) == ("openvino", "int8", "int8")
    assert report.before == record.calibration and "int8 record's thresholds" in report.summary()
    written = load_checkpoint(out)
    assert written.meta.int8 is not None and written.meta.int8.calibration == report.after
    # The fp32/bf16 thresholds are kept, and the record keeps its images: it still serves.
    assert written.meta.calibration == setup.stale_calibration
    assert torch.equal(
        written.extra[INT8_CALIBRATION], load_checkpoint(quantized).extra[INT8_CALIBRATION]
    )
    served = load_model(out, "torch", CPU, RuntimeOptions(precision="int8"), batch_size=4)
    assert served.engine.precision == "int8" and served.meta.calibration == report.after
    # Fitted on the int8 model's own scores: those `predict` gives when it serves int8.
    summary = predict(served, [setup.good], tmp_path / "pred", overlays=False)
    raw = [json.loads(line)["raw_score"] for line in summary.results.read_text().splitlines()]
    assert report.after.image_threshold == pytest.approx(np.quantile(raw, 1 - RATE), rel=1e-4)


def test_predict_and_calibrate_use_the_daemons_cached_auto_choice(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    # The commands' default is the daemon's default model.auto_cache_dir, $XDG_CACHE_HOME/inspector.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = tmp_path / "xdg" / "inspector"
    config = InspectorConfig.model_validate(
        {
            "model": {
                "checkpoint": str(setup.stale),
                "device": "cpu",
                "warmup_batches": 0,
                "auto_cache_dir": str(cache),
            },
            "batcher": {"max_batch_size": 4},
            "sources": [{"type": "directory", "path": str(setup.good)}],
            "sinks": {"kafka": {"enabled": False}},
        }
    )
    assert config.model.precision == "auto"
    daemon = load_served_model(None, setup.stale, config, Metrics(CollectorRegistry()))
    (entry,) = cache.glob("auto-precision-*.json")
    choice = json.loads(entry.read_text())
    assert choice["precision"] == daemon.worker.fast.precision
    # Mark the daemon's entry: a command that measured again would give its own reason.
    choice["reason"] = "the daemon's (marked by the test)"
    entry.write_text(json.dumps(choice))
    marked = entry.read_bytes()
    with caplog.at_level(logging.INFO, logger="inspector.ml.served"):
        code = main(["predict", "--checkpoint", str(setup.stale), "--batch-size", "4", "--out",
                     str(tmp_path / "pred"), "--no-overlays", str(setup.good)])  # fmt: skip
    assert code == 0
    served = f"precision auto: {choice['precision']} on torch (the daemon's (marked by the test)"
    assert f"{served}; cached)" in caplog.text
    report_path = tmp_path / "report.json"
    code = _calibrate("--checkpoint", setup.stale, "--good", setup.good, "--batch-size", "4",
                      "--auto-cache-dir", cache, "--out", tmp_path / "new.safetensors",
                      "--json", report_path)  # fmt: skip
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["precision"] == choice["precision"]
    assert report["precision_reason"] == "the daemon's (marked by the test); cached"
    # Neither command measured: the daemon's entry is the only one, as the test left it.
    assert list(cache.glob("auto-precision-*.json")) == [entry] and entry.read_bytes() == marked
