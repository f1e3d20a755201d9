"""``inspector bench``: throughput and latency of the model stage and of the whole daemon.

Two modes (see :class:`BenchOptions`): ``model`` times ``ModelWorker.score`` (the daemon's
call) on decoded frames (optionally side by side with anomalib's model, same weights and
inputs; with ``compare``, beside anomalib's exported graphs and our own exports: see
:mod:`inspector.tools.benchmark.peers`), ``e2e`` drives the real daemon over a real broker.
Both return one JSON-ready dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from inspector.model.device import resolve_device
from inspector.tools.benchmark.options import BenchOptions


def run_benchmark(options: BenchOptions, command: Sequence[str] = ()) -> dict[str, Any]:
    """Run one benchmark.

    Args:
        options: What to measure.
        command: The command line to record in the result.

    Returns:
        The result object: ``images_per_s``, ``p50_ms``/``p95_ms``/``p99_ms``,
        ``peak_rss_mb``, ``peak_gpu_mb``, ``gflop_per_image``, the machine and the switches;
        model mode with ``compare_anomalib`` adds ``anomalib_images_per_s``, ``speedup`` and
        ``max_abs_diff``; with ``compare`` a ``paths`` table (per path: median and p95 batch
        time, images/s, accuracy against its family's fp32 reference), ``ratios`` and
        ``references``; e2e mode adds ``model_only_images_per_s``, ``e2e_ratio`` and the
        latencies named: ``daemon_p50_ms`` etc. (the daemon's own, as ``p50_ms``) and
        ``capture_to_verdict_p50_ms`` etc. (what a line sees).

    Raises:
        ConfigError: Invalid options, no CUDA for ``cuda``, anomalib missing for the comparison.
        BackendUnavailableError: ``compare`` needs OpenVINO, onnxruntime or NNCF, missing.
        InspectorError: The run failed (broker, daemon, missing results).
    """
    options.validate()
    device = resolve_device(options.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if options.mode == "e2e":
        from inspector.tools.benchmark.e2e import run_e2e

        return run_e2e(options, device, command)
    if options.compare:
        from inspector.tools.benchmark.peers import run_peers

        return run_peers(options, device, command)
    from inspector.tools.benchmark.model import run_model

    return run_model(options, device, command)


__all__ = ["BenchOptions", "run_benchmark"]
