"""inspector quantize stores a guarded int8 variant; precision auto times it and may serve it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from inspector.backends import load_model
from inspector.checkpoint import INT8_CALIBRATION, INT8_HELD_OUT, LoadedCheckpoint, load_checkpoint
from inspector.cli import main
from inspector.errors import BackendUnavailableError, ConfigError
from inspector.model.fastpath import RuntimeOptions
from inspector.tools.synth import SynthSummary

CPU = torch.device("cpu")
AUTO = RuntimeOptions(precision="auto")


@pytest.fixture(scope="module")
def quantized(
    checkpoint: LoadedCheckpoint, synth_data: SynthSummary, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("quantized") / "rd-int8.safetensors"
    root = synth_data.root
    code = main(
        ["quantize", "--checkpoint", str(checkpoint.path), "--out", str(out),
         "--good", str(root / "train" / "good"), "--eval", str(root)]
    )  # fmt: skip
    assert code == 0
    return out


def test_quantize_stores_the_guard_and_its_images(
    quantized: Path, checkpoint: LoadedCheckpoint
) -> None:
    loaded = load_checkpoint(quantized)
    record = loaded.meta.int8
    assert record is not None and record.backend == "openvino"
    guard = record.guard
    assert set(guard.metrics) == {"image_auroc", "pixel_auroc", "aupro"}
    assert all(v["int8"] >= v["fp32"] - guard.tolerance for v in guard.metrics.values())
    size = tuple(checkpoint.meta.model.image_size)
    calibration, held = loaded.extra[INT8_CALIBRATION], loaded.extra[INT8_HELD_OUT]
    assert calibration.dtype == held.dtype == torch.uint8
    assert calibration.shape[1:] == held.shape[1:] == (3, *size)
    assert len(calibration) == guard.calibration_images and len(held) >= 2
    # The fp32 model is untouched: same weights, same fp32 calibration.
    for (name, a), b in zip(
        loaded.model.state_dict().items(), checkpoint.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert loaded.meta.calibration == checkpoint.meta.calibration


def test_auto_times_int8_beside_fp32_and_caches_its_graph(quantized: Path, tmp_path: Path) -> None:
    first = load_model(quantized, "torch", CPU, AUTO, batch_size=4, auto_cache_dir=tmp_path)
    auto = first.auto
    assert auto is not None and not auto.cached
    assert "int8" in auto.images_per_s and "int8" not in auto.refused, auto.reason
    kept = {p: r for p, r in auto.images_per_s.items() if p not in auto.refused}
    assert auto.precision == max(kept, key=kept.__getitem__)
    record = load_checkpoint(quantized).meta.int8
    assert record is not None
    if auto.precision == "int8":
        assert first.engine.backend == "openvino" and first.engine.precision == "int8"
        assert first.meta.calibration == record.calibration  # thresholds re-fitted for int8
    assert len(list(tmp_path.glob("int8-*/model.xml"))) == 1  # kept for the next start

    again = load_model(quantized, "torch", CPU, AUTO, batch_size=4, auto_cache_dir=tmp_path)
    assert again.auto is not None and again.auto.cached
    assert again.auto.precision == auto.precision
    assert again.engine.precision == first.engine.precision
    cached = json.loads(next(tmp_path.glob("auto-precision-*.json")).read_text())
    assert cached["precision"] == auto.precision and "int8" in cached["images_per_s"]


def test_without_openvino_int8_is_left_out_with_the_install(
    quantized: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    loaded = load_model(quantized, "torch", CPU, AUTO, batch_size=4, auto_cache_dir=None)
    assert loaded.auto is not None and loaded.auto.precision in ("fp32", "bf16")
    assert "pip install" in loaded.auto.refused["int8"]


def test_quantize_without_good_images_exits_2(
    checkpoint: LoadedCheckpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["quantize", "--checkpoint", str(checkpoint.path), "--out", str(tmp_path / "q"),
         "--good", str(tmp_path / "missing")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "--good" in err and err.count("\n") == 1
    assert not (tmp_path / "q").exists()


INT8 = RuntimeOptions(precision="int8")


def test_precision_int8_serves_the_record_without_timing(quantized: Path, tmp_path: Path) -> None:
    served = load_model(quantized, "torch", CPU, INT8, batch_size=4, auto_cache_dir=tmp_path)
    record = load_checkpoint(quantized).meta.int8
    assert record is not None and served.auto is not None
    assert served.engine.backend == "openvino" and served.engine.precision == "int8"
    assert served.auto.images_per_s == {}  # nothing timed
    assert served.meta.calibration == record.calibration  # thresholds re-fitted for int8
    # Checked against fp32 on the stored held-out images when made.
    assert served.auto.max_map_difference["int8"] <= 1.5 * record.guard.max_map_difference + 1e-3
    assert len(list(tmp_path.glob("int8-*/model.xml"))) == 1
    # The next start reads the graph auto would time (one cache entry for both).
    again = load_model(quantized, "torch", CPU, AUTO, batch_size=4, auto_cache_dir=tmp_path)
    assert again.auto is not None and "int8" in again.auto.images_per_s
    assert len(list(tmp_path.glob("int8-*/model.xml"))) == 1


def test_precision_int8_without_a_record_names_quantize(checkpoint: LoadedCheckpoint) -> None:
    with pytest.raises(ConfigError, match="inspector quantize --checkpoint"):
        load_model(checkpoint.path, "torch", CPU, INT8, batch_size=4, auto_cache_dir=None)


def test_precision_int8_without_openvino_names_the_install(
    quantized: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(BackendUnavailableError, match="pip install"):
        load_model(quantized, "torch", CPU, INT8, batch_size=4, auto_cache_dir=None)
