"""Reverse Distillation model: shapes, parameter counts, freezing, maps, loss.

Reference numbers come from anomalib 2.7.0 (whose module layout ours mirrors, minus the dead
OCBE conv4/bn4). anomalib is a dev dependency; tests that compare against it are skipped
without it.
"""

from __future__ import annotations

import math
import warnings
from types import ModuleType

import pytest
import torch
from pydantic import ValidationError

from inspector.errors import ConfigError, InputSizeError
from inspector.model import AnomalyMapGenerator, ReverseDistillation, cosine_loss
from inspector.model.anomaly_map import GaussianBlur, gaussian_kernel_size
from inspector.model.config import AnomalyMapMode, ArchitectureConfig

BACKBONE_NAMES = ["resnet18", "resnet34", "resnet50", "wide_resnet50_2"]

# (encoder, OCBE, decoder) parameter counts with anomalib's OCBE width (conv4/bn4 excluded).
PARAMS = {
    "resnet18": (2_782_784, 11_680_000, 3_703_168),
    "resnet34": (8_170_304, 11_680_000, 5_770_624),
    "resnet50": (8_543_296, 30_829_568, 15_821_824),
    "wide_resnet50_2": (24_862_528, 30_829_568, 24_917_504),
}
OFFICIAL_WRN50_OCBE = 58_885_120  # RD4AD: width per group 128


@pytest.fixture(scope="module")
def anomalib() -> ModuleType:
    # Importing anomalib emits two FutureWarnings from its dependencies (timm's renamed
    # timm.models.layers, anomalib's own deprecated dinov2 package); they are not ours and
    # would fail the suite under filterwarnings=error, so only these two are silenced.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Importing from timm.models.layers", FutureWarning)
        warnings.filterwarnings("ignore", "The anomalib.models.components.dinov2", FutureWarning)
        return pytest.importorskip("anomalib.models.image.reverse_distillation.torch_model")


def _count(module: torch.nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if not n.startswith(skip))


def _meta_model(backbone: str, size: int = 256, **kwargs: object) -> ReverseDistillation:
    # Meta tensors carry shapes only: building and running even wide_resnet50_2 at 256 px
    # costs milliseconds.
    with torch.device("meta"):
        return ReverseDistillation(
            ArchitectureConfig.model_validate({"backbone": backbone, "image_size": size, **kwargs})
        ).eval()


@pytest.fixture(scope="module")
def rd18() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=(64, 64))).eval()


def _expected_shapes(backbone: str, n: int, h: int, w: int) -> list[tuple[int, ...]]:
    c1 = 64 if backbone in {"resnet18", "resnet34"} else 256
    return [(n, c1 * 2**k, h // 2 ** (k + 2), w // 2 ** (k + 2)) for k in range(3)]


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_shapes_at_64px(backbone: str) -> None:
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone=backbone, image_size=(64, 64))).eval()
    with torch.no_grad():
        pair = model.features(torch.randn(2, 3, 64, 64))
        embedding = model.bottleneck(pair.encoder)
        out = model(torch.randn(2, 3, 64, 64))
    expected = _expected_shapes(backbone, 2, 64, 64)
    assert [tuple(f.shape) for f in pair.encoder] == expected
    assert [tuple(f.shape) for f in pair.decoder] == expected
    assert tuple(embedding.shape) == (2, 2 * expected[2][1], 2, 2)
    assert tuple(out.anomaly_map.shape) == (2, 1, 64, 64)
    assert tuple(out.pred_score.shape) == (2,)
    assert out.anomaly_map.dtype == torch.float32


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize("size", [(256, 256), (224, 320)])
def test_shapes_at_full_size(backbone: str, size: tuple[int, int]) -> None:
    model = _meta_model(backbone, size=size)  # type: ignore[arg-type]
    h, w = size
    pair = model.features(torch.empty(1, 3, h, w, device="meta"))
    expected = _expected_shapes(backbone, 1, h, w)
    assert [tuple(f.shape) for f in pair.encoder] == expected
    assert [tuple(f.shape) for f in pair.decoder] == expected
    assert tuple(model.bottleneck(pair.encoder).shape) == (1, 2 * expected[2][1], h // 32, w // 32)
    assert tuple(model(torch.empty(1, 3, h, w, device="meta")).anomaly_map.shape) == (1, 1, h, w)


def test_reference_shapes_wide_resnet50_2_at_256() -> None:
    # The table in the project's reference notes.
    model = _meta_model("wide_resnet50_2")
    pair = model.features(torch.empty(1, 3, 256, 256, device="meta"))
    assert [tuple(f.shape[1:]) for f in pair.encoder] == [
        (256, 64, 64),
        (512, 32, 32),
        (1024, 16, 16),
    ]
    assert tuple(model.bottleneck(pair.encoder).shape[1:]) == (2048, 8, 8)
    assert [len(stage) for stage in (model.decoder.layer1, model.decoder.layer2)] == [3, 4]
    assert len(model.decoder.layer3) == 6


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_parameter_counts(backbone: str) -> None:
    model = _meta_model(backbone)
    counts = (_count(model.encoder), _count(model.bottleneck), _count(model.decoder))
    assert counts == PARAMS[backbone]
    assert not any(n.startswith(("conv4", "bn4")) for n, _ in model.bottleneck.named_parameters())


def test_official_ocbe_width() -> None:
    assert _count(_meta_model("wide_resnet50_2", ocbe_width="official").bottleneck) == (
        OFFICIAL_WRN50_OCBE
    )
    assert _count(_meta_model("wide_resnet50_2", ocbe_width=128).bottleneck) == (
        OFFICIAL_WRN50_OCBE
    )
    # resnet50's "official" width is the standard 64.
    assert _count(_meta_model("resnet50", ocbe_width="official").bottleneck) == 30_829_568


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
def test_parameter_counts_match_anomalib(anomalib: ModuleType, backbone: str) -> None:
    with torch.device("meta"):
        ref = anomalib.ReverseDistillationModel(
            backbone=backbone,
            input_size=(256, 256),
            layers=["layer1", "layer2", "layer3"],
            anomaly_map_mode="add",
            pre_trained=False,
        )
    ours = _meta_model(backbone)
    assert _count(ref.encoder) == _count(ours.encoder)
    assert _count(ref.bottleneck, skip=("conv4", "bn4")) == _count(ours.bottleneck)
    assert _count(ref.decoder) == _count(ours.decoder)


def test_encoder_is_frozen() -> None:
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=(64, 64)))
    model.train()
    assert not model.encoder.training
    assert all(not m.training for m in model.encoder.modules())
    assert model.bottleneck.training and model.decoder.training
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.trainable_parameters())


