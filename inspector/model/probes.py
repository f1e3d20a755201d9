"""Probe sets: a few good images and the fp32 model's scores on them, to check a served model.

A checkpoint (and every export of it) carries a probe set: a few small good images from the
data it was trained or calibrated on, stored as uint8 tensors at the model's input size, and
what the fp32 PyTorch model computed on them (image score, map maximum and mean). Whenever the
daemon loads a model it scores the probes with the model as it serves (backend, precision,
device) and refuses it when a value moved further than :data:`TOLERANCES` allows for that
backend and precision: an export, a quantization or a runtime that silently changed the maps is
caught before it judges a part.

Pure torch (and pydantic for the record): the checkpoint, the export and the daemon import it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from inspector.model.engine import Backend
from inspector.model.preprocess import Preprocessing, normalise
from inspector.model.records import InferenceBatch
from inspector.model.reverse_distillation import ReverseDistillation

#: Probe images per set. 4 uint8 RGB images cost 4 * 3 * H * W bytes: 196 KB at 128 px,
#: 786 KB at 256 px, against 50-270 MB of weights; scoring them is one small batch.
PROBE_COUNT = 4
Quantity = Literal["score", "map_max", "map_mean"]
#: The values recorded per probe image, in the order messages name them.
QUANTITIES: tuple[Quantity, ...] = ("score", "map_max", "map_mean")


class ProbeValues(BaseModel):
    """What a model computed on one probe image (raw, un-normalised values).

    Attributes:
        score: The raw image score (the map's maximum after the model's blur).
        map_max: The anomaly map's maximum.
        map_mean: The anomaly map's mean.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    score: float
    map_max: float
    map_mean: float


