"""PT2E static int8 (X86InductorQuantizer): maps close to fp32, int8 kernels really used."""

from __future__ import annotations

import operator
import sys

import pytest
import torch
from torch import nn
from torch._dynamo.utils import counters
from torch.fx.passes.utils.source_matcher_utils import get_source_partitions

from inspector.errors import CalibrationError, ConfigError
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.model.int8 import (
    Parts,
    count_quantized_ops,
    normalise_for_x86_quantizer,
    quantize_int8,
)

pytest.importorskip("torchao")
if not torch.backends.mkldnn.is_available():  # pragma: no cover - oneDNN-less builds
    pytest.skip("int8 kernels need oneDNN", allow_module_level=True)

SIZE = 64
#: Stated tolerances against the fp32 maps (raw 1 - cos maps, here up to ~1.8 with random
#: weights): 8-bit activations and weights move each feature by ~1 %, the maps by less.
INT8_MAX_ABS = 0.03
INT8_MIN_PEARSON = 0.99


def _conv2d_count(*modules: nn.Module) -> int:
    return sum(type(m) is nn.Conv2d for module in modules for m in module.modules())


@pytest.fixture(scope="module")
def model() -> ReverseDistillation:
    torch.manual_seed(0)
    return ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=SIZE)).eval()


@pytest.fixture(scope="module")
def data() -> tuple[list[torch.Tensor], torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(4, 3, SIZE, SIZE, generator=generator) for _ in range(3)]
    return calibration, torch.randn(4, 3, SIZE, SIZE, generator=generator)


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


@pytest.mark.component  # torch.compile runs a C++ compiler
@pytest.mark.parametrize("parts", ["encoder", "all"])
def test_int8_maps_follow_fp32_and_run_int8_kernels(
    model: ReverseDistillation,
    data: tuple[list[torch.Tensor], torch.Tensor],
    parts: Parts,
) -> None:
    calibration, images = data
    with torch.no_grad():
        reference = model(images)
    quantized = quantize_int8(model, calibration, parts=parts)
    counters.clear()
    out = quantized(images)

    assert out.anomaly_map.shape == (4, 1, SIZE, SIZE)
    assert out.anomaly_map.dtype == torch.float32
    assert out.pred_score.shape == (4,)
    diff = (out.anomaly_map - reference.anomaly_map).abs().max().item()
    assert diff < INT8_MAX_ABS
    assert _pearson(out.anomaly_map, reference.anomaly_map) > INT8_MIN_PEARSON
    torch.testing.assert_close(out.pred_score, out.anomaly_map.amax(dim=(1, 2, 3)))

    # Every Conv2d of the quantized parts has int8 weights (transposed convs have no int8 path),
    # and Inductor lowered them to oneDNN int8 convolutions, residual add + ReLU fused in.
    convs = _conv2d_count(model.encoder)
    if parts == "all":
        convs += _conv2d_count(model.bottleneck, model.decoder)
    ops = count_quantized_ops(quantized.quantized)
    assert ops["dequantize_per_channel"] == convs
    assert ops["quantize_per_tensor"] > 0
    lowered = counters["inductor"]
    assert lowered["qconv_weight_prepack_matcher_count"] == convs
    assert lowered["qconv2d_binary_lower_count"] > 0  # conv + add (+ ReLU) blocks

    # The float model is left as it was (batch norms folded into copies only).
    with torch.no_grad():
        torch.testing.assert_close(model(images).anomaly_map, reference.anomaly_map)


def test_normalise_gives_each_relu_and_add_its_own_partition(model: ReverseDistillation) -> None:
    example = torch.randn(2, 3, SIZE, SIZE)
    graph = torch.export.export(model.encoder, (example,)).module()
    assert isinstance(graph, torch.fx.GraphModule)
    before = get_source_partitions(graph.graph, [nn.ReLU])[nn.ReLU]
    # torchvision blocks call one nn.ReLU twice: the quantizer's "more than one output node".
    assert any(len(p.output_nodes) > 1 for p in before)

    assert normalise_for_x86_quantizer(graph) > 0
    targets = {node.target for node in graph.graph.nodes}
    assert torch.ops.aten.relu_.default not in targets
    assert torch.ops.aten.add_.Tensor not in targets
    partitions = get_source_partitions(graph.graph, [nn.ReLU, operator.add])
    assert all(len(p.output_nodes) == 1 for ps in partitions.values() for p in ps)
    assert len(partitions[operator.add]) == 6  # one residual add per BasicBlock of layers 1-3
    with torch.no_grad():
        for got, want in zip(graph(example), model.encoder(example), strict=True):
            torch.testing.assert_close(got, want)


def test_no_calibration_batch_is_refused(model: ReverseDistillation) -> None:
    with pytest.raises(CalibrationError, match="calibration batch"):
        quantize_int8(model, [])


def test_missing_torchao_names_the_install(
    model: ReverseDistillation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "torchao.quantization.pt2e.quantize_pt2e", None)
    with pytest.raises(ConfigError, match="pip install torchao"):
        quantize_int8(model, [torch.zeros(2, 3, SIZE, SIZE)])