def test_training_step_leaves_encoder_untouched() -> None:
    torch.manual_seed(0)
    model = ReverseDistillation(
        ArchitectureConfig(backbone="resnet18", image_size=(64, 64))
    ).train()
    encoder_before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    decoder_before = {k: v.clone() for k, v in model.decoder.state_dict().items()}
    optimiser = torch.optim.Adam(model.trainable_parameters(), lr=1e-3)
    pair = model.features(torch.randn(2, 3, 64, 64))
    assert not any(f.requires_grad for f in pair.encoder)
    loss = cosine_loss(pair.encoder, pair.decoder)
    loss.backward()
    optimiser.step()
    for key, value in model.encoder.state_dict().items():
        assert torch.equal(value, encoder_before[key]), key
    assert all(p.grad is None for p in model.encoder.parameters())
    # The step did train something: decoder weights and BN statistics moved.
    changed = [
        k for k, v in model.decoder.state_dict().items() if not torch.equal(v, decoder_before[k])
    ]
    assert any(k.endswith("running_mean") for k in changed)
    assert any(k.endswith("conv1.weight") for k in changed)


def test_trainable_parameters_exclude_encoder(rd18: ReverseDistillation) -> None:
    trainable = {id(p) for p in rd18.trainable_parameters()}
    expected = {id(p) for p in [*rd18.bottleneck.parameters(), *rd18.decoder.parameters()]}
    assert trainable == expected
    assert trainable.isdisjoint(id(p) for p in rd18.encoder.parameters())
    assert len(rd18.trainable_parameters()) == len(trainable)  # no duplicates


def _features_with_cosines(cosines: list[float], n: int = 2) -> tuple[list[torch.Tensor], ...]:
    # Two-channel vectors at angle theta: encoder (1, 0), decoder (cos t, sin t), so every
    # pixel of layer k has distance exactly 1 - cosines[k].
    encoder, decoder = [], []
    for k, c in enumerate(cosines):
        h = 16 // 2**k
        enc = torch.zeros(n, 2, h, h)
        enc[:, 0] = 1.0
        dec = torch.zeros(n, 2, h, h)
        dec[:, 0], dec[:, 1] = c, math.sqrt(1 - c * c)
        encoder.append(enc)
        decoder.append(dec)
    return encoder, decoder


@pytest.mark.parametrize("mode", list(AnomalyMapMode))
def test_add_and_multiply_semantics(mode: AnomalyMapMode) -> None:
    cosines = [0.9, 0.5, 0.2]
    distances = [1 - c for c in cosines]
    expected = sum(distances) if mode is AnomalyMapMode.ADD else math.prod(distances)
    maps = AnomalyMapGenerator((64, 64), mode, 4.0)(*_features_with_cosines(cosines))
    assert maps.shape == (2, 1, 64, 64)
    # A constant map stays constant under a normalised blur with reflect padding.
    torch.testing.assert_close(maps, torch.full_like(maps, expected), rtol=0, atol=1e-6)


