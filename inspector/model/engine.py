"""What runs a model: an inference engine turns a normalised batch into maps and scores.

The fast path (:class:`~inspector.model.fastpath.FastModel`, PyTorch) is one engine; exported
graphs run by OpenVINO or onnxruntime (``inspector.backends``) are others. The daemon's worker,
prediction and evaluation take any of them.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import nn

from inspector.model.records import InferenceBatch
from inspector.model.reverse_distillation import ReverseDistillation

#: Where a model runs: PyTorch's fast path, or an exported graph in another runtime.
Backend = Literal["torch", "openvino", "onnxruntime"]


class Engine(Protocol):
    """Runs one model on normalised images."""

    @property
    def backend(self) -> Backend:
        """Which runtime."""
        ...

    @property
    def precision(self) -> str:
        """What the arithmetic is done in (``fp32``, ``bf16``, ``int8``)."""
        ...

    @property
    def image_size(self) -> tuple[int, int]:
        """The model's input ``(H, W)``."""
        ...

    @property
    def device(self) -> torch.device:
        """Where inputs must be (exported graphs: the CPU)."""
        ...

    def __call__(self, images: torch.Tensor) -> InferenceBatch:
        """Maps ``(N, 1, H, W)`` and scores ``(N,)``, float32.

        Args:
            images: Normalised images ``(N, 3, H, W)`` float32 on :attr:`device`.
        """
        ...


class ExportGraph(nn.Module):
    """The whole model as one graph for export: images in, maps and scores out, as tensors.

    ``ReverseDistillation.forward`` with its input checks left out (the exported graph's input
    shape states them) and a tuple instead of a named tuple (what ONNX and OpenVINO outputs
    are). The anomaly map, upsampling and blur are part of the graph, so a server that runs it
    gives the maps the daemon gives.

    Args:
        model: The model, in eval mode.
    """

    def __init__(self, model: ReverseDistillation) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` -> maps ``(N, 1, H, W)`` and scores ``(N,)``."""
        encoded = self.model.encoder(images)
        decoded = self.model.decoder(self.model.bottleneck(encoded))
        maps = self.model.anomaly_map(encoded, decoded)
        return maps, torch.amax(maps, dim=(-3, -2, -1))
