"""Checkpoint files: exact round trips, and refusal of anything damaged or foreign."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from inspector import checkpoint as ckpt_module
from inspector.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from inspector.errors import CheckpointError
from inspector.model import ReverseDistillation
from inspector.model.calibration import Calibration
from inspector.model.config import AnomalyMapMode, ArchitectureConfig

CONFIG = ArchitectureConfig(backbone="resnet18", image_size=(64, 96), anomaly_map_mode="multiply")
NAME = "rd-test-model"


def _perturbed_model(config: ArchitectureConfig = CONFIG) -> ReverseDistillation:
    # Move every parameter and BN statistic away from its init value, so a round trip that
    # dropped or re-initialised a tensor could not pass by accident.
    torch.manual_seed(0)
    model = ReverseDistillation(config)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.mul_(torch.rand_like(tensor) + 0.5)
            elif tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
            else:
                tensor.fill_(7)  # num_batches_tracked
    return model.eval()


def _meta(config: ArchitectureConfig = CONFIG) -> CheckpointMeta:
    return CheckpointMeta(
        name=NAME,
        model=config,
        calibration=Calibration(
            mode="good_only",
            image_threshold=0.71,
            image_min=0.2,
            image_max=1.3,
            pixel_threshold=0.55,
            pixel_min=0.0,
            pixel_max=1.9,
            target_false_alarm_rate=0.01,
            n_good=40,
        ),
        training={"epochs": 3, "losses": [0.9, 0.5, 0.4], "seed": 0},
    )


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReverseDistillation, str]:
    path = tmp_path_factory.mktemp("ckpt") / "sub" / "model.safetensors"
    model = _perturbed_model()
    sha = save_checkpoint(path, model, _meta())
    return path, model, sha


def _header(data: bytes) -> tuple[int, dict[str, object]]:
    length = int.from_bytes(data[:8], "little")
    return length, json.loads(data[8 : 8 + length])


def test_round_trip_maps_are_identical(saved: tuple[Path, ReverseDistillation, str]) -> None:
    path, model, sha = saved
    loaded = load_checkpoint(path)
    assert loaded.sha256 == sha
    assert loaded.path == path
    assert not loaded.model.training
    original = model.state_dict()
    restored = loaded.model.state_dict()
    assert original.keys() == restored.keys()
    for key, value in original.items():
        assert torch.equal(value, restored[key]), key
    torch.manual_seed(1)
    images = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        expected, got = model(images), loaded.model(images)
    assert torch.equal(expected.anomaly_map, got.anomaly_map)
    assert torch.equal(expected.pred_score, got.pred_score)


def test_metadata_round_trip(saved: tuple[Path, ReverseDistillation, str]) -> None:
    path, _, _ = saved
    meta = load_checkpoint(path).meta
    expected = _meta()
    assert meta.model_dump(exclude={"created_at"}) == expected.model_dump(exclude={"created_at"})
    assert meta.model.image_size == (64, 96)
    assert meta.model.anomaly_map_mode is AnomalyMapMode.MULTIPLY
    assert meta.calibration is not None and meta.calibration.image_threshold == 0.71
    assert meta.training["losses"] == [0.9, 0.5, 0.4]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "nope.safetensors")


@pytest.mark.parametrize("keep", [0, 5, 100, "header", -1])
def test_truncated_file(
    saved: tuple[Path, ReverseDistillation, str], tmp_path: Path, keep: int | str
) -> None:
    data = saved[0].read_bytes()
    if keep == "header":
        keep = 8 + _header(data)[0]
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[:keep])
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(bad)


def test_tampered_tensor_bytes(
    saved: tuple[Path, ReverseDistillation, str], tmp_path: Path
) -> None:
    data = bytearray(saved[0].read_bytes())
    length, header = _header(bytes(data))
    start, end = header["decoder.layer3.1.conv2.weight"]["data_offsets"]  # type: ignore[index]
    data[8 + length + (start + end) // 2] ^= 0x01  # one bit of one weight
    bad = tmp_path / "tampered.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(bad)


def test_tampered_metadata_in_place(
    saved: tuple[Path, ReverseDistillation, str], tmp_path: Path
) -> None:
    data = saved[0].read_bytes()
    length = _header(data)[0]
    head = data[8 : 8 + length]
    assert head.count(b"0.71") == 1  # the image threshold, inside the metadata JSON
    edited = head.replace(b"0.71", b"0.99")  # same length: the header stays valid
    bad = tmp_path / "meta-edited.safetensors"
    bad.write_bytes(data[:8] + edited + data[8 + length :])
    assert _header(bad.read_bytes())[1]["__metadata__"] != _header(data)[1]["__metadata__"]
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(bad)


def _rewrite(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    path.write_bytes(st_save(tensors, metadata=metadata))


def test_modified_metadata_with_old_digest(
    saved: tuple[Path, ReverseDistillation, str], tmp_path: Path
) -> None:
    path, model, _ = saved
    stored = _header(path.read_bytes())[1]["__metadata__"]
    assert isinstance(stored, dict)
    meta = json.loads(stored["inspector"])
    meta["calibration"]["image_threshold"] = 5.0
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    bad = tmp_path / "rewritten.safetensors"
    _rewrite(
        bad,
        tensors,
        {"inspector": json.dumps(meta), **{"inspector_sha256": stored["inspector_sha256"]}},
    )
    with pytest.raises(CheckpointError, match="integrity check"):
        load_checkpoint(bad)


def test_plain_safetensors_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "plain.safetensors"
    _rewrite(bad, {"w": torch.zeros(3)}, {"format": "pt"})
    with pytest.raises(CheckpointError, match="not an inspector checkpoint"):
        load_checkpoint(bad)
    bad.write_bytes(st_save({"w": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="not an inspector checkpoint"):
        load_checkpoint(bad)


def test_tensors_not_matching_config_are_refused(
    saved: tuple[Path, ReverseDistillation, str], tmp_path: Path
) -> None:
    # A self-consistent file (valid digest) whose metadata claims resnet34 over resnet18
    # tensors: only the strict load can catch it.
    _, model, _ = saved
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    lying = _meta(CONFIG.model_copy(update={"backbone": "resnet34"})).model_dump_json()
    bad = tmp_path / "lying.safetensors"
    digest = ckpt_module._digest(tensors, lying)
    _rewrite(bad, tensors, {"inspector": lying, "inspector_sha256": digest})
    with pytest.raises(CheckpointError, match=r"do not match its model config \(resnet34\)"):
        load_checkpoint(bad)


def test_invalid_metadata_with_valid_digest(
    saved: tuple[Path, ReverseDistillation, str], tmp_path: Path
) -> None:
    _, model, _ = saved
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    meta = json.loads(_meta().model_dump_json())
    meta["model"]["image_size"] = [100, 100]
    text = json.dumps(meta)
    bad = tmp_path / "invalid.safetensors"
    _rewrite(
        bad, tensors, {"inspector": text, "inspector_sha256": ckpt_module._digest(tensors, text)}
    )
    with pytest.raises(CheckpointError, match="invalid metadata"):
        load_checkpoint(bad)


def test_save_refuses_config_mismatch(tmp_path: Path) -> None:
    model = ReverseDistillation(CONFIG)
    with pytest.raises(CheckpointError, match="disagree"):
        save_checkpoint(
            tmp_path / "x.safetensors", model, _meta(CONFIG.model_copy(update={"sigma": 2.0}))
        )
    assert list(tmp_path.iterdir()) == []


def test_saved_checkpoint_is_world_readable(saved: tuple[Path, ReverseDistillation, str]) -> None:
    path, _, _ = saved
    assert path.stat().st_mode & 0o044 == 0o044


def test_save_is_atomic(saved: tuple[Path, ReverseDistillation, str], tmp_path: Path) -> None:
    path, model, _ = saved
    target = tmp_path / "model.safetensors"
    save_checkpoint(target, model, _meta())
    first = target.read_bytes()
    # Overwriting replaces the file in one step and leaves nothing else behind.
    sha = save_checkpoint(target, model, _meta().model_copy(update={"name": "second"}))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    assert target.read_bytes() != first
    assert load_checkpoint(target).sha256 == sha
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_failed_save_keeps_previous_file(
    saved: tuple[Path, ReverseDistillation, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model, _ = saved
    target = tmp_path / "model.safetensors"
    sha = save_checkpoint(target, model, _meta())
    before = target.read_bytes()

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CheckpointError, match="cannot write checkpoint"):
        save_checkpoint(target, model, _meta().model_copy(update={"name": "other"}))
    assert target.read_bytes() == before
    assert load_checkpoint(target).sha256 == sha


def test_failed_save_leaves_no_temp_file(
    saved: tuple[Path, ReverseDistillation, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, model, _ = saved

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path / "model.safetensors", model, _meta())
    assert list(tmp_path.iterdir()) == []
