"""anomalib import: conversion parity against anomalib 2.7.0 itself, and refusals.

anomalib is a dev dependency (never imported by inspector): without it these tests skip.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from inspector.checkpoint import load_checkpoint
from inspector.errors import CheckpointError, ConfigError
from inspector.ml.interop import anomalib_calibration, convert_anomalib_state_dict, import_anomalib
from inspector.model import AnomalyMapGenerator, ReverseDistillation
from inspector.model.config import AnomalyMapMode, ArchitectureConfig

Reference = Callable[[str, int], nn.Module]
DEAD = ("bottleneck.conv4.", "bottleneck.bn4.")


@pytest.fixture(scope="module")
def anomalib() -> ModuleType:
    # Importing anomalib emits two FutureWarnings from its dependencies (timm's renamed
    # timm.models.layers, anomalib's own deprecated dinov2 package); they are not ours and
    # would fail the suite under filterwarnings=error, so only these two are silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Importing from timm.models.layers", FutureWarning)
        warnings.filterwarnings("ignore", "The anomalib.models.components.dinov2", FutureWarning)
        module = pytest.importorskip("anomalib.models.image.reverse_distillation.torch_model")
        pytest.importorskip("anomalib.models")
    return module


def _randomise(model: nn.Module, size: int, seed: int) -> None:
    """Give every weight and BN statistic a random, deterministic, non-init value."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.ndim == 4:  # convolutions, He-scaled so activations stay O(1)
                tensor.normal_(0, math.sqrt(2 / tensor[0].numel()), generator=gen)
            elif name.endswith("running_var"):
                tensor.uniform_(0.75, 1.25, generator=gen)
            elif name.endswith("weight"):  # BN scale
                tensor.normal_(1, 0.1, generator=gen)
            elif tensor.is_floating_point():  # BN shift and running mean
                tensor.normal_(0, 0.1, generator=gen)
            else:
                tensor.fill_(3)  # num_batches_tracked
        # A train-mode pass moves the OCBE/decoder BN statistics the way training does
        # (anomalib keeps its encoder in eval mode).
        model.train()
        model(torch.randn(2, 3, size, size, generator=gen))
        model.eval()


@pytest.fixture(scope="module")
def reference(anomalib: ModuleType) -> Iterator[Reference]:
    """anomalib ``ReverseDistillationModel`` instances, built once per (backbone, size)."""
    built: dict[tuple[str, int], nn.Module] = {}

    def get(backbone: str, size: int) -> nn.Module:
        if (backbone, size) not in built:
            # Built on the meta device and filled by _randomise: anomalib's own init of
            # wide_resnet50_2 (kaiming_normal_ over 89 M weights) alone takes seconds.
            with torch.device("meta"):
                model = anomalib.ReverseDistillationModel(
                    backbone=backbone,
                    input_size=(size, size),
                    layers=["layer1", "layer2", "layer3"],
                    anomaly_map_mode="add",
                    pre_trained=False,
                )
            model.to_empty(device="cpu")
            _randomise(model, size, seed=len(built) + 1)
            built[(backbone, size)] = model
        return built[(backbone, size)]

    yield get
    built.clear()


def _set_mode(ref: nn.Module, mode: AnomalyMapMode) -> None:
    from anomalib.models.image.reverse_distillation.anomaly_map import AnomalyMapGenerationMode

    ref.anomaly_map_generator.mode = AnomalyMapGenerationMode(mode.value)


