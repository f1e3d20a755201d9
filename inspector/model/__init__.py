"""Reverse Distillation in pure torch: no I/O, no metrics."""

from inspector.model.anomaly_map import AnomalyMapGenerator, cosine_loss
from inspector.model.encoder import BACKBONES, Encoder
from inspector.model.preprocess import preprocess
from inspector.model.reverse_distillation import ReverseDistillation

__all__ = [
    "BACKBONES",
    "AnomalyMapGenerator",
    "Encoder",
    "ReverseDistillation",
    "cosine_loss",
    "preprocess",
]