def test_gaussian_blur_matches_anomalib(anomalib: ModuleType) -> None:
    from anomalib.models.components import GaussianBlur2d

    assert gaussian_kernel_size(4.0) == 33
    torch.manual_seed(0)
    maps = torch.rand(3, 1, 64, 48, dtype=torch.float64) * 3
    ref = GaussianBlur2d(sigma=(4.0, 4.0), kernel_size=(33, 33), border_type="reflect")
    ours = GaussianBlur(4.0)
    # Same kernel and padding: in float64 the two agree to ~1e-8.
    torch.testing.assert_close(ours(maps), ref.double()(maps), rtol=0, atol=1e-6)
    # In float32, anomalib's own 33x33 convolution is ~4e-6 off the exact result on maps of
    # this magnitude (the separable one ~6e-7), so 1e-6 would test rounding, not the blur.
    torch.testing.assert_close(ours(maps.float()), ref.float()(maps.float()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", list(AnomalyMapMode))
def test_anomaly_map_matches_anomalib(anomalib: ModuleType, mode: AnomalyMapMode) -> None:
    from anomalib.models.image.reverse_distillation.anomaly_map import (
        AnomalyMapGenerator as RefGenerator,
    )

    torch.manual_seed(0)
    encoder = [torch.randn(2, 8 * 2**k, 16 // 2**k, 16 // 2**k) for k in range(3)]
    decoder = [f + 0.7 * torch.randn_like(f) for f in encoder]
    ref = RefGenerator(image_size=(64, 64), sigma=4, mode=mode.value)(encoder, decoder)
    ours = AnomalyMapGenerator((64, 64), mode, 4.0)(encoder, decoder)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5)


def test_image_size_must_be_multiple_of_32() -> None:
    with pytest.raises(ValidationError, match=r"100x100 is not a multiple of 32.*e\.g\. 96x96"):
        ArchitectureConfig(backbone="resnet18", image_size=(100, 100))
    with pytest.raises(ValidationError, match="multiple of 32"):
        ArchitectureConfig.model_validate({"image_size": 250})
    assert ArchitectureConfig.model_validate({"image_size": 96}).image_size == (96, 96)


def test_wrong_input_size_raises(rd18: ReverseDistillation) -> None:
    with pytest.raises(InputSizeError, match=r"96x64 but this model was built for 64x64"):
        rd18(torch.zeros(1, 3, 96, 64))
    with pytest.raises(InputSizeError, match=r"\(N, 3, H, W\)"):
        rd18(torch.zeros(1, 1, 64, 64))
    with pytest.raises(InputSizeError):
        rd18.features(torch.zeros(3, 64, 64))


def test_cosine_loss_matches_anomalib(anomalib: ModuleType, rd18: ReverseDistillation) -> None:
    from anomalib.models.image.reverse_distillation.loss import ReverseDistillationLoss

    torch.manual_seed(1)
    with torch.no_grad():
        pair = rd18.features(torch.randn(3, 3, 64, 64))
    ours = cosine_loss(pair.encoder, pair.decoder)
    # anomalib's loss calls .view(), which needs contiguous tensors.
    ref = ReverseDistillationLoss()(
        [f.contiguous() for f in pair.encoder], [f.contiguous() for f in pair.decoder]
    )
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert 0 < float(ours) < 6


def test_cosine_loss_on_channels_last() -> None:
    torch.manual_seed(2)
    encoder = [torch.randn(2, 16, 8, 8), torch.randn(2, 32, 4, 4)]
    decoder = [torch.randn_like(f) for f in encoder]
    as_cl = [f.to(memory_format=torch.channels_last) for f in encoder + decoder]
    assert not as_cl[0].is_contiguous()
    loss_cl = cosine_loss(as_cl[:2], as_cl[2:])
    torch.testing.assert_close(loss_cl, cosine_loss(encoder, decoder), rtol=1e-6, atol=1e-6)
    # Identical features give zero loss.
    assert float(cosine_loss(encoder, encoder)) == pytest.approx(0.0, abs=1e-6)


def test_image_score_is_map_max(rd18: ReverseDistillation) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        out = rd18(torch.randn(4, 3, 64, 64))
    assert torch.equal(out.pred_score, out.anomaly_map.flatten(1).max(dim=1).values)
    assert len(set(out.pred_score.tolist())) == 4


def test_a_bad_input_is_a_runtime_failure_not_a_configuration_error() -> None:
    # exit 1 (the input was wrong), not 2 (usage or configuration).
    assert not issubclass(InputSizeError, ConfigError)
    assert InputSizeError.exit_code == 1
