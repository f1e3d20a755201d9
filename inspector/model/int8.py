"""Static int8 quantization for x86 CPUs: PT2E with torchao's ``X86InductorQuantizer``.

:func:`quantize_int8` exports the network with :func:`torch.export.export`, quantizes it with
per-channel int8 weights and static (calibrated, per-tensor) uint8 activations, and compiles
the result with Inductor and ``freezing`` so the quantized convolutions become oneDNN int8
kernels with their batch norm, residual add and ReLU fused in. The anomaly map (``1 - cos``,
upsampling, blur) stays outside the quantized graph and runs in float32, as in
:meth:`ReverseDistillation.forward`.

Why the exported graph is normalised first: the quantizer finds its fusion patterns (conv + add
+ ReLU, conv + ReLU) by *source partitions*, the nodes each module or function call produced.
A non-strict export records no ``source_fn_stack``, so the partitions fall back to the module
each node came from, and torchvision's ResNet blocks call one ``nn.ReLU`` module two or three
times: its partition then has several output nodes and the quantizer stops with ``Input
partition has more than one output node``. The decoder calls ``torch.relu`` and the encoder
adds the identity in place (``out += identity``, ``operator.iadd``), neither of which the
patterns (``nn.ReLU``, ``operator.add``) recognise even in a strict export. Every ReLU and every
residual add therefore gets a partition of its own before annotation, and the in-place forms
become out-of-place ones where nothing else reads the overwritten tensor.

torchao is an optional dependency, imported when :func:`quantize_int8` runs.
"""

from __future__ import annotations

import copy
import importlib
import operator
from collections.abc import Iterable, Iterator
from types import ModuleType
from typing import Literal, cast

import torch
import torch._inductor.config as inductor_config
from torch import fx, nn

from inspector.errors import CalibrationError, ConfigError, InputSizeError
from inspector.model.anomaly_map import AnomalyMapGenerator, max_score
from inspector.model.records import InferenceBatch
from inspector.model.reverse_distillation import ReverseDistillation

#: Which sub-networks run in int8: the frozen encoder alone, or encoder, OCBE and decoder.
Parts = Literal["encoder", "all"]

_aten = torch.ops.aten
#: In-place ops of the exported graph and their out-of-place forms.
_OUT_OF_PLACE = {_aten.relu_.default: _aten.relu.default, _aten.add_.Tensor: _aten.add.Tensor}


def _torchao(name: str) -> ModuleType:
    """Import ``torchao.quantization.pt2e.<name>``, or explain how to install torchao."""
    try:
        return importlib.import_module(f"torchao.quantization.pt2e.{name}")
    except ImportError as exc:
        raise ConfigError(f"int8 quantization needs torchao ({exc}): pip install torchao") from exc


def normalise_for_x86_quantizer(graph_module: fx.GraphModule) -> int:
    """Give every ReLU and residual add a source partition of its own, in place.

    The quantizer's fusion patterns match source partitions of ``nn.ReLU`` and ``operator.add``.
    This rewrites the ``source_fn_stack`` of each ``aten.relu`` and of each ``aten.add`` of two
    tensors to name that node alone with the type the patterns expect, and turns ``relu_`` and
    ``add_`` into ``relu`` and ``add`` when the overwritten tensor has no other reader.

    Args:
        graph_module: An exported graph (``torch.export.export(...).module()``), before
            ``prepare_pt2e``.

    Returns:
        The number of nodes given a partition of their own.
    """
    changed = 0
    for node in graph_module.graph.nodes:
        if node.op != "call_function":
            continue
        out_of_place = _OUT_OF_PLACE.get(node.target)
        overwritten = node.args[0] if node.args else None
        if (
            out_of_place is not None
            and isinstance(overwritten, fx.Node)
            and len(overwritten.users) == 1
        ):
            node.target = out_of_place
        if node.target is _aten.relu.default:
            node.meta["source_fn_stack"] = [(node.name, nn.ReLU)]
            changed += 1
        elif node.target is _aten.add.Tensor and all(
            isinstance(arg, fx.Node) for arg in node.args[:2]
        ):
            node.meta["source_fn_stack"] = [(node.name, operator.add)]
            changed += 1
    graph_module.recompile()
    return changed


