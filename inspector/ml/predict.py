"""Offline inference on image files: ``inspector predict``.

Writes ``results.jsonl`` (one ``inspector.result/v1`` message per image, the Kafka schema),
heat-map overlays of every image and, with ``save_maps``, the raw anomaly maps. Unreadable
files are listed in ``errors.jsonl`` with the reason: never dropped silently.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from inspector.backends import LoadedModel
from inspector.checkpoint import LoadedCheckpoint
from inspector.errors import ConfigError, ImageDecodeError
from inspector.imaging import draw_mask_outline, heatmap_overlay, read_image, write_png
from inspector.messages import Latency, ModelRef
from inspector.ml.data import IMAGE_SUFFIXES
from inspector.model.fastpath import RuntimeOptions
from inspector.runtime.config import PostprocessConfig
from inspector.runtime.metrics import Metrics
from inspector.runtime.postprocess import Postprocessor
from inspector.runtime.records import FrameMeta
from inspector.runtime.worker import ModelWorker

log = logging.getLogger(__name__)

#: A loaded checkpoint's fast path, unmeasured (``auto``/``int8``: a model from ``load_served``).
Precision = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class PredictSummary:
    """Counts of a prediction run.

    Attributes:
        n_images: Images scored.
        n_anomalous: Of those, flagged anomalous.
        n_failed: Files that could not be read (see ``errors.jsonl``).
        results: Path of ``results.jsonl``.
    """

    n_images: int
    n_anomalous: int
    n_failed: int
    results: Path


def expand_inputs(inputs: Iterable[Path]) -> list[Path]:
    """Files as given plus the images inside given folders (recursively), sorted, unique.

    Raises:
        ConfigError: An input does not exist.
    """
    found: list[Path] = []
    for path in inputs:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        elif path.is_file():
            found.append(path)
        else:
            raise ConfigError(f"input {path} does not exist")
    return list(dict.fromkeys(found))


def output_names(paths: list[Path]) -> dict[Path, str]:
    """File stem for each input's overlay/map; folder-qualified where stems would collide.

    ``test/good/000.png`` and ``test/crack/000.png`` would otherwise overwrite each other's maps.
    """
    counts: dict[str, int] = {}
    for p in paths:
        counts[p.stem] = counts.get(p.stem, 0) + 1
    return {p: p.stem if counts[p.stem] == 1 else f"{p.parent.name}_{p.stem}" for p in paths}


def _chunks(paths: list[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(paths), size):
        yield paths[start : start + size]


def predict(
    checkpoint: LoadedCheckpoint | LoadedModel,
    inputs: list[Path],
    out_dir: Path,
    *,
    postprocess: PostprocessConfig | None = None,
    save_maps: bool = False,
    overlays: bool = True,
    batch_size: int = 8,
    device: torch.device | None = None,
    precision: Precision = "fp32",
) -> PredictSummary:
    """Score image files and write results, overlays and optionally raw maps.

    Args:
        checkpoint: A model as the daemon serves it (:func:`inspector.ml.served.load_served`:
            an export on its engine, a checkpoint at the precision ``auto`` chose, as
            ``inspector predict`` loads it), or a loaded checkpoint (calibrated), run on the
            PyTorch fast path at ``precision`` on ``device``.
        inputs: Image files and/or folders.
        out_dir: Output folder (created).
        postprocess: Threshold overrides and region settings.
        save_maps: Write raw maps as ``maps/<stem>.npy`` (float32, model input size).
        overlays: Write ``overlays/<stem>.png`` heat maps with defect outlines.
        batch_size: Images per forward pass.
        device: Where a loaded checkpoint runs (default CPU; a served model runs where it
            was loaded).
        precision: A loaded checkpoint's precision. ``auto`` and ``int8`` are the daemon's
            loader's to resolve (measured, cached; the int8 record): load with ``load_served``.

    Returns:
        Counts and the results path.
    """
    device = device or torch.device("cpu")
    meta = checkpoint.meta
    post = Postprocessor(
        meta.calibration,
        ModelRef(name=meta.name, backbone=meta.model.backbone, checkpoint_sha256=checkpoint.sha256),
        postprocess or PostprocessConfig(),
    )
    # The daemon's model stage: the checkpoint's preprocessing, the same fast path.
    worker = ModelWorker(
        checkpoint.engine if isinstance(checkpoint, LoadedModel) else checkpoint.model,
        device,  # an engine runs on its own device
        Metrics(CollectorRegistry()),
        warmup_batches=0,
        max_batch_size=batch_size,
        runtime=RuntimeOptions(precision=precision),
        preprocessing=meta.preprocessing,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path, errors_path = out_dir / "results.jsonl", out_dir / "errors.jsonl"
    n_images = n_anomalous = n_failed = 0
    with results_path.open("w") as results, errors_path.open("w") as errors:
        paths = expand_inputs(inputs)
        names = output_names(paths)
        for chunk in _chunks(paths, batch_size):
            frames: list[tuple[Path, np.ndarray, float]] = []
            for path in chunk:
                t0 = time.perf_counter()
                try:
                    frames.append((path, read_image(path), (time.perf_counter() - t0) * 1e3))
                except ImageDecodeError as exc:
                    n_failed += 1
                    log.warning("cannot read %s: %s", path, exc)
                    errors.write(json.dumps({"path": str(path), "error": str(exc)}) + "\n")
            if not frames:
                continue
            t0 = time.perf_counter()
            out = worker.infer([img for _, img, _ in frames])
            infer_ms = (time.perf_counter() - t0) * 1e3 / len(frames)
            for i, (path, image, decode_ms) in enumerate(frames):
                t1 = time.perf_counter()
                raw_map = out.anomaly_map[i, 0]
                decision = post.decide(raw_map, float(out.pred_score[i]), image.shape[:2])
                post_ms = (time.perf_counter() - t1) * 1e3
                frame = FrameMeta(frame_id=str(path), camera_id="files", image_size=image.shape[:2])
                latency = Latency(
                    decode=decode_ms,
                    inference=infer_ms,
                    postprocess=post_ms,
                    total=decode_ms + infer_ms + post_ms,
                )
                results.write(post.to_message(frame, decision, latency).to_json() + "\n")
                n_images += 1
                n_anomalous += decision.is_anomalous
                if save_maps:
                    maps_dir = out_dir / "maps"
                    maps_dir.mkdir(exist_ok=True)
                    np.save(maps_dir / f"{names[path]}.npy", raw_map.numpy())
                if overlays and decision.heatmap is not None:  # always: every map is passed
                    picture = heatmap_overlay(image, decision.heatmap)
                    if decision.mask is not None:
                        picture = draw_mask_outline(picture, decision.mask)
                    write_png(out_dir / "overlays" / f"{names[path]}.png", picture)
    return PredictSummary(n_images, n_anomalous, n_failed, results_path)
