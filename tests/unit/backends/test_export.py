"""Exported models: parity with PyTorch, int8 with its guard, verification, and the daemon."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from inspector.backends import load_model
from inspector.backends.manifest import MANIFEST, write_manifest
from inspector.checkpoint import LoadedCheckpoint
from inspector.cli import main
from inspector.errors import BackendUnavailableError, ExportError
from inspector.ml.data import labelled_items, load_items
from inspector.ml.export import ExportResult, export_model
from inspector.ml.int8_guard import Int8Settings
from inspector.model.preprocess import normalise
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon

CPU = torch.device("cpu")
BACKEND = {"openvino": "openvino", "onnx": "onnxruntime"}


@pytest.fixture(scope="module")
def test_images(data_root_module: Path, checkpoint: LoadedCheckpoint) -> torch.Tensor:
    """The synthetic test split, normalised: good parts and every defect kind."""
    items = labelled_items(data_root_module, "test")
    loaded = load_items(items, checkpoint.meta.model.image_size)
    return normalise(loaded.images, checkpoint.meta.preprocessing)


@pytest.fixture(scope="module")
def data_root_module(synth_data: object) -> Path:
    return Path(synth_data.root)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def exports(
    checkpoint: LoadedCheckpoint, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, ExportResult]:
    out = tmp_path_factory.mktemp("exports")
    return {fmt: export_model(checkpoint.path, out / fmt, fmt) for fmt in ("openvino", "onnx")}  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def int8_export(
    checkpoint: LoadedCheckpoint, data_root_module: Path, tmp_path_factory: pytest.TempPathFactory
) -> ExportResult:
    out = tmp_path_factory.mktemp("int8") / "openvino-int8"
    return export_model(
        checkpoint.path,
        out,
        "openvino",
        int8=Int8Settings(good=data_root_module / "train" / "good", eval_root=data_root_module),
    )


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_fp32_export_gives_the_pytorch_maps(
    fmt: str,
    exports: dict[str, ExportResult],
    checkpoint: LoadedCheckpoint,
    test_images: torch.Tensor,
) -> None:
    loaded = load_model(exports[fmt].folder, BACKEND[fmt], CPU)  # type: ignore[arg-type]
    assert loaded.meta == checkpoint.meta  # normalisation and thresholds travel with the graph
    assert loaded.sha256 == exports[fmt].sha256 and loaded.engine.precision == "fp32"
    with torch.inference_mode():
        ref = checkpoint.model(test_images)
    out = loaded.engine(test_images)
    assert out.anomaly_map.shape == ref.anomaly_map.shape and out.pred_score.shape == (
        len(test_images),
    )
    diff = float((out.anomaly_map - ref.anomaly_map).abs().max())
    assert diff <= 1e-4, f"max map difference {diff}"
    threshold = checkpoint.meta.calibration.image_threshold  # type: ignore[union-attr]
    assert torch.equal(out.pred_score > threshold, ref.pred_score > threshold)
    # Another batch size than the example the graph was traced with.
    assert loaded.engine(test_images[:3]).anomaly_map.shape[0] == 3


def test_int8_export_is_guarded_and_recalibrated(
    int8_export: ExportResult, checkpoint: LoadedCheckpoint, test_images: torch.Tensor
) -> None:
    manifest = int8_export.manifest
    report = manifest.quantization
    assert manifest.precision == "int8" and report is not None
    assert set(report.metrics) == {"image_auroc", "pixel_auroc", "aupro"}
    for name, values in report.metrics.items():
        assert values["int8"] >= values["fp32"] - report.tolerance, name
    assert 0 < report.max_map_difference < 0.5 and report.score_correlation > 0.9
    cal, fp32_cal = manifest.meta.calibration, checkpoint.meta.calibration
    assert cal is not None and fp32_cal is not None
    assert cal.image_threshold != fp32_cal.image_threshold  # re-fitted on int8 scores
    assert cal.mode == fp32_cal.mode
    engine = load_model(int8_export.folder, "openvino", CPU).engine
    assert engine.precision == "int8"
    out = engine(test_images)
    with torch.inference_mode():
        ref = checkpoint.model(test_images)
    assert float((out.anomaly_map - ref.anomaly_map).abs().max()) <= report.max_map_difference * 2


def test_a_changed_byte_or_an_edited_manifest_is_refused(
    exports: dict[str, ExportResult], tmp_path: Path
) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(exports["openvino"].folder, folder)
    data = bytearray((folder / "model.bin").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model.bin").write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"model\.bin failed its integrity check"):
        load_model(folder, "openvino", CPU)

    shutil.rmtree(folder)
    shutil.copytree(exports["openvino"].folder, folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["meta"]["calibration"]["image_threshold"] = 0.0
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="manifest was edited"):
        load_model(folder, "openvino", CPU)


def test_metadata_that_does_not_match_the_graph_is_refused(
    exports: dict[str, ExportResult], tmp_path: Path
) -> None:
    # A manifest re-sealed with other thresholds than the graph carries: the digests hold, but
    # the graph and its manifest disagree.
    folder = tmp_path / "resealed"
    shutil.copytree(exports["onnx"].folder, folder)
    manifest = exports["onnx"].manifest
    cal = manifest.meta.calibration
    assert cal is not None
    other = manifest.meta.model_copy(
        update={"calibration": cal.model_copy(update={"image_threshold": 0.0})}
    )
    write_manifest(folder, manifest.model_copy(update={"meta": other}))
    with pytest.raises(ExportError, match="does not match"):
        load_model(folder, "onnxruntime", CPU)
    # Another input size in the metadata than the graph's input.
    arch = manifest.meta.model.model_copy(update={"image_size": (64, 64)})
    write_manifest(
        folder, manifest.model_copy(update={"meta": other.model_copy(update={"model": arch})})
    )
    with pytest.raises(ExportError):
        load_model(folder, "onnxruntime", CPU)


def test_wrong_kind_of_file_for_the_backend(
    exports: dict[str, ExportResult], checkpoint: LoadedCheckpoint, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match="is an exported model"):
        load_model(exports["onnx"].folder, "torch", CPU)
    with pytest.raises(ExportError, match="inspector export --checkpoint"):
        load_model(checkpoint.path, "openvino", CPU)
    with pytest.raises(ExportError, match="onnx export"):
        load_model(exports["onnx"].folder, "openvino", CPU)
    with pytest.raises(ExportError, match=r"no inspector-export\.json"):
        load_model(tmp_path, "onnxruntime", CPU)


def test_a_backend_that_is_not_installed_names_the_install(
    exports: dict[str, ExportResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails
    with pytest.raises(BackendUnavailableError, match=r"pip install 'inspector\[openvino\]'"):
        load_model(exports["openvino"].folder, "openvino", CPU)


def test_export_command_bad_input_exits_2(
    checkpoint: LoadedCheckpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = main(
        ["export", "--checkpoint", str(checkpoint.path), "--out", str(tmp_path / "x"),
         "--format", "openvino", "--int8", "--good", str(empty)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and f"--good {empty}" in err and err.count("\n") == 1
    code = main(
        ["export", "--checkpoint", str(checkpoint.path), "--out", str(tmp_path / "y"),
         "--format", "onnx", "--int8"]
    )  # fmt: skip
    assert code == 2 and "--int8 needs --good" in capsys.readouterr().err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    code = main(
        ["export", "--checkpoint", str(checkpoint.path), "--out", str(taken), "--format", "onnx"]
    )
    assert code == 2 and "--out" in capsys.readouterr().err
    assert (taken / "notes.txt").read_text() == "mine"


def test_daemon_serves_an_int8_export(
    int8_export: ExportResult, data_root_module: Path, tmp_path: Path
) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for cls in ("good", "crack"):
        for src in sorted((data_root_module / "test" / cls).iterdir())[:3]:
            shutil.copy(src, frames / f"{cls}_{src.name}")
    config = InspectorConfig.model_validate(
        {
            "sources": [{"type": "directory", "path": str(frames), "camera_id": "replay"}],
            "model": {
                "checkpoint": str(int8_export.folder),
                "backend": "openvino",
                "device": "cpu",
                "warmup_batches": 1,
            },
            "batcher": {"max_batch_size": 4, "max_wait_ms": 5},
            "sinks": {"kafka": {"enabled": False}, "jsonl": {"path": str(tmp_path / "r.jsonl")}},
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )
    registry = CollectorRegistry()
    assert Daemon(config, registry=registry).run() == 0
    results = [json.loads(x) for x in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert len(results) == 6
    assert {r["model"]["checkpoint_sha256"] for r in results} == {int8_export.sha256}
    scores = np.array([r["score"] for r in results])
    assert np.isfinite(scores).all() and ((scores >= 0) & (scores <= 1)).all()
    info = {
        "name": int8_export.manifest.meta.name,
        "backbone": "resnet18",
        "device": "cpu",
        "checkpoint_sha256": int8_export.sha256,
        "backend": "openvino",
        "precision": "int8",
    }
    assert registry.get_sample_value("inspector_model_info", info) == 1


def test_eval_and_predict_run_an_export_like_its_checkpoint(
    exports: dict[str, ExportResult],
    checkpoint: LoadedCheckpoint,
    data_root_module: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (
        main(["eval", "--checkpoint", str(checkpoint.path), "--data", str(data_root_module)]) == 0
    )
    torch_report = json.loads(capsys.readouterr().out)
    code = main(
        ["eval", "--checkpoint", str(exports["openvino"].folder), "--data", str(data_root_module),
         "--backend", "openvino"]
    )  # fmt: skip
    assert code == 0
    ov_report = json.loads(capsys.readouterr().out)
    for key in ("image_auroc", "pixel_auroc", "pixel_aupro", "image_f1"):
        assert ov_report[key] == pytest.approx(torch_report[key], abs=1e-3), key
    assert ov_report["checkpoint_sha256"] == exports["openvino"].sha256

    good = sorted((data_root_module / "test" / "good").iterdir())[:2]
    code = main(
        ["predict", "--checkpoint", str(exports["onnx"].folder), "--backend", "onnxruntime",
         "--out", str(tmp_path / "pred"), "--no-overlays", *map(str, good)]
    )  # fmt: skip
    assert code == 0
    lines = (tmp_path / "pred" / "results.jsonl").read_text().splitlines()
    assert [json.loads(x)["model"]["checkpoint_sha256"] for x in lines] == [
        exports["onnx"].sha256
    ] * 2
