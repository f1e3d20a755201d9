"""What one ``inspector bench`` run measures, and the synthetic frames it measures on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from pydantic import ValidationError

from inspector.errors import ConfigError
from inspector.model.config import ArchitectureConfig, Backbone
from inspector.model.fastpath import RuntimeOptions
from inspector.tools.synth import add_defect, render_good

#: Distinct frames rendered at most; longer runs cycle through them (rendering thousands of
#: frames would dominate a GPU run, and the model's speed does not depend on the pixels).
DISTINCT_FRAMES = 64
JPEG_QUALITY = 90
#: ``--compare`` groups: anomalib's eager model, both sides' OpenVINO paths, both sides'
#: onnxruntime paths (see :mod:`inspector.tools.benchmark.peers`), and end to end our daemon
#: beside anomalib's OpenVINOInferencer loop (:mod:`inspector.tools.benchmark.e2e_peers`).
COMPARE_GROUPS = ("anomalib", "openvino", "onnxruntime", "anomalib-openvino-inferencer")


@dataclass(frozen=True)
class BenchOptions:
    """One benchmark run (the flags of ``inspector bench``).

    Attributes:
        mode: ``model`` (the worker alone) or ``e2e`` (frames topic -> daemon -> results topic).
        backbone: Encoder architecture.
        image_size: Square model input and frame size in pixels (a multiple of 32).
        batch_size: Frames per inference batch (the daemon's ``batcher.max_batch_size``).
        frames: Frames timed; ``None``: 64 in model mode, 128 in e2e mode.
        device: ``auto``, ``cpu`` or ``cuda``.
        precision: ``fp32``, ``bf16`` or ``auto`` (chosen as the daemon chooses it: each path
            timed on this machine, before and apart from the benchmark's own timings).
        channels_last: NHWC layout for the convolutions.
        compile: ``torch.compile`` the forward pass.
        cuda_graphs: Capture and replay the forward pass (CUDA only).
        warmup: Untimed batches before timing (model mode; the daemon's ``warmup_batches``).
        compare_anomalib: Also run anomalib's model with the same weights (model mode only).
        compare: Groups of peer paths to run beside ours, same weights and inputs (model mode
            only; :data:`COMPARE_GROUPS`): anomalib's eager model, and each side's exports
            (anomalib's by anomalib's own export code) in OpenVINO and onnxruntime.
        bootstrap_servers: e2e: this broker instead of the embedded one.
        decode_device: e2e: where the daemon decodes JPEG frames (``cuda``: nvJPEG).
        rate: e2e: offer the frames at this rate (frames/s) once the daemon is consuming, and
            report produce-to-result latency at that load; ``None``: all frames up front
            (throughput under saturation).
        seed: Seeds the random weights and the synthetic frames.
        timeout_s: e2e: longest wait for every result.
    """

    mode: Literal["model", "e2e"] = "model"
    backbone: Backbone = "wide_resnet50_2"
    image_size: int = 256
    batch_size: int = 8
    frames: int | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = False
    warmup: int = 2
    compare_anomalib: bool = False
    compare: tuple[str, ...] = ()
    bootstrap_servers: str | None = None
    decode_device: Literal["cpu", "cuda"] = "cpu"
    rate: float | None = None
    seed: int = 0
    timeout_s: float = 1800.0

    @property
    def n_frames(self) -> int:
        """Frames asked for (the mode's default when not given)."""
        if self.frames is not None:
            return self.frames
        return 64 if self.mode == "model" else 128

    @property
    def runtime(self) -> RuntimeOptions:
        """The worker's fast-path switches."""
        return RuntimeOptions(
            precision=self.precision,
            channels_last=self.channels_last,
            compile=self.compile,
            cuda_graphs=self.cuda_graphs,
        )

    def model_config(self) -> ArchitectureConfig:
        """The architecture benchmarked.

        Raises:
            ConfigError: The image size is not a multiple of 32.
        """
        try:
            return ArchitectureConfig(
                backbone=self.backbone, image_size=(self.image_size, self.image_size)
            )
        except ValidationError as exc:
            reason = "; ".join(str(e["msg"]) for e in exc.errors())
            raise ConfigError(f"--image-size {self.image_size}: {reason}") from exc

    def argv(self) -> list[str]:
        """The equivalent ``inspector bench`` command with every flag spelled out.

        Recorded in each result, so that a result can be re-run as it is.
        """
        command = ["inspector", "bench", "--mode", self.mode, "--backbone", self.backbone]
        command += ["--image-size", str(self.image_size), "--batch-size", str(self.batch_size)]
        command += ["--frames", str(self.n_frames), "--device", self.device]
        command += ["--precision", self.precision, "--warmup", str(self.warmup)]
        command += ["--seed", str(self.seed)]
        command.append("--channels-last" if self.channels_last else "--no-channels-last")
        switches = {
            "--compile": self.compile,
            "--cuda-graphs": self.cuda_graphs,
            "--compare-anomalib": self.compare_anomalib,
        }
        command += [flag for flag, on in switches.items() if on]
        if self.compare:
            command += ["--compare", ",".join(self.compare)]
        if self.decode_device != "cpu":
            command += ["--decode-device", self.decode_device]
        if self.bootstrap_servers:
            command += ["--bootstrap-servers", self.bootstrap_servers]
        if self.rate is not None:
            command += ["--rate", str(self.rate)]
        return command

    def validate(self) -> None:
        """Refuse combinations that cannot be measured.

        Raises:
            ConfigError: A value or combination is invalid (the message names the flag).
        """
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.n_frames < 1:
            raise ConfigError(f"--frames must be at least 1, got {self.n_frames}")
        if self.mode == "e2e" and self.n_frames < 2 * self.batch_size:
            # The rate is a slope over the results' times: it needs several batches.
            raise ConfigError(
                f"--frames {self.n_frames}: e2e mode needs at least twice --batch-size "
                f"({2 * self.batch_size})"
            )
        if self.warmup < 0:
            raise ConfigError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.precision not in ("fp32", "bf16", "auto"):
            # The CLI offers model.precision's choices, int8 among them.
            raise ConfigError(
                f"--precision {self.precision}: the benchmark's random weights have no int8 "
                "record (inspector quantize); use fp32, bf16 or auto, or --compare openvino "
                "for the int8 paths"
            )
        if self.compare_anomalib and self.mode != "model":
            raise ConfigError("--compare-anomalib works in --mode model only")
        unknown = [group for group in self.compare if group not in COMPARE_GROUPS]
        if unknown or (self.compare and len(set(self.compare)) != len(self.compare)):
            raise ConfigError(
                f"--compare {','.join(self.compare)}: a comma list of distinct groups among "
                f"{', '.join(COMPARE_GROUPS)}"
            )
        if self.compare and self.mode != "model":
            raise ConfigError("--compare works in --mode model only")
        if self.compare and self.compare_anomalib:
            raise ConfigError("--compare-anomalib is --compare anomalib's older form: give one")
        if self.bootstrap_servers is not None and self.mode != "e2e":
            raise ConfigError("--bootstrap-servers works in --mode e2e only")
        if self.rate is not None and (self.mode != "e2e" or self.rate <= 0):
            raise ConfigError(f"--rate {self.rate:g}: a positive rate, in --mode e2e only")
        if self.decode_device != "cpu" and self.mode != "e2e":
            # Model mode decodes once, before timing: the decoder is not part of it.
            raise ConfigError("--decode-device works in --mode e2e only")
        self.model_config()


def synthetic_jpegs(n: int, size: int, seed: int) -> list[bytes]:
    """``n`` JPEG-encoded synthetic metal surfaces, every fourth with a scratch.

    At most :data:`DISTINCT_FRAMES` are rendered; the list cycles through them.
    """
    rng = np.random.default_rng(seed)
    distinct = []
    for i in range(min(n, DISTINCT_FRAMES)):
        image = render_good(rng, size, "metal")
        if i % 4 == 0:
            image, _ = add_defect(rng, image, "scratch")
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
            raise RuntimeError("JPEG encoding of a synthetic frame failed")
        distinct.append(encoded.tobytes())
    return [distinct[i % len(distinct)] for i in range(n)]


def decode_jpegs(jpegs: list[bytes]) -> list[np.ndarray]:
    """Decode each distinct payload once (BGR uint8); repeats share the decoded array."""
    decoded: dict[bytes, np.ndarray] = {}
    out = []
    for payload in jpegs:
        if payload not in decoded:
            image = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
            if image is None:  # pragma: no cover - the payloads are our own JPEGs
                raise RuntimeError("a synthetic JPEG frame did not decode")
            decoded[payload] = image
        out.append(decoded[payload])
    return out


def full_batches(
    images: list[np.ndarray], n_frames: int, batch_size: int
) -> list[list[np.ndarray]]:
    """``ceil(n_frames / batch_size)`` full batches, cycling through ``images``.

    Every timed batch has the same shape, so no shape is first seen (compiled, captured, or
    tuned) inside the timed loop.
    """
    n_batches = -(-n_frames // batch_size)
    return [
        [images[(b * batch_size + j) % len(images)] for j in range(batch_size)]
        for b in range(n_batches)
    ]
