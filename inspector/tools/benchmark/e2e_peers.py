"""``inspector bench --compare anomalib-openvino-inferencer``: our daemon beside anomalib's loop.

End to end on the same image files and the same weights, each side with its own int8 model:

- ``ours``: the real daemon (:mod:`inspector.tools.benchmark.peer_process`: ``Daemon`` as
  ``inspector run`` runs it) over a directory source reading the files, the batcher, the
  worker, post-processing and a JSON-lines sink, at the benchmark's ``--precision`` (default
  ``auto``) on a checkpoint carrying an ``inspector quantize`` int8 record, which ``auto``
  serves where it is fastest. Timed from the start of the first file's read (its result's
  ``processed_at`` less its ``latency_ms.total``, which counts from before the read) to the
  last result's ``processed_at``: loading, ``auto``'s measurement and warm-up come before the
  source starts, and are left out.
- ``anomalib-openvino-inferencer``: anomalib's documented deployment loop,
  ``OpenVINOInferencer(path=xml, device="CPU")`` and ``predict(path)`` per file, on the
  ``.xml`` of anomalib's own ``to_openvino`` with ``INT8_PTQ`` (calibrated on the same good
  images as ours), after an untimed warm-up; run before and after ours, their mean rate is
  the reference, so that a machine speeding up or slowing down during the run does not decide
  the ratio.

Memory: every run is a process of its own, which reports its peak resident memory (``VmHWM``)
as it ends (:mod:`inspector.tools.benchmark.peer_process`). Besides ``ours`` (and, with
``auto``, its first start on an empty precision cache, when ``auto`` also builds and times
the candidates it does not serve) the daemon runs once more for whichever of ``int8`` and
``fp32`` ``ours`` did not serve, so that the two are stated side by side.
"""

from __future__ import annotations

import json
import logging
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import torch

from inspector.checkpoint import CheckpointMeta, save_checkpoint
from inspector.errors import InspectorError
from inspector.ml.int8_guard import Int8Settings
from inspector.ml.quantize import quantize_checkpoint
from inspector.tools.benchmark import anomalib_exports as theirs
from inspector.tools.benchmark.checkpoint import calibrate
from inspector.tools.benchmark.options import BenchOptions, synthetic_jpegs
from inspector.tools.benchmark.ours_paths import (
    CALIBRATION_SHARE,
    calibration_folder,
    same_weights,
)
from inspector.tools.benchmark.processes import log_tail, run_child
from inspector.tools.benchmark.report import base_fields, finish, gflop_per_image
from inspector.tools.benchmark.tables import tidy

log = logging.getLogger(__name__)

#: The ``--compare`` group of this comparison.
GROUP = "anomalib-openvino-inferencer"
THEIRS = GROUP
TARGET = "issue 20: our daemon at least 2x anomalib's OpenVINOInferencer loop (ratio >= 2)"
OURS_PIPELINE = (
    "inspector's Daemon (as inspector run): directory source reading the files -> batcher -> "
    "worker -> postprocess -> JSON-lines sink"
)
OURS_TIMED = (
    "from the start of the first file's read (processed_at - latency_ms.total of the earliest "
    "result) to the last result's processed_at; loading, precision auto and warm-up before"
)
THEIRS_TIMED = (
    "from before the first predict(path) to after the last, each reading its file (PIL), "
    "pre-processing, inferring and returning a NumpyImageBatch; after an untimed warm-up"
)
MEMORY_BASIS = (
    "peak_rss_mb: the peak resident set (VmHWM) of each run's own process, from its start to "
    "its end: imports, model loading (with its transients), warm-up and the frames; "
    "rss_at_end_mb: its resident set (VmRSS) once the frames are done, the model still loaded; "
    "the top-level peak_rss_mb is the benchmark's own process"
)


@dataclass(frozen=True)
class Prepared:
    """What both sides run on.

    Attributes:
        frames: The folder of JPEG files both read.
        checkpoint: Ours, same weights as anomalib's, with an ``inspector quantize`` int8
            record and thresholds that flag about a quarter of the frames.
        xml: anomalib's ``to_openvino`` with ``INT8_PTQ``.
        gflop: Forward-pass GFLOP per image.
        calibration_images: The good images anomalib's int8 calibrated on.
    """

    frames: Path
    checkpoint: Path
    xml: Path
    gflop: float
    calibration_images: int


@dataclass(frozen=True)
class Sections:
    """The comparison's part of a result.

    Attributes:
        fields: ``end_to_end`` (both rates, their ratio), ``memory`` (peaks) and ``runs``
            (every process's figures).
        images_per_s: Our daemon's rate.
        precision: What our daemon served.
        gflop: Forward-pass GFLOP per image.
    """

    fields: dict[str, Any]
    images_per_s: float
    precision: str
    gflop: float