class _Features(nn.Module):
    """Encoder, OCBE and decoder as one module returning a flat tuple of six features.

    Args:
        model: The Reverse Distillation model; its sub-modules are shared, not copied.
    """

    def __init__(self, model: ReverseDistillation) -> None:
        super().__init__()
        self.encoder = model.encoder
        self.bottleneck = model.bottleneck
        self.decoder = model.decoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(N, 3, H, W)`` -> encoder layers 1-3, then decoder layers 1-3 (``(N, C_k, h, w)``)."""
        encoded = self.encoder(images)
        decoded = self.decoder(self.bottleneck(encoded))
        return (*encoded, *decoded)


class _EncoderInt8Features(nn.Module):
    """A quantized encoder followed by the float OCBE and decoder.

    Args:
        encoder: The quantized encoder graph: ``(N, 3, H, W)`` -> three features.
        bottleneck: The OCBE.
        decoder: The decoder.
    """

    def __init__(self, encoder: nn.Module, bottleneck: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.bottleneck = bottleneck
        self.decoder = decoder

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(N, 3, H, W)`` -> encoder layers 1-3, then decoder layers 1-3 (``(N, C_k, h, w)``)."""
        encoded = list(self.encoder(images))
        decoded = self.decoder(self.bottleneck(encoded))
        return (*encoded, *decoded)


