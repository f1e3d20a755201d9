"""Model-only mode: the daemon's model stage (``ModelWorker.score``) on decoded frames.

Each timed call is the worker's whole job for one batch, as the daemon calls it: uint8 BGR
frames to the device, preprocessing, forward pass, scores and (every frame's) maps back on the
host. With ``--compare-anomalib`` both sides return every map (``ModelWorker.infer``), so that
the maps can be compared. Warm-up batches are run first
and not timed. With ``--compare-anomalib`` anomalib's own model runs the same batches in the
same process, alternating with ours.

``--precision auto`` is chosen as the daemon chooses it (:func:`inspector.backends.auto.choose`:
each path timed on this machine, the maps guarded), once, before anything is timed here: the
timings reported are of the chosen path alone, after its choice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from prometheus_client import CollectorRegistry

from inspector.backends.auto import choose
from inspector.checkpoint import CheckpointMeta, LoadedCheckpoint
from inspector.model import ReverseDistillation
from inspector.model.engine import Engine
from inspector.model.fastpath import FastModel
from inspector.model.preprocess import IMAGENET, Preprocessing
from inspector.runtime.metrics import Metrics
from inspector.runtime.worker import ModelWorker
from inspector.tools.benchmark.options import (
    BenchOptions,
    decode_jpegs,
    full_batches,
    synthetic_jpegs,
)
from inspector.tools.benchmark.report import base_fields, finish, gflop_per_image, latency_fields
from inspector.tools.benchmark.timing import measure_worker, throughput

log = logging.getLogger(__name__)


def random_model(options: BenchOptions, device: torch.device) -> ReverseDistillation:
    """The benchmarked architecture with seeded random weights, built on ``device``.

    Built directly on the device: initialising wide_resnet50_2 on the CPU takes seconds,
    which would be most of a short GPU run. Speed does not depend on the weights.
    """
    torch.manual_seed(options.seed)
    with device:
        return ReverseDistillation(options.model_config())


def serving_engine(
    model: ReverseDistillation, device: torch.device, options: BenchOptions
) -> Engine:
    """The fast path the daemon would serve ``model`` on: ``auto`` measured, as it measures.

    ``auto`` runs :func:`~inspector.backends.auto.choose` on the model (its weights: no
    checkpoint, so no int8 record and nothing cached), which times fp32 and bf16 where this
    device runs bf16 and keeps the fastest whose maps pass the guard.
    """
    if options.precision != "auto":
        return FastModel(model, device, options.runtime, batch_size=options.batch_size)
    name = f"bench-{options.backbone}"
    # Not a file: the digest only names the cache entry, and nothing is cached here.
    loaded = LoadedCheckpoint(
        model, CheckpointMeta(name=name, model=model.config), f"{name}-seed-{options.seed}", Path()
    )
    choice, engine = choose(
        loaded, device, options.runtime, batch_size=options.batch_size, cache_dir=None
    )
    log.info("precision auto: %s (%s)", choice.precision, choice.reason)
    return engine


def make_worker(
    model: ReverseDistillation | Engine,
    device: torch.device,
    options: BenchOptions,
    *,
    preprocessing: Preprocessing = IMAGENET,
) -> ModelWorker:
    """A worker as the daemon builds it, with its own metrics registry.

    Args:
        model: A model (run on :func:`serving_engine`'s path), or an engine already chosen
            (``inspector.backends.load_model``'s).
        device: Where a model runs.
        options: Batch size, warm-up and the fast-path switches.
        preprocessing: The checkpoint's input transform.
    """
    engine = (
        serving_engine(model, device, options) if isinstance(model, ReverseDistillation) else model
    )
    return ModelWorker(
        engine,
        engine.device,
        Metrics(CollectorRegistry()),
        warmup_batches=options.warmup,
        max_batch_size=options.batch_size,
        preprocessing=preprocessing,
    )


def run_model(
    options: BenchOptions, device: torch.device, command: Sequence[str]
) -> dict[str, Any]:
    """Model-only benchmark (with ``compare_anomalib``: side by side with anomalib).

    Returns:
        The result object (see ``inspector bench``).
    """
    images = decode_jpegs(synthetic_jpegs(options.n_frames, options.image_size, options.seed))
    batches = full_batches(images, options.n_frames, options.batch_size)
    frames = len(batches) * options.batch_size
    if frames != options.n_frames:
        log.info("timing %d frames: %d rounded up to whole batches", frames, options.n_frames)
    if options.compare_anomalib:
        from inspector.tools.benchmark.anomalib_ref import build_pair, compare

        ours, reference = build_pair(options, device)
        worker = make_worker(ours, device, options)
        gflop = gflop_per_image(ours, device)
        comparison = compare(worker, reference, batches, options, device)
        seconds = comparison.pop("seconds")
    else:
        model = random_model(options, device)
        worker = make_worker(model, device, options)
        gflop = gflop_per_image(model, device)
        seconds = measure_worker(worker, batches, options.warmup)
        comparison = {}
    result = base_fields(options, device, worker.fast.precision, frames, command)
    result["images_per_s"] = throughput(seconds, options.batch_size)
    result.update(latency_fields([s * 1e3 for s in seconds], "batch"))
    result.update(comparison)
    return finish(result, gflop, device)