def _renamed(ref: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in ref.state_dict().items():
        if key.startswith(DEAD):
            continue
        out[key.replace("encoder.feature_extractor.", "encoder.", 1)] = value
    return out


def _assert_parity(ref: nn.Module, ours: ReverseDistillation, size: int, seed: int) -> float:
    torch.manual_seed(seed)
    images = torch.randn(4, 3, size, size)
    worst = 0.0
    with torch.no_grad():
        for batch in (images[:1], images):
            expected, got = ref(batch), ours(batch)
            assert (
                got.anomaly_map.shape == expected.anomaly_map.shape == (len(batch), 1, size, size)
            )
            torch.testing.assert_close(got.anomaly_map, expected.anomaly_map, rtol=0, atol=1e-4)
            # anomalib's scores are (N, 1): amax over the last two dims only.
            torch.testing.assert_close(
                got.pred_score, expected.pred_score.reshape(-1), rtol=0, atol=1e-4
            )
            worst = max(worst, float((got.anomaly_map - expected.anomaly_map).abs().max()))
    return worst


def _save_lightning(path: Path, ref: nn.Module, extra: dict[str, Any] | None = None) -> None:
    # The key layout of an anomalib Lightning checkpoint's state_dict: the torch model under
    # "model.", plus post-processor buffers.
    state = {f"model.{k}": v for k, v in ref.state_dict().items()}
    state["post_processor._image_threshold"] = torch.tensor(float("nan"))
    torch.save({"state_dict": state, "epoch": 3, **(extra or {})}, path)


@pytest.mark.parametrize(
    ("size", "mode", "layout"),
    [
        (64, AnomalyMapMode.ADD, "lightning"),
        (64, AnomalyMapMode.MULTIPLY, "bare"),
        (128, AnomalyMapMode.MULTIPLY, "lightning"),
    ],
)
def test_import_file_parity_resnet18(
    reference: Reference, tmp_path: Path, size: int, mode: AnomalyMapMode, layout: str
) -> None:
    ref = reference("resnet18", size)
    _set_mode(ref, mode)
    src = tmp_path / "source.ckpt"
    if layout == "lightning":
        _save_lightning(src, ref)
    else:
        torch.save(ref.state_dict(), src)
    out = tmp_path / "imported.safetensors"
    result = import_anomalib(src, out, image_size=size, anomaly_map_mode=mode, name="rd18")

    loaded = load_checkpoint(out)
    assert loaded.sha256 == result.sha256
    assert loaded.meta.name == "rd18"
    assert loaded.meta.model.backbone == "resnet18"
    assert loaded.meta.model.ocbe_width == "anomalib"
    assert loaded.meta.model.image_size == (size, size)
    assert loaded.meta.model.anomaly_map_mode is mode
    assert loaded.meta.calibration is None
    training = loaded.meta.training
    assert training["imported_from"] == "anomalib"
    assert training["source_file"] == "source.ckpt"
    assert training["source_format"] == ("lightning" if layout == "lightning" else "state_dict")
    assert training["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()

    # Weights are bit-identical, and the dead OCBE layers are gone.
    expected = _renamed(ref)
    restored = loaded.model.state_dict()
    assert restored.keys() == expected.keys()
    assert not any(k.startswith(DEAD) for k in restored)
    for key, value in expected.items():
        assert restored[key].dtype == value.dtype
        assert torch.equal(restored[key], value), key

    _assert_parity(ref, loaded.model, size, seed=size)
    returned = result.model.state_dict()
    assert all(torch.equal(returned[k], v) for k, v in expected.items())


def test_convert_parity_wide_resnet50_2(reference: Reference) -> None:
    ref = reference("wide_resnet50_2", 64)
    ours: ReverseDistillation | None = None
    for mode in AnomalyMapMode:
        _set_mode(ref, mode)
        lightning_style = {f"model.{k}": v for k, v in ref.state_dict().items()}
        config, tensors, post = convert_anomalib_state_dict(
            lightning_style, image_size=64, anomaly_map_mode=mode
        )
        assert (config.backbone, config.ocbe_width) == ("wide_resnet50_2", "anomalib")
        assert config.anomaly_map_mode is mode
        assert post == {}
        assert not any(k.startswith(DEAD) for k in tensors)
        if ours is None:
            ours = ReverseDistillation(config)
            ours.load_state_dict(tensors, strict=True)
            ours.eval()
        else:
            # Same weights; only the combination differs (saves building wide_resnet50_2
            # twice).
            ours.anomaly_map = AnomalyMapGenerator(config.image_size, mode, config.sigma)
        _assert_parity(ref, ours, 64, seed=7)


@pytest.mark.parametrize("backbone", ["resnet34", "resnet50"])
def test_backbone_inference(anomalib: ModuleType, backbone: str) -> None:
    with torch.device("meta"):
        ref = anomalib.ReverseDistillationModel(
            backbone=backbone,
            input_size=(64, 64),
            layers=["layer1", "layer2", "layer3"],
            anomaly_map_mode="add",
            pre_trained=False,
        )
    config, tensors, _ = convert_anomalib_state_dict(ref.state_dict())
    assert config.backbone == backbone
    assert config.image_size == (256, 256)
    assert config.anomaly_map_mode is AnomalyMapMode.ADD
    assert len(tensors) == len(ref.state_dict()) - sum(k.startswith(DEAD) for k in ref.state_dict())


def test_official_ocbe_width_is_recognised() -> None:
    # An RD4AD-style OCBE (width per group 128) in anomalib's key layout.
    with torch.device("meta"):
        ours = ReverseDistillation(
            ArchitectureConfig(backbone="wide_resnet50_2", ocbe_width="official")
        )
    state = {
        (f"encoder.feature_extractor.{k[8:]}" if k.startswith("encoder.") else k): v
        for k, v in ours.state_dict().items()
    }
    config, _, _ = convert_anomalib_state_dict(state)
    assert config.ocbe_width == "official"


def test_real_lightning_checkpoint(anomalib: ModuleType, tmp_path: Path) -> None:
    """A checkpoint written by Lightning after anomalib's own fit and validation."""
    from anomalib.data import ImageBatch, InferenceBatch
    from anomalib.models import ReverseDistillation as LightningRD
    from anomalib.models.image.reverse_distillation.anomaly_map import AnomalyMapGenerationMode
    from lightning.pytorch import Trainer

    torch.manual_seed(0)
    module = LightningRD(
        backbone="resnet18",
        anomaly_map_mode=AnomalyMapGenerationMode.MULTIPLY,  # pickled as an enum: needs mapping
        pre_trained=False,
        pre_processor=LightningRD.configure_pre_processor(image_size=(64, 64)),
        evaluator=False,
        visualizer=False,
    )
    module.post_processor.image_sensitivity = 0.6  # moves the effective image threshold
    _randomise(module.model, 64, seed=11)
    module.train()  # Lightning 2.6 keeps each submodule's mode; _randomise left it in eval

    def batch(n: int, anomalous: bool) -> Any:
        masks = (
            torch.rand(n, 64, 64) > 0.9 if anomalous else torch.zeros(n, 64, 64, dtype=torch.bool)
        )
        return ImageBatch(
            image=torch.rand(n, 3, 64, 64),
            gt_label=torch.tensor([int(anomalous)] * n),
            gt_mask=masks,
        )

    train = torch.utils.data.DataLoader([batch(4, False)], batch_size=None)
    val = torch.utils.data.DataLoader([batch(2, False), batch(2, True)], batch_size=None)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=1,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with warnings.catch_warnings():
        # Lightning 2.6 on torch 2.14: a deprecation inside its own pytree helper, and notices
        # about this deliberately minimal setup (no logger, batches of anomalib's dataclass).
        # None is about the checkpoint under test.
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)
        warnings.filterwarnings("ignore", r"You called `self.log\('train_loss'", UserWarning)
        warnings.filterwarnings("ignore", "Trying to infer the `batch_size`", UserWarning)
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    src = tmp_path / "model.ckpt"
    trainer.save_checkpoint(src)
    # A plain weights_only load fails on the pickled enum: the importer must handle it.
    with pytest.raises(Exception, match="AnomalyMapGenerationMode"):
        torch.load(src, weights_only=True)

    result = import_anomalib(src, tmp_path / "imported.safetensors")
    meta = result.meta
    assert meta.model.backbone == "resnet18"
    assert meta.model.image_size == (64, 64)  # from the checkpoint's pre-processor
    assert meta.model.anomaly_map_mode is AnomalyMapMode.MULTIPLY  # from hyper_parameters
    assert meta.training["image_size_from"] == "pre_processor"
    assert meta.training["epoch"] == 1
    assert "preprocessing_mismatches" not in meta.training
    assert meta.name == "model"

    module.eval()
    _assert_parity(module.model, result.model, 64, seed=5)

    # Calibration: anomalib's fitted thresholds and min/max, with labels that agree with
    # anomalib's own post-processor.
    post = module.post_processor
    calibration = meta.calibration
    assert calibration is not None and calibration.mode == "imported"
    assert calibration.image_min == pytest.approx(float(post.image_min))
    assert calibration.pixel_max == pytest.approx(float(post.pixel_max))
    span = float(post.image_max - post.image_min)
    assert calibration.image_threshold == pytest.approx(float(post.image_threshold) - 0.1 * span)
    assert calibration.pixel_threshold == pytest.approx(float(post.pixel_threshold))
    torch.manual_seed(6)
    with torch.no_grad():
        raw = result.model(torch.randn(16, 3, 64, 64) * 1.5)
    processed = post(InferenceBatch(pred_score=raw.pred_score, anomaly_map=raw.anomaly_map))
    assert torch.equal(calibration.normalise_image(raw.pred_score) > 0.5, processed.pred_label)
    heat = torch.from_numpy(calibration.normalise_pixel_array(raw.anomaly_map.numpy()))
    assert torch.equal(heat > 0.5, processed.pred_mask)
    torch.testing.assert_close(heat, processed.anomaly_map, rtol=0, atol=1e-6)

    # Thresholds fitted at 64 px in MULTIPLY mode mean nothing at another size or mode.
    for kwargs in ({"image_size": 96}, {"anomaly_map_mode": AnomalyMapMode.ADD}):
        other = import_anomalib(src, tmp_path / "other.safetensors", **kwargs)
        assert other.meta.calibration is None
        assert other.meta.training["calibration_imported"] is False


def test_calibration_rules() -> None:
    def buffers(**values: float) -> dict[str, torch.Tensor]:
        base = dict(
            _image_threshold=0.5,
            _pixel_threshold=0.4,
            image_min=0.1,
            image_max=0.9,
            pixel_min=0.0,
            pixel_max=2.0,
        )
        return {k: torch.tensor(v) for k, v in {**base, **values}.items()}

    plain = anomalib_calibration(buffers())
    assert plain is not None
    assert (plain.image_threshold, plain.pixel_threshold) == (0.5, pytest.approx(0.4))
    # An unfitted level borrows the other's threshold (anomalib's threshold matching)...
    matched = anomalib_calibration(buffers(_pixel_threshold=float("nan")))
    assert matched is not None and matched.pixel_threshold == 0.5
    # ...unless matching is off; then there is nothing usable.
    assert (
        anomalib_calibration(
            buffers(_pixel_threshold=float("nan")), {"enable_threshold_matching": False}
        )
        is None
    )
    assert anomalib_calibration(buffers(image_min=float("nan"))) is None  # never validated
    assert anomalib_calibration(buffers(), {"enable_normalization": False}) is None
    assert anomalib_calibration({}) is None
    shifted = anomalib_calibration(buffers(), {"pixel_sensitivity": 0.75})
    assert shifted is not None and shifted.pixel_threshold == pytest.approx(0.4 - 0.25 * 2.0)


def _lightning_ckpt(reference: Reference, tmp_path: Path, **extra: Any) -> Path:
    src = tmp_path / "source.ckpt"
    _save_lightning(src, reference("resnet18", 64), extra)
    return src


def test_missing_key_is_refused(reference: Reference, tmp_path: Path) -> None:
    state = {f"model.{k}": v for k, v in reference("resnet18", 64).state_dict().items()}
    del state["model.decoder.layer3.0.bn1.weight"]
    with pytest.raises(
        CheckpointError, match=r"missing 1 \(e\.g\. decoder\.layer3\.0\.bn1\.weight"
    ):
        convert_anomalib_state_dict(state)
    src = tmp_path / "broken.ckpt"
    torch.save({"state_dict": state}, src)
    with pytest.raises(CheckpointError, match="do not fit a resnet18"):
        import_anomalib(src, tmp_path / "out.safetensors", image_size=64)
    assert not (tmp_path / "out.safetensors").exists()


def test_misshaped_and_unsupported_weights(reference: Reference) -> None:
    state = dict(reference("resnet18", 64).state_dict())
    bad = dict(state, **{"decoder.layer1.0.conv1.weight": torch.zeros(3, 3, 2, 2)})
    with pytest.raises(CheckpointError, match="mis-shaped 1"):
        convert_anomalib_state_dict(bad)
    extra = dict(state, **{"decoder.layer4.0.conv1.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="unexpected 1"):
        convert_anomalib_state_dict(extra)
    # Three blocks in layer1 of a BasicBlock ResNet is neither resnet18 nor resnet34.
    odd = dict(state, **{"encoder.feature_extractor.layer1.2.conv1.weight": torch.zeros(1)})
    with pytest.raises(
        CheckpointError, match=r"unsupported encoder: BasicBlock ResNet with \(3, 2, 2\)"
    ):
        convert_anomalib_state_dict(odd)
    with pytest.raises(CheckpointError, match="no encoder weights"):
        convert_anomalib_state_dict({"some.other.weight": torch.zeros(1)})
    with pytest.raises(ConfigError, match="not a multiple of 32"):
        convert_anomalib_state_dict(state, image_size=100)


@pytest.mark.parametrize(
    "content",
    [b"", b"definitely not a checkpoint" * 10, b"PK\x03\x04" + bytes(range(256)) * 4],
    ids=["empty", "text", "broken-zip"],
)
def test_garbage_file_is_refused(tmp_path: Path, content: bytes) -> None:
    src = tmp_path / "garbage.ckpt"
    src.write_bytes(content)
    with pytest.raises(CheckpointError):
        import_anomalib(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_missing_or_non_dict_source(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        import_anomalib(tmp_path / "absent.ckpt", tmp_path / "out.safetensors")
    src = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), src)
    with pytest.raises(CheckpointError, match="holds a Tensor"):
        import_anomalib(src, tmp_path / "out.safetensors")


def test_pickled_code_is_refused(reference: Reference, tmp_path: Path) -> None:
    import argparse

    # Old Lightning checkpoints often pickled an argparse Namespace of hyper-parameters.
    hparams = {"backbone": "resnet18", "args": argparse.Namespace(lr=0.005)}
    src = _lightning_ckpt(reference, tmp_path, hyper_parameters=hparams)
    with pytest.raises(CheckpointError, match=r"needs code to unpickle \(argparse\.Namespace\)"):
        import_anomalib(src, tmp_path / "out.safetensors", image_size=64)


def test_default_and_hparam_sizes(reference: Reference, tmp_path: Path) -> None:
    src = tmp_path / "bare.pt"
    torch.save(reference("resnet18", 64).state_dict(), src)
    result = import_anomalib(src, tmp_path / "a.safetensors")
    assert result.meta.model.image_size == (256, 256)
    assert result.meta.training["image_size_from"] == "default"
    # anomalib 1.x kept input_size among the hyper-parameters.
    src = _lightning_ckpt(reference, tmp_path, hyper_parameters={"input_size": [96, 128]})
    result = import_anomalib(src, tmp_path / "b.safetensors")
    assert result.meta.model.image_size == (96, 128)
    assert result.meta.training["image_size_from"] == "hyper_parameters"
    with pytest.raises(ConfigError, match="multiple of 32"):
        import_anomalib(src, tmp_path / "c.safetensors", image_size=200)


def test_inconsistent_hyper_parameters(reference: Reference, tmp_path: Path) -> None:
    src = _lightning_ckpt(reference, tmp_path, hyper_parameters={"backbone": "resnet50"})
    with pytest.raises(CheckpointError, match="hyper_parameters say backbone 'resnet50'"):
        import_anomalib(src, tmp_path / "a.safetensors", image_size=64)
    src = _lightning_ckpt(reference, tmp_path, hyper_parameters={"layers": ["layer2", "layer3"]})
    with pytest.raises(CheckpointError, match="only layer1-3"):
        import_anomalib(src, tmp_path / "b.safetensors", image_size=64)


def test_preprocessing_we_cannot_reproduce(reference: Reference, tmp_path: Path) -> None:
    transform = {
        "class_path": "torchvision.transforms.v2.Compose",
        "init_args": {
            "transforms": [
                {"class_path": "torchvision.transforms.v2.Resize", "init_args": {"size": [96, 96]}},
                {
                    "class_path": "torchvision.transforms.v2.CenterCrop",
                    "init_args": {"size": [64, 64]},
                },
                {
                    "class_path": "torchvision.transforms.v2.Normalize",
                    "init_args": {"mean": [0.5] * 3, "std": [0.5] * 3},
                },
            ]
        },
    }
    src = _lightning_ckpt(
        reference, tmp_path, anomalib_pre_processor_config={"transform": transform}
    )
    with pytest.raises(CheckpointError, match=r"CenterCrop.*non-ImageNet|CenterCrop.*Normalize"):
        import_anomalib(src, tmp_path / "a.safetensors")
    result = import_anomalib(
        src, tmp_path / "b.safetensors", strict_preprocessing=False, image_size=64
    )
    assert len(result.meta.training["preprocessing_mismatches"]) == 2
    assert result.meta.preprocessing.mean == (0.5, 0.5, 0.5)
    assert result.meta.model.image_size == (64, 64)
