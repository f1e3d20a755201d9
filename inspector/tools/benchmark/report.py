"""Fields every benchmark result carries: the machine, the switches, memory and FLOPs."""

from __future__ import annotations

import math
import platform
import resource
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from inspector.model import ReverseDistillation
from inspector.tools.benchmark.options import BenchOptions


def device_name(device: torch.device) -> str:
    """GPU name on CUDA; the CPU model from ``/proc/cpuinfo`` (or ``platform``) otherwise."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (``ru_maxrss`` is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mb(device: torch.device) -> float | None:
    """Peak memory the caching allocator handed out on ``device``, MiB; ``None`` on CPU."""
    if device.type != "cuda":
        return None
    return float(torch.cuda.max_memory_allocated(device)) / 2**20


def gflop_per_image(model: ReverseDistillation, device: torch.device) -> float:
    """Forward-pass GFLOP for one image, as ``torch.utils.flop_counter`` counts them.

    A multiply-add counts as 2 FLOPs; only the operators the counter knows (convolutions,
    matrix products) are counted, which is where nearly all of the work is.
    """
    h, w = model.config.image_size
    image = torch.zeros(1, 3, h, w, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(image)
    return float(counter.get_total_flops()) / 1e9


def latency_fields(latencies_ms: Sequence[float], unit: str) -> dict[str, Any]:
    """``p50_ms``/``p95_ms``/``p99_ms`` (linear interpolation) and the unit they refer to."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    p50, p95, p99 = (float(np.percentile(values, q)) for q in (50, 95, 99))
    return {"p50_ms": p50, "p95_ms": p95, "p99_ms": p99, "latency_unit": unit}


def named_latency_fields(name: str, latencies_ms: Sequence[float]) -> dict[str, float | None]:
    """``<name>_p50_ms``/``_p95_ms``/``_p99_ms``: a latency that says which one it is.

    ``None`` each when nothing was measured (e.g. no result carried a capture time).
    """
    if not latencies_ms:
        return {f"{name}_{q}_ms": None for q in ("p50", "p95", "p99")}
    fields = latency_fields(latencies_ms, "frame")
    return {f"{name}_{q}_ms": fields[f"{q}_ms"] for q in ("p50", "p95", "p99")}


def base_fields(
    options: BenchOptions,
    device: torch.device,
    precision: str,
    frames: int,
    command: Sequence[str],
) -> dict[str, Any]:
    """The fields that say what was measured where."""
    return {
        "mode": options.mode,
        "backbone": options.backbone,
        "image_size": options.image_size,
        "batch_size": options.batch_size,
        "frames": frames,
        "warmup_batches": options.warmup,
        "device": device.type,
        "device_name": device_name(device),
        "precision": precision,
        "channels_last": options.channels_last,
        "compile": options.compile,
        "cuda_graphs": options.cuda_graphs and device.type == "cuda",
        "weights": "none",
        "seed": options.seed,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "command": list(command),
    }


def finish(result: Mapping[str, Any], gflop: float, device: torch.device) -> dict[str, Any]:
    """Add FLOP rate and memory peaks, and round floats for reading (NaN becomes ``None``)."""
    out = dict(result)
    out["gflop_per_image"] = gflop
    out["achieved_tflops"] = out["images_per_s"] * gflop / 1000
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_gpu_mb"] = peak_gpu_mb(device)
    return {key: _tidy(value) for key, value in out.items()}


def _tidy(value: Any) -> Any:
    if isinstance(value, list):
        return [_tidy(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        # Enough digits for ratios near 1 and for sub-millisecond latencies.
        return float(f"{value:.4g}") if abs(value) < 1 else round(value, 3)
    return value
