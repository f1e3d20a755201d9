"""``inspector bench --compare``: our paths beside anomalib's exported ones, same weights.

anomalib's Lightning ``ReverseDistillation`` gets seeded random weights; ours is built from its
state dict and written as a checkpoint, which ``inspector export`` turns into our graphs.
anomalib's graphs come from its own ``to_onnx``/``to_openvino``
(:mod:`inspector.tools.benchmark.anomalib_exports`). Every path runs on the same decoded
frames: our paths through ``ModelWorker.infer`` (preprocessing included, like the daemon),
anomalib's graphs on what its inferencers feed them, its eager model on our preprocessing.

Timing: an untimed warm-up per path, then rounds of a few batches per path, the order rotated
by one path every round, so that no path always runs first (on caches another warmed, or in a
quieter moment of a shared machine). Accuracy: each path against its own family's fp32
reference (ours in PyTorch fp32, anomalib's eager model) on the timed frames, and image and
pixel AUROC on a small held-out synthetic set with defects.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from inspector.checkpoint import CheckpointMeta, save_checkpoint
from inspector.errors import ConfigError, DatasetError
from inspector.ml.data import labelled_items, read_mask
from inspector.ml.metrics import image_auroc, pixel_auroc
from inspector.model import ReverseDistillation
from inspector.model.records import InferenceBatch
from inspector.tools.benchmark import anomalib_exports as theirs
from inspector.tools.benchmark.e2e_peers import GROUP as E2E_GROUP
from inspector.tools.benchmark.e2e_peers import inferencer_sections, run_inferencer_compare
from inspector.tools.benchmark.model import make_worker
from inspector.tools.benchmark.options import (
    DISTINCT_FRAMES,
    BenchOptions,
    decode_jpegs,
    full_batches,
    synthetic_jpegs,
)
from inspector.tools.benchmark.ours_paths import (
    CALIBRATION_SHARE,
    RAW_MAP,
    Peer,
    Run,
    calibration_folder,
    ours_default,
    ours_exported,
    same_weights,
)
from inspector.tools.benchmark.report import base_fields, finish, gflop_per_image, latency_fields
from inspector.tools.benchmark.tables import tidy
from inspector.tools.benchmark.timing import Batch, throughput, timed
from inspector.tools.synth.dataset import generate_dataset

log = logging.getLogger(__name__)

#: The held-out set for AUROC: good images, and images per defect kind (five kinds).
EVAL_GOOD = 8
EVAL_PER_DEFECT = 2
REFERENCES = {"ours": "ours-torch-fp32", "anomalib": "anomalib"}
AUROC_NOTE = (
    "random weights: the AUROCs are not meaningful in absolute terms, only as the drop of each "
    "path against its family's fp32 reference"
)


def run_peers(
    options: BenchOptions, device: torch.device, command: Sequence[str]
) -> dict[str, Any]:
    """Our paths beside anomalib's (``options.compare``), same weights.

    Model-only for the groups ``anomalib``, ``openvino`` and ``onnxruntime``; end to end for
    ``anomalib-openvino-inferencer`` (:mod:`inspector.tools.benchmark.e2e_peers`: our daemon
    beside anomalib's ``OpenVINOInferencer`` loop on the same files, and the daemon's peak
    memory with int8 and fp32). Asked alone, the latter is the whole result; with others its
    sections join the model-only result.

    Returns:
        The result object: ``ours``'s fields as in plain model mode, a ``paths`` table (timing
        and accuracy per path), ``ratios``, the fp32 references' figures and how it was run;
        with the end-to-end group ``end_to_end``, ``memory`` and ``runs``.

    Raises:
        ConfigError: anomalib is missing, or an exported path was asked for off the CPU.
        BackendUnavailableError: OpenVINO, onnxruntime or NNCF is missing.
        InspectorError: An end-to-end run failed or lost frames.
    """
    cpu_only = {"openvino", "onnxruntime", E2E_GROUP}
    if device.type != "cpu" and cpu_only & set(options.compare):
        raise ConfigError(
            f"--compare {', '.join(sorted(cpu_only))} run on the CPU: add --device cpu (or "
            "compare with anomalib only)"
        )
    if E2E_GROUP not in options.compare:
        return _model_only(options, device, command)
    if set(options.compare) == {E2E_GROUP}:
        return run_inferencer_compare(options, device, command)
    sections = inferencer_sections(options)
    model_groups = tuple(g for g in options.compare if g != E2E_GROUP)
    result = _model_only(replace(options, compare=model_groups), device, command)
    result["compare"] = list(options.compare)
    result.update(tidy(sections.fields))
    return result


def _model_only(
    options: BenchOptions, device: torch.device, command: Sequence[str]
) -> dict[str, Any]:
    """The model-only comparison of ``options.compare`` (see the module)."""
    images = decode_jpegs(synthetic_jpegs(options.n_frames, options.image_size, options.seed))
    batches = full_batches(images, options.n_frames, options.batch_size)
    # Accuracy is read from the first batches: beyond DISTINCT_FRAMES the frames repeat.
    keep = min(len(batches), -(-DISTINCT_FRAMES // options.batch_size))
    with tempfile.TemporaryDirectory(prefix="inspector-bench-") as tmp:
        t0 = time.perf_counter()
        peers, references, ours_model = _build(options, device, Path(tmp))
        prepare_s = time.perf_counter() - t0
        seconds, outputs, window = _time(peers, batches, options.warmup, keep)
        evaluation = _eval_set(options, Path(tmp) / "eval")
        table, refs = _accuracy(peers, references, batches[:keep], outputs, evaluation)
    frames = len(batches) * options.batch_size
    result = base_fields(options, device, peers[0].info["precision"], frames, command)
    result["images_per_s"] = throughput(seconds["ours"], options.batch_size)
    result.update(latency_fields([s * 1e3 for s in seconds["ours"]], "batch"))
    if "anomalib" in seconds:
        # The fields of --compare-anomalib, from this run.
        result["anomalib_images_per_s"] = throughput(seconds["anomalib"], options.batch_size)
        result["speedup"] = result["images_per_s"] / result["anomalib_images_per_s"]
        result["max_abs_diff"] = _agreement(outputs["ours"], outputs["anomalib"])[0]
        result["anomalib_map_max"] = refs[REFERENCES["anomalib"]]["map_max"]
    result.update(theirs.versions())
    paths = {
        p.name: {
            "family": p.family,
            **p.info,
            **_timing(seconds[p.name], options.batch_size),
            **table[p.name],
        }
        for p in peers
    }
    result["compare"] = list(options.compare)
    result["paths"] = tidy(paths)
    result["ratios"] = tidy(_ratios(paths))
    result["references"] = tidy(refs)
    result["accuracy_note"] = AUROC_NOTE
    labels = evaluation[1]
    result["eval_set"] = {
        "images": len(labels),
        "anomalous": int(labels.sum()),
        "source": f"inspector.tools.synth.generate_dataset metal, seed {options.seed + 2}: "
        f"{EVAL_GOOD} good and {EVAL_PER_DEFECT} per defect kind, at the input size",
    }
    result["timing"] = {
        "window_batches": window,
        "rounds": -(-len(batches) // window),
        "order": "each round runs every path for one window of batches; the order rotates by "
        "one path every round",
        "warmup_batches_per_path": options.warmup,
        "images_per_s": "batch size / median batch time; images_per_s_p95: / p95 batch time",
    }
    result["prepare_s"] = prepare_s
    return finish(result, gflop_per_image(ours_model, device), device)


def _build(
    options: BenchOptions, device: torch.device, work: Path
) -> tuple[list[Peer], dict[str, Run], ReverseDistillation]:
    """The paths asked for (``ours`` first), each family's fp32 reference, and our model."""
    groups = set(options.compare)
    size = (options.image_size, options.image_size)
    module = theirs.build_module(options.backbone, size, options.seed)
    ours = same_weights(module, size)
    checkpoint = work / "ours.safetensors"
    # Written before a worker touches the model (channels_last changes its tensors' layout).
    meta = CheckpointMeta(name=f"bench-{options.backbone}", model=ours.config)
    save_checkpoint(checkpoint, ours, meta)
    calibration = work / "calibration"
    if "openvino" in groups:
        calibration_folder(calibration, options)
    exported = ours_exported(groups, checkpoint, calibration / "train" / "good", work, options)
    calibrate = theirs.Calibration(calibration, options.batch_size, CALIBRATION_SHARE, options.seed)
    for name, graph, info in theirs.exported_paths(module, groups, calibrate, work, size):
        exported.append(Peer(name, "anomalib", graph, info))
    worker, torch_info = ours_default(ours, checkpoint, calibration, groups, device, options)
    peers = [Peer("ours", "ours", worker.infer, torch_info)]
    fp32 = worker
    if worker.fast.precision != "fp32":
        fp32_options = replace(options, precision="fp32", compile=False, cuda_graphs=False)
        fp32 = make_worker(ours, device, fp32_options)
    eager = theirs.eager_runner(module.model.to(device).eval(), size, device)
    if "anomalib" in groups:
        info = {
            "backend": "torch",
            "precision": "fp32",
            "map": RAW_MAP,
            "made_by": "anomalib ReverseDistillationModel, eager under torch.no_grad, on our "
            "preprocessing (as --compare-anomalib)",
        }
        peers.append(Peer("anomalib", "anomalib", eager, info))
    return peers + exported, {"ours": fp32.infer, "anomalib": eager}, ours


