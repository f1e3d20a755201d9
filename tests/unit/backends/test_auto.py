"""precision auto: measured on this machine, guarded, cached per machine and checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from inspector.backends.auto import AutoChoice, candidates, choose
from inspector.checkpoint import CheckpointMeta, LoadedCheckpoint
from inspector.model import ReverseDistillation
from inspector.model.calibration import Calibration
from inspector.model.config import ArchitectureConfig
from inspector.model.fastpath import RuntimeOptions

CPU = torch.device("cpu")


def _model() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=64)).eval()


def choose_precision(
    model: ReverseDistillation,
    device: torch.device,
    options: RuntimeOptions,
    *,
    batch_size: int,
    sha256: str,
    calibration: Calibration,
    cache_dir: Path | None,
) -> AutoChoice:
    meta = CheckpointMeta(name="m", model=model.config, calibration=calibration)
    loaded = LoadedCheckpoint(model, meta, sha256, Path("m.safetensors"))
    choice, engine = choose(loaded, device, options, batch_size=batch_size, cache_dir=cache_dir)
    assert engine.precision == choice.precision and engine.backend == choice.backend == "torch"
    return choice


def _calibration(pixel_range: float) -> Calibration:
    return Calibration(
        mode="good_only",
        image_threshold=0.5,
        image_min=0.0,
        image_max=1.0,
        pixel_threshold=0.5,
        pixel_min=0.0,
        pixel_max=pixel_range,
    )


def test_auto_times_every_candidate_and_caches_the_choice(tmp_path: Path) -> None:
    names = candidates(CPU)
    choice = choose_precision(
        _model(), CPU, RuntimeOptions(), batch_size=2, sha256="a" * 64,
        calibration=_calibration(2.0), cache_dir=tmp_path,
    )  # fmt: skip
    if len(names) == 1:  # a torch build without oneDNN bf16: nothing to measure
        assert choice.precision == "fp32" and "only fp32" in choice.reason
        return
    assert set(choice.images_per_s) == {"fp32", "bf16"} and not choice.cached
    assert all(rate > 0 for rate in choice.images_per_s.values())
    # The faster of the two that passed the guard.
    kept = {p: r for p, r in choice.images_per_s.items() if p not in choice.refused}
    assert choice.precision == max(kept, key=kept.__getitem__)
    assert "fp32" in choice.reason and "bf16" in choice.reason
    assert len(list(tmp_path.glob("auto-precision-*.json"))) == 1

    again = choose_precision(
        _model(), CPU, RuntimeOptions(), batch_size=2, sha256="a" * 64,
        calibration=_calibration(2.0), cache_dir=tmp_path,
    )  # fmt: skip
    assert again.cached and again.precision == choice.precision
    assert again.images_per_s == choice.images_per_s
    # Another checkpoint (or batch size) measures anew.
    other = choose_precision(
        _model(), CPU, RuntimeOptions(), batch_size=2, sha256="b" * 64,
        calibration=_calibration(2.0), cache_dir=tmp_path,
    )  # fmt: skip
    assert not other.cached and len(list(tmp_path.glob("auto-precision-*.json"))) == 2


def test_bf16_whose_maps_drift_is_refused(tmp_path: Path) -> None:
    if "bf16" not in candidates(CPU):
        pytest.skip("this torch build runs no bf16 on the CPU (oneDNN without bf16)")
    # A calibrated pixel range of 1e-6: any bf16 difference is beyond 2 % of it.
    choice = choose_precision(
        _model(), CPU, RuntimeOptions(), batch_size=2, sha256="c" * 64,
        calibration=_calibration(1e-6), cache_dir=None,
    )  # fmt: skip
    assert choice.precision == "fp32"
    assert "bf16" in choice.refused and "differ from fp32" in choice.refused["bf16"]
    assert choice.max_map_difference["bf16"] > 0


def test_an_unreadable_cache_is_measured_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = choose_precision(
        _model(), CPU, RuntimeOptions(), batch_size=2, sha256="d" * 64,
        calibration=_calibration(2.0), cache_dir=tmp_path,
    )  # fmt: skip
    if not list(tmp_path.glob("*.json")):
        assert first.precision == "fp32"  # nothing to cache where only fp32 runs
        return
    (cached,) = tmp_path.glob("auto-precision-*.json")
    cached.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        again = choose_precision(
            _model(), CPU, RuntimeOptions(), batch_size=2, sha256="d" * 64,
            calibration=_calibration(2.0), cache_dir=tmp_path,
        )  # fmt: skip
    assert not again.cached and "ignoring the precision cache" in caplog.text
    assert '"precision"' in cached.read_text()  # rewritten