class ProbeSet(BaseModel):
    """The record of a probe set, in a checkpoint's (and an export's) metadata.

    The images themselves are a uint8 tensor ``(n, 3, H, W)`` beside it (the checkpoint's
    ``probes.images``, an export's ``probes.safetensors``); :attr:`images_sha256` ties the two.

    Attributes:
        source: When it was recorded: ``training`` or ``calibration``.
        images_sha256: SHA-256 of the images' bytes (:func:`images_digest`).
        recorded_with: What computed :attr:`values` (the fp32 PyTorch model on the CPU).
        values: Per probe image, in the images' order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["training", "calibration"]
    images_sha256: str
    recorded_with: str = "torch fp32 cpu"
    values: tuple[ProbeValues, ...] = Field(min_length=1)


@dataclass(frozen=True)
class Tolerance:
    """How far a served model's probe value may be from the recorded fp32 one.

    A value passes when ``|measured - recorded| <= absolute + relative * |recorded|``.

    Attributes:
        absolute: In raw-score units (a map value of the sum of three ``1 - cos`` terms).
        relative: Share of the recorded value.
    """

    absolute: float
    relative: float

    def allowed(self, recorded: float) -> float:
        """The largest difference accepted from ``recorded``."""
        return self.absolute + self.relative * abs(recorded)


#: Per (backend, precision) served. Chosen from measurements made for this table on a 2-core
#: x86 CPU: the CI-sized model (resnet18, 128 px, random-init encoder, 6 epochs on the
#: synthetic metal line) and random-init resnet18 / wide_resnet50_2 models, 4 probe images
#: each. Largest differences from the recorded fp32 values seen:
#:
#: - fp32: torch on the CPU at batch 4 or 1, onnxruntime and OpenVINO exports: <= 2.4e-7
#:   absolute, 4e-7 relative (float rounding);
#: - bf16 (torch CPU autocast): <= 4.1e-3 absolute, 0.43 % relative;
#: - int8 (NNCF, ``export --int8``): onnxruntime 7.1e-3 / 1.1 %, OpenVINO 1.06e-2 / 1.6 %.
#:
#: bf16 and int8 allow about 10x (15-30x at the values measured) what was seen, so an honest
#: model of another backbone never trips them, while a wrong graph, wrong normalisation or
#: broken quantization moves values by tens of percent. fp32 allows far more than rounding:
#: fp32 on a CUDA GPU runs cuDNN's convolutions in TF32 (10-bit mantissa) by default, which
#: could not be measured here; 1e-3 + 0.5 % covers that and still catches any real change.
TOLERANCES: dict[tuple[Backend, str], Tolerance] = {
    ("torch", "fp32"): Tolerance(absolute=1e-3, relative=5e-3),
    ("openvino", "fp32"): Tolerance(absolute=1e-3, relative=5e-3),
    ("onnxruntime", "fp32"): Tolerance(absolute=1e-3, relative=5e-3),
    ("torch", "bf16"): Tolerance(absolute=0.01, relative=0.03),
    ("openvino", "int8"): Tolerance(absolute=0.02, relative=0.15),
    ("onnxruntime", "int8"): Tolerance(absolute=0.02, relative=0.15),
}


def tolerance_for(backend: Backend, precision: str) -> Tolerance:
    """The tolerance of a model served by ``backend`` in ``precision`` (:data:`TOLERANCES`).

    A combination the table does not list (a new precision) gets the loosest entry's.
    """
    found = TOLERANCES.get((backend, precision))
    if found is not None:
        return found
    return max(TOLERANCES.values(), key=lambda t: (t.relative, t.absolute))


def pick_probe_images(images: torch.Tensor, count: int = PROBE_COUNT) -> torch.Tensor:
    """``count`` images spread evenly over ``images``, as uint8 (deterministic: no sampling).

    Args:
        images: Good images at the model's input size, uint8 ``(N, 3, H, W)`` or float RGB in
            0..1 ``(N, 3, H, W)``; ``N >= 1``.
        count: How many (fewer when ``N`` is smaller).

    Returns:
        uint8 ``(min(count, N), 3, H, W)`` on the CPU, contiguous.
    """
    n = len(images)
    index = torch.tensor(sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(count)}))
    index = index[index < n]
    picked = images[index].detach().cpu()
    if picked.dtype != torch.uint8:
        picked = (picked.float() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return picked.contiguous()


def images_digest(images: torch.Tensor) -> str:
    """SHA-256 of uint8 images ``(n, 3, H, W)``: their shape and bytes."""
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def fingerprint(batch: InferenceBatch) -> tuple[ProbeValues, ...]:
    """Each image's score, map maximum and map mean.

    Args:
        batch: Maps ``(n, 1, H, W)`` and scores ``(n,)``, any float dtype and device.
    """
    maps = batch.anomaly_map.detach().float().cpu().flatten(1)
    scores = batch.pred_score.detach().float().cpu()
    return tuple(
        ProbeValues(score=float(s), map_max=float(m.max()), map_mean=float(m.mean()))
        for s, m in zip(scores, maps, strict=True)
    )


def record_probes(
    model: ReverseDistillation,
    images: torch.Tensor,
    preprocessing: Preprocessing,
    source: Literal["training", "calibration"],
) -> ProbeSet:
    """Score ``images`` with ``model`` in fp32 on the CPU: the reference every load compares to.

    The CPU, whatever device trained the model: fp32 there is the same arithmetic on any x86
    machine, where a GPU's convolutions run TF32 by default.

    Args:
        model: The model, on the CPU (eval mode is set here).
        images: uint8 RGB ``(n, 3, H, W)`` at the model's input size
            (:func:`pick_probe_images`).
        preprocessing: The checkpoint's normalisation.
        source: ``training`` or ``calibration``.

    Raises:
        ValueError: The images are not uint8 at the model's input size, or the model is not
            on the CPU.
    """
    size = tuple(model.config.image_size)
    if images.dtype != torch.uint8 or images.dim() != 4 or tuple(images.shape[1:]) != (3, *size):
        raise ValueError(f"probe images must be uint8 (n, 3, {size[0]}, {size[1]})")
    if any(p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("record_probes needs the model on the CPU (fp32 reference)")
    model.eval()
    with torch.inference_mode():
        out = model(normalise(images.float() / 255.0, preprocessing))
    return ProbeSet(source=source, images_sha256=images_digest(images), values=fingerprint(out))


@dataclass(frozen=True)
class Deviation:
    """The probe value furthest out of (or nearest to) its tolerance.

    Attributes:
        probe: Index of the probe image.
        quantity: ``score``, ``map_max`` or ``map_mean``.
        recorded: The fp32 value stored with the model.
        measured: What the served model computed.
        difference: ``|measured - recorded|`` (``inf`` for a non-finite measurement).
        allowed: The tolerance for this value.
    """

    probe: int
    quantity: Quantity
    recorded: float
    measured: float
    difference: float
    allowed: float

    @property
    def passed(self) -> bool:
        """Whether the difference is within the tolerance."""
        return self.difference <= self.allowed

    def describe(self) -> str:
        """``probe 2 map_mean: recorded 0.1234, measured 0.2345, difference ... > ...``."""
        verdict = "within" if self.passed else "exceeds"
        return (
            f"probe {self.probe} {self.quantity}: recorded {self.recorded:.6g}, measured "
            f"{self.measured:.6g}, difference {self.difference:.3g} {verdict} the tolerance "
            f"{self.allowed:.3g}"
        )


def compare(
    recorded: ProbeSet, measured: tuple[ProbeValues, ...], tolerance: Tolerance
) -> Deviation:
    """The worst value: the largest ``difference / allowed`` over every probe and quantity.

    Args:
        recorded: The probe set stored with the model.
        measured: :func:`fingerprint` of the served model on the same images, same order.
        tolerance: :func:`tolerance_for` the served backend and precision.

    Raises:
        ValueError: ``measured`` has another number of probes than ``recorded``.
    """
    if len(measured) != len(recorded.values):
        raise ValueError(f"{len(measured)} probe values measured, {len(recorded.values)} recorded")
    worst: Deviation | None = None
    worst_ratio = -1.0
    for i, (was, now) in enumerate(zip(recorded.values, measured, strict=True)):
        for quantity in QUANTITIES:
            old, new = getattr(was, quantity), getattr(now, quantity)
            diff = abs(new - old) if math.isfinite(new) else math.inf
            allowed = tolerance.allowed(old)
            ratio = diff / allowed if allowed > 0 else math.inf
            if ratio > worst_ratio:
                worst_ratio = ratio
                worst = Deviation(i, quantity, old, new, diff, allowed)
    assert worst is not None  # values has min_length 1
    return worst