class Int8Model(nn.Module):
    """A Reverse Distillation model whose convolutions run in int8 (x86 CPUs).

    Built by :func:`quantize_int8`. The first call for each batch shape compiles (tens of
    seconds to minutes for wide_resnet50_2); later calls reuse the compiled code.

    Args:
        features: Compiled ``(N, 3, H, W)`` -> six features (encoder layers 1-3, then decoder).
        anomaly_map: The float model's map generator, run in float32 outside ``features``.
        image_size: The model's input ``(H, W)``.
        bf16: Run ``features`` under bf16 autocast: the ops left in floating point (dequantized
            outputs, transposed convolutions, the float parts) run in bf16.
        parts: What was quantized.
        quantized: The quantized graph, before compilation (for inspection).
    """

    def __init__(
        self,
        features: nn.Module,
        anomaly_map: AnomalyMapGenerator,
        image_size: tuple[int, int],
        *,
        bf16: bool,
        parts: Parts,
        quantized: fx.GraphModule,
    ) -> None:
        super().__init__()
        self.features = features
        self.anomaly_map = anomaly_map
        self.image_size = image_size
        self.bf16 = bf16
        self.parts: Parts = parts
        # Not a sub-module: its parameters are those ``features`` was compiled from.
        self._quantized = [quantized]

    @property
    def quantized(self) -> fx.GraphModule:
        """The quantized graph (``quantize_per_tensor`` / ``dequantize_*`` nodes around convs)."""
        return self._quantized[0]

    def forward(self, images: torch.Tensor) -> InferenceBatch:
        """Anomaly maps and image scores.

        Args:
            images: Normalised images, shape ``(N, 3, H, W)``, float32, on the CPU.

        Returns:
            Raw maps ``(N, 1, H, W)`` and scores ``(N,)``, float32.

        Raises:
            InputSizeError: ``images`` is not ``(N, 3, H, W)`` at the model's size.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise InputSizeError(
                f"expected images of shape (N, 3, H, W), got {tuple(images.shape)}"
            )
        if tuple(images.shape[-2:]) != tuple(self.image_size):
            got = "x".join(map(str, images.shape[-2:]))
            expected = "x".join(map(str, self.image_size))
            raise InputSizeError(f"input is {got} but this model was built for {expected}")
        with torch.no_grad():
            # Freezing is read from the global config when the first call of a shape compiles
            # (``torch.compile(options={"freezing": True})`` is not enough: the weights would
            # stay graph inputs and the int8 weight packing could not be folded).
            with (
                inductor_config.patch(freezing=True),
                torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16),
            ):
                features = self.features(images)
            # Float32 whatever the features are: 1 - cos of nearly equal vectors needs it.
            maps = self.anomaly_map(list(features[:3]), list(features[3:]))
        return InferenceBatch(anomaly_map=maps, pred_score=max_score(maps))


def _quantize_graph(
    module: nn.Module, example: torch.Tensor, calibration: Iterable[torch.Tensor]
) -> fx.GraphModule:
    """Export, annotate, calibrate and convert ``module`` (``(N, 3, H, W)`` -> features).

    Args:
        module: An eval-mode module; deep-copied, so batch-norm folding leaves it untouched.
        example: One input batch, ``(N, 3, H, W)`` with ``N >= 2`` (the batch size stays
            dynamic in the exported graph).
        calibration: Input batches whose activation ranges set the static scales.

    Returns:
        The converted graph with quantize/dequantize nodes, batch norms folded into convs.
    """
    quantize_pt2e = _torchao("quantize_pt2e")
    x86 = _torchao("quantizer.x86_inductor_quantizer")
    batch = torch.export.Dim.DYNAMIC
    exported = torch.export.export(
        copy.deepcopy(module).eval(), (example,), dynamic_shapes=({0: batch},)
    )
    graph = exported.module()
    if not isinstance(graph, fx.GraphModule):  # torch.export's module() is one today
        raise TypeError(f"torch.export gave a {type(graph).__name__}, not a GraphModule")
    normalise_for_x86_quantizer(graph)
    quantizer = x86.X86InductorQuantizer()
    quantizer.set_global(x86.get_default_x86_inductor_quantization_config())
    prepared = cast(fx.GraphModule, quantize_pt2e.prepare_pt2e(graph, quantizer))
    seen = 0
    with torch.no_grad():
        for images in calibration:
            prepared(images)
            seen += 1
    if seen == 0:
        raise CalibrationError("int8 quantization needs at least one calibration batch")
    return cast(fx.GraphModule, quantize_pt2e.convert_pt2e(prepared))


def quantize_int8(
    model: ReverseDistillation,
    calibration: Iterable[torch.Tensor],
    *,
    parts: Parts = "all",
    bf16: bool = False,
    compile_model: bool = True,
) -> Int8Model:
    """Quantize a model to static int8 for x86 CPUs (PT2E + ``X86InductorQuantizer``).

    Weights are int8 per output channel, activations uint8 per tensor with scales calibrated
    on ``calibration``; batch norms are folded into the convolutions. Transposed convolutions
    (the decoder's upsampling) have no int8 kernel in this flow and stay in floating point.
    ``model`` is not modified.

    Args:
        model: A model, in any mode: copies of it are put in eval mode and quantized.
        calibration: Normalised training images ``(N, 3, H, W)``, float32, batch by batch
            (a few hundred images of good parts); iterated once.
        parts: ``encoder``: only the frozen encoder is quantized, the OCBE and decoder stay
            in floating point. ``all``: encoder, OCBE and decoder.
        bf16: Run what stays in floating point under bf16 autocast.
        compile_model: Compile with Inductor and ``freezing`` (where the int8 kernels come
            from); ``False`` runs the quantized graph eagerly, as reference arithmetic.

    Returns:
        The quantized model, returning what :meth:`ReverseDistillation.forward` returns.

    Raises:
        ConfigError: torchao is not installed.
        CalibrationError: ``calibration`` holds no batch.
    """
    _torchao("quantize_pt2e")  # fail early, before any work, when torchao is missing
    batches: Iterator[torch.Tensor] = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise CalibrationError("int8 quantization needs at least one calibration batch")
    # The exported batch size stays symbolic; a batch of one would make export specialise it.
    example = first if first.shape[0] > 1 else first.expand(2, -1, -1, -1)

    def everything() -> Iterator[torch.Tensor]:
        yield first
        yield from batches

    features: nn.Module
    if parts == "encoder":
        quantized = _quantize_graph(model.encoder, example, everything())
        features = _EncoderInt8Features(
            quantized, copy.deepcopy(model.bottleneck).eval(), copy.deepcopy(model.decoder).eval()
        )
    else:
        quantized = _quantize_graph(_Features(model), example, everything())
        features = quantized
    if compile_model:
        # Freezing turns weights into constants: Inductor then packs the int8 weights for
        # oneDNN and folds the dequantize/quantize pairs into the convolutions.
        # Int8Model.forward turns freezing on for the call that compiles.
        compiled = torch.compile(features, dynamic=False)
        features = cast(nn.Module, compiled)
    return Int8Model(
        features,
        copy.deepcopy(model.anomaly_map),
        model.config.image_size,
        bf16=bf16,
        parts=parts,
        quantized=quantized,
    )


def count_quantized_ops(graph: fx.GraphModule) -> dict[str, int]:
    """Count quantize/dequantize nodes of a converted graph, by op name.

    Args:
        graph: :attr:`Int8Model.quantized` or any ``convert_pt2e`` result.

    Returns:
        For example ``{"quantize_per_tensor": 37, "dequantize_per_channel": 32, ...}``.
    """
    counts: dict[str, int] = {}
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        name = str(node.target)
        if name.startswith("quantized_decomposed."):
            op = name.split(".")[1]
            counts[op] = counts.get(op, 0) + 1
    return counts


__all__: list[str] = [
    "Int8Model",
    "Parts",
    "count_quantized_ops",
    "normalise_for_x86_quantizer",
    "quantize_int8",
]