def run_inferencer_compare(
    options: BenchOptions, device: torch.device, command: Sequence[str]
) -> dict[str, Any]:
    """The result of ``--compare anomalib-openvino-inferencer`` alone.

    Raises:
        InspectorError: A run failed or lost frames (the message quotes its log).
    """
    sections = inferencer_sections(options)
    result = base_fields(options, device, sections.precision, options.n_frames, command)
    result["images_per_s"] = sections.images_per_s
    result.update(theirs.versions())
    result["compare"] = list(options.compare)
    result.update(tidy(sections.fields))
    return finish(result, sections.gflop, device)


def inferencer_sections(options: BenchOptions) -> Sections:
    """Prepare both sides, run every process, and compute the ratios (see the module)."""
    with tempfile.TemporaryDirectory(prefix="inspector-bench-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        prepared = _prepare(options, work)
        prepare_s = time.perf_counter() - t0
        cache = work / "auto-cache"
        runs: dict[str, dict[str, Any]] = {}
        if options.precision == "auto":
            runs["ours-first-start"] = _ours(options, prepared, "auto", work / "first", cache)
        runs[f"{THEIRS}-before"] = _theirs(options, prepared, work / "theirs-before")
        runs["ours"] = _ours(options, prepared, options.precision, work / "ours", cache)
        runs[f"{THEIRS}-after"] = _theirs(options, prepared, work / "theirs-after")
        memory_runs = {}
        for precision in ("int8", "fp32"):
            name = "ours" if runs["ours"]["precision"] == precision else f"ours-{precision}"
            if name not in runs:
                runs[name] = _ours(options, prepared, precision, work / name, cache)
            memory_runs[f"ours-{precision}"] = name
    ours = runs["ours"]
    rates = [runs[f"{THEIRS}-{when}"]["images_per_s"] for when in ("before", "after")]
    theirs_rate = statistics.fmean(rates)
    end_to_end = {
        "files": options.n_frames,
        "paths": {
            "ours": {
                **{k: ours[k] for k in ("images_per_s", "backend", "precision", "anomalous")},
                "precision_asked": options.precision,
                "pipeline": OURS_PIPELINE,
                "model": "same weights; inspector quantize int8 record (synthetic good images)",
                "timed": OURS_TIMED,
            },
            THEIRS: {
                "images_per_s": theirs_rate,
                "images_per_s_before_after": rates,
                "anomalous": runs[f"{THEIRS}-after"]["anomalous"],
                "loop": "anomalib.deploy.OpenVINOInferencer(path=xml, device='CPU'); "
                "predict(path) per file",
                "model": f"{theirs.INT8_CALIBRATION} ({prepared.calibration_images} images)",
                "timed": THEIRS_TIMED,
            },
        },
        "ratio": ours["images_per_s"] / theirs_rate,
        "ratio_basis": f"ours images_per_s over {THEIRS}'s (the mean of its two runs)",
        "target": TARGET,
        "prepare_s": prepare_s,
    }
    peak = {name: runs[run]["peak_rss_mb"] for name, run in memory_runs.items()}
    if "ours-first-start" in runs:
        peak["ours-auto-first-start"] = runs["ours-first-start"]["peak_rss_mb"]
    peak[THEIRS] = max(runs[f"{THEIRS}-{w}"]["peak_rss_mb"] for w in ("before", "after"))
    at_end = {name: runs[run]["rss_at_end_mb"] for name, run in memory_runs.items()}
    memory = {
        "peak_rss_mb": peak,
        "runs": memory_runs,
        "int8_vs_fp32": peak["ours-int8"] / peak["ours-fp32"],
        "rss_at_end_mb": at_end,
        "int8_vs_fp32_at_end": at_end["ours-int8"] / at_end["ours-fp32"],
        "basis": MEMORY_BASIS,
    }
    fields = {"end_to_end": end_to_end, "memory": memory, "runs": runs}
    return Sections(fields, float(ours["images_per_s"]), str(ours["precision"]), prepared.gflop)


def _prepare(options: BenchOptions, work: Path) -> Prepared:
    """The frames, our int8-recorded checkpoint and anomalib's int8 export, same weights."""
    size = (options.image_size, options.image_size)
    jpegs = synthetic_jpegs(options.n_frames, options.image_size, options.seed)
    frames = work / "frames"
    frames.mkdir()
    for i, payload in enumerate(jpegs):
        (frames / f"frame_{i:05d}.jpg").write_bytes(payload)
    module = theirs.build_module(options.backbone, size, options.seed)
    ours = same_weights(module, size)
    fp32 = work / "ours.safetensors"
    # Thresholds that flag about a quarter of the frames: the post-processing work of a line
    # with defects (regions, masks), neither none nor all.
    meta = CheckpointMeta(
        name=f"bench-{options.backbone}", model=ours.config, calibration=calibrate(ours, jpegs)
    )
    save_checkpoint(fp32, ours, meta)
    good = calibration_folder(work / "calibration", options)
    checkpoint = work / "ours-int8.safetensors"
    t0 = time.perf_counter()
    quantize_checkpoint(
        fp32, checkpoint, Int8Settings(good=good / "train" / "good", seed=options.seed)
    )
    log.info("inspector quantize in %.1f s", time.perf_counter() - t0)
    data = theirs.Calibration(good, options.batch_size, CALIBRATION_SHARE, options.seed)
    datamodule = theirs.folder_datamodule(data)
    t0 = time.perf_counter()
    xml = theirs.export_openvino(module, work / "anomalib-int8", size, datamodule)
    log.info("anomalib to_openvino INT8_PTQ in %.1f s", time.perf_counter() - t0)
    gflop = gflop_per_image(ours, torch.device("cpu"))
    return Prepared(frames, checkpoint, xml, gflop, len(datamodule.val_data))


def _ours(
    options: BenchOptions, prepared: Prepared, precision: str, folder: Path, cache: Path
) -> dict[str, Any]:
    """Our daemon at ``precision`` over the frames folder, in a process of its own."""
    results_file = folder / "results.jsonl"
    config = {
        "sources": [{"type": "directory", "path": str(prepared.frames), "camera_id": "bench"}],
        "model": {
            "checkpoint": str(prepared.checkpoint),
            "device": "cpu",
            "precision": precision,
            "warmup_batches": options.warmup,
            "channels_last": options.channels_last,
            # The benchmark's own: a user's cached choices are neither read nor changed.
            "auto_cache_dir": str(cache),
        },
        "batcher": {"max_batch_size": options.batch_size},
        "sinks": {"kafka": {"enabled": False}, "jsonl": {"path": str(results_file)}},
        "http": {"host": "127.0.0.1", "port": 0},
    }
    finished = run_child("daemon", {"config": config}, folder, options.timeout_s)
    lines = results_file.read_text().splitlines() if results_file.exists() else []
    dead = results_file.with_name("results.dlq.jsonl")
    dead_letters = len(dead.read_text().splitlines()) if dead.exists() else 0
    if len(lines) != options.n_frames:
        raise InspectorError(
            f"bench: the daemon ({precision}) delivered {len(lines)} results and {dead_letters} "
            f"dead letters for {options.n_frames} files; {log_tail(folder)}"
        )
    seconds, anomalous = results_span(lines)
    log.info("daemon %s: %d frames in %.2f s", precision, len(lines), seconds)
    return {
        "kind": "daemon",
        "precision_asked": precision,
        "backend": finished.report["backend"],
        "precision": finished.report["precision"],
        "images_per_s": len(lines) / seconds,
        "seconds": seconds,
        "results": len(lines),
        "anomalous": anomalous,
        "peak_rss_mb": finished.peak_rss_mb,
        "rss_at_end_mb": finished.rss_at_end_mb,
        "process_s": finished.wall_s,
    }


def results_span(lines: list[str]) -> tuple[float, int]:
    """Seconds from the first file's read to the last result, and how many were anomalous."""
    starts: list[datetime] = []
    ends: list[datetime] = []
    anomalous = 0
    for line in lines:
        message = json.loads(line)
        end = datetime.fromisoformat(message["processed_at"])
        ends.append(end)
        # latency_ms.total counts from before the frame's read and decode.
        starts.append(end - timedelta(milliseconds=float(message["latency_ms"]["total"])))
        anomalous += bool(message["is_anomalous"])
    return (max(ends) - min(starts)).total_seconds(), anomalous


def _theirs(options: BenchOptions, prepared: Prepared, folder: Path) -> dict[str, Any]:
    """The ``OpenVINOInferencer`` loop of anomalib over the frames, in a process of its own."""
    spec = {"xml": str(prepared.xml), "frames": str(prepared.frames), "warmup": options.warmup}
    finished = run_child("inferencer", spec, folder, options.timeout_s)
    report = finished.report
    n = len(report["scores"])
    if n != options.n_frames:  # pragma: no cover - the loop predicts every file or fails
        raise InspectorError(f"bench: {THEIRS} predicted {n} of {options.n_frames} files")
    seconds = float(report["seconds"])
    log.info("%s: %d frames in %.2f s", THEIRS, n, seconds)
    return {
        "kind": "inferencer",
        "precision": "int8 (anomalib INT8_PTQ), the rest the plugin's default",
        "images_per_s": n / seconds,
        "seconds": seconds,
        "results": n,
        "anomalous": sum(report["labels"]),
        "warmup_predictions": options.warmup,
        "peak_rss_mb": finished.peak_rss_mb,
        "rss_at_end_mb": finished.rss_at_end_mb,
        "process_s": finished.wall_s,
    }