def _time(
    peers: list[Peer], batches: list[Batch], warmup: int, keep: int
) -> tuple[dict[str, list[float]], dict[str, list[InferenceBatch]], int]:
    """Per-batch seconds per path, the outputs of the first ``keep`` batches, the window."""

    def rotated(r: int) -> list[Peer]:
        k = r % len(peers)
        return peers[k:] + peers[:k]

    for i in range(warmup):
        for peer in rotated(i):
            peer.run(batches[i % len(batches)])
    # About four rounds when there are batches enough (so the rotation means something), with
    # windows of at most three batches.
    window = max(1, min(3, len(batches) // 4))
    seconds: dict[str, list[float]] = {p.name: [] for p in peers}
    outputs: dict[str, list[InferenceBatch]] = {p.name: [] for p in peers}
    for r, start in enumerate(range(0, len(batches), window)):
        for peer in rotated(r):
            for b in range(start, min(start + window, len(batches))):
                out, t = timed(peer.run, batches[b])
                seconds[peer.name].append(t)
                if b < keep:
                    outputs[peer.name].append(out)
    return seconds, outputs, window


Evaluation = tuple[list[Batch], np.ndarray, np.ndarray]


def _eval_set(options: BenchOptions, root: Path) -> Evaluation:
    """Held-out frames (BGR, as decoded) in batches, labels ``(N,)`` and masks ``(N, H, W)``."""
    generate_dataset(
        root,
        seed=options.seed + 2,
        image_size=options.image_size,
        n_train=1,
        n_test_good=EVAL_GOOD,
        n_test_per_defect=EVAL_PER_DEFECT,
    )
    items = labelled_items(root, "test")
    size = (options.image_size, options.image_size)
    frames: Batch = []
    for item in items:
        image = cv2.imread(str(item.path), cv2.IMREAD_COLOR)
        if image is None:  # pragma: no cover - the files were just written
            raise DatasetError(f"cannot read {item.path}")
        frames.append(image)
    masks = np.stack([read_mask(item.mask_path, size).numpy() for item in items])
    labels = np.array([item.label for item in items])
    n = options.batch_size
    return [frames[i : i + n] for i in range(0, len(frames), n)], labels, masks


def _accuracy(
    peers: list[Peer],
    references: dict[str, Run],
    kept: list[Batch],
    outputs: dict[str, list[InferenceBatch]],
    evaluation: Evaluation,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per path: agreement with its family's reference and AUROCs; the references' figures."""
    batches, labels, masks = evaluation
    on_eval = {p.name: [p.run(b) for b in batches] for p in peers}
    ref_timed: dict[str, list[InferenceBatch]] = {}
    ref_eval: dict[str, list[InferenceBatch]] = {}
    refs: dict[str, Any] = {}
    for family in dict.fromkeys(p.family for p in peers):
        run = references[family]
        # The reference is timed as a path already when it is one (same callable).
        same = next((p.name for p in peers if p.run == run), None)
        ref_timed[family] = outputs[same] if same else [run(b) for b in kept]
        ref_eval[family] = on_eval[same] if same else [run(b) for b in batches]
        maps = torch.cat([o.anomaly_map for o in ref_timed[family]])
        refs[REFERENCES[family]] = {
            "map_max": float(maps.abs().max()),
            **_aurocs(ref_eval[family], labels, masks),
        }
    if len(ref_timed) == 2:
        # Same weights: anomalib's eager maps and ours in fp32 must agree.
        diff = _agreement(ref_timed["ours"], ref_timed["anomalib"])[0]
        refs["ours_fp32_vs_anomalib_max_abs_map_diff"] = diff
    table = {}
    for peer in peers:
        diff, pearson = _agreement(outputs[peer.name], ref_timed[peer.family])
        aurocs = _aurocs(on_eval[peer.name], labels, masks)
        reference = refs[REFERENCES[peer.family]]
        table[peer.name] = {
            "reference": REFERENCES[peer.family],
            "max_abs_map_diff": diff,
            "score_pearson": pearson,
            **aurocs,
            **{f"{k}_drop": reference[k] - v for k, v in aurocs.items()},
        }
    return table, refs


def _agreement(a: list[InferenceBatch], b: list[InferenceBatch]) -> tuple[float, float]:
    """Largest absolute map difference and Pearson correlation of the scores."""
    maps_a, maps_b = (torch.cat([o.anomaly_map for o in x]).numpy() for x in (a, b))
    scores_a, scores_b = (torch.cat([o.pred_score for o in x]).double().numpy() for x in (a, b))
    diff = float(np.abs(maps_a - maps_b).max())
    if scores_a.std() == 0 or scores_b.std() == 0:
        return diff, math.nan
    return diff, float(np.corrcoef(scores_a, scores_b)[0, 1])


def _aurocs(out: list[InferenceBatch], labels: np.ndarray, masks: np.ndarray) -> dict[str, float]:
    scores = torch.cat([o.pred_score for o in out]).numpy()
    maps = torch.cat([o.anomaly_map for o in out])[:, 0].numpy()
    if not (np.isfinite(scores).all() and np.isfinite(maps).all()):
        return {"image_auroc": math.nan, "pixel_auroc": math.nan}
    return {"image_auroc": image_auroc(labels, scores), "pixel_auroc": pixel_auroc(masks, maps)}


def _timing(seconds: list[float], batch_size: int) -> dict[str, Any]:
    median, p95 = (float(np.percentile(seconds, q)) for q in (50, 95))
    return {
        "batches": len(seconds),
        "median_batch_ms": median * 1e3,
        "p95_batch_ms": p95 * 1e3,
        "images_per_s": batch_size / median,
        "images_per_s_p95": batch_size / p95,
        "images_per_s_mean": throughput(seconds, batch_size),
    }


def _ratios(paths: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``ours`` and our fastest path against each of anomalib's (median images/s)."""
    rate = {name: float(row["images_per_s"]) for name, row in paths.items()}
    theirs_ = [n for n, row in paths.items() if row["family"] == "anomalib"]
    best = max((n for n, row in paths.items() if row["family"] == "ours"), key=rate.__getitem__)
    return {
        "basis": "images_per_s (median) of the first path over the second",
        "ours_vs": {n: rate["ours"] / rate[n] for n in theirs_},
        "best_ours": best,
        "best_ours_vs": {n: rate[best] / rate[n] for n in theirs_},
        "fastest": max(rate, key=rate.__getitem__),
    }
