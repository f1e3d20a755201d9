"""What ``inspector calibrate`` fits on: raw scores of good samples, and whether they suffice.

Good images are scored by the model as the daemon serves it (:mod:`inspector.ml.served`: the
same backend, precision and preprocessing), so the thresholds fit the scores the daemon will
compute; a scores file gives the raw scores the daemon computed for frames marked good.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inspector.backends import LoadedModel
from inspector.checkpoint import LoadedCheckpoint
from inspector.errors import CalibrationError, ConfigError, DatasetError, ImageDecodeError
from inspector.imaging import read_image
from inspector.messages import ModelRef
from inspector.ml.data import IMAGE_SUFFIXES, list_images
from inspector.runtime.metrics import Metrics
from inspector.runtime.worker import ModelWorker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoodSamples:
    """Raw scores of good samples, and their maps' extremes when maps were seen.

    Attributes:
        scores: Raw image scores ``(N,)``.
        map_extremes: Per image ``(min, max)`` of its raw map, ``(N, 2)``; ``None`` for scores
            read from a file (results carry no maps).
        source: ``images`` or ``scores``.
        where: The folder or file they came from.
        n_unreadable: Images that could not be decoded (skipped).
    """

    scores: np.ndarray
    map_extremes: np.ndarray | None
    source: Literal["images", "scores"]
    where: Path
    n_unreadable: int = 0


def check_sample_count(n: int, rate: float, where: Path) -> list[str]:
    """Refuse too few samples for ``rate``; a warning when they make a loose threshold.

    Below ``1 / rate`` samples the threshold is (nearly) the largest score: the rate is not
    estimated at all. The realised rate spreads by ``sqrt(rate (1 - rate) / n)``, about a
    third of the rate at ``10 / rate`` samples.

    Returns:
        Warnings (empty when there are enough samples).

    Raises:
        CalibrationError: Fewer than ``1 / rate`` samples.
    """
    # The epsilon keeps 1 / 0.1 = 10.000000000000002 from asking for 11.
    needed, advised = math.ceil(1 / rate - 1e-9), math.ceil(10 / rate - 1e-9)
    if n < needed:
        raise CalibrationError(
            f"{where}: {n} good sample(s) for a target false-alarm rate of {rate:g}; at least "
            f"{needed} (1/rate) are needed, {advised} (10/rate) advised: add good samples or "
            "raise --false-alarm-rate"
        )
    if n < advised:
        spread = math.sqrt(rate * (1 - rate) / n)
        return [
            f"{where}: only {n} good samples for a target false-alarm rate of {rate:g}: expect "
            f"it within ±{spread:.2g} (1 sd) on new frames; {advised} (10/rate) advised"
        ]
    return []


def check_inputs(good: Path | None, scores: Path | None) -> None:
    """Refuse anything but one existing input, before a model is loaded for it.

    Raises:
        ConfigError: Neither or both, ``good`` not a folder, or ``scores`` missing.
    """
    if (good is None) == (scores is None):
        raise ConfigError("give exactly one of --good DIR and --scores FILE")
    if good is not None and not good.is_dir():
        raise ConfigError(f"--good: {good} is not a folder of good images")
    if scores is not None and not scores.exists():
        raise ConfigError(f"--scores: {scores} does not exist")


def score_good_images(served: LoadedModel, folder: Path, batch_size: int) -> GoodSamples:
    """Raw scores and map extremes of the images directly inside ``folder``.

    Scored by the daemon's model stage (a :class:`ModelWorker` over the served engine, with
    the model's preprocessing), so the thresholds fit the scores the daemon will compute.
    Unreadable files are logged by path and skipped.

    Args:
        served: The model as the daemon serves it (:func:`inspector.ml.served.load_served`).
        folder: Good images (BGR files of any size: resized as the daemon resizes frames).
        batch_size: Images per forward pass.

    Raises:
        ConfigError: ``folder`` is not a folder.
        DatasetError: It holds no readable images.
    """
    check_inputs(folder, None)
    paths = list_images(folder)
    if not paths:
        raise DatasetError(
            f"--good: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) directly in {folder}"
        )
    worker = ModelWorker(
        served.engine,
        served.engine.device,
        Metrics(CollectorRegistry()),
        warmup_batches=0,
        max_batch_size=batch_size,
        preprocessing=served.meta.preprocessing,
    )
    scores: list[np.ndarray] = []
    # Per image only the map's min and max: good_only fitting reads nothing else of the maps,
    # and N full maps would not fit in memory for a large folder (256 KB each at 256 px).
    extremes: list[np.ndarray] = []
    unreadable = 0
    for start in range(0, len(paths), batch_size):
        images = []
        for path in paths[start : start + batch_size]:
            try:
                images.append(read_image(path))
            except ImageDecodeError as exc:
                unreadable += 1
                log.warning("skipping unreadable image %s: %s", path, exc)
        if not images:
            continue
        out = worker.infer(images)
        maps = out.anomaly_map.flatten(1)
        scores.append(out.pred_score.double().numpy())
        extremes.append(torch.stack([maps.amin(1), maps.amax(1)], 1).double().numpy())
    if not scores:
        raise DatasetError(f"--good: none of the {len(paths)} images in {folder} could be read")
    return GoodSamples(
        np.concatenate(scores), np.concatenate(extremes), "images", folder, n_unreadable=unreadable
    )


class _ScoreLine(BaseModel):
    """What a scores line needs: an ``inspector.result/v1`` message or ``{"raw_score": x}``."""

    model_config = ConfigDict(extra="ignore")

    raw_score: float = Field(allow_inf_nan=False)
    model: ModelRef | None = None


def read_good_scores(
    path: Path,
    model: LoadedCheckpoint | LoadedModel,
    *,
    allow_other: bool,
    same_weights: Collection[str] = (),
) -> GoodSamples:
    """Raw scores of the good frames listed in a JSONL file.

    Lines naming another model than ``model`` (by its SHA-256: a checkpoint's, or an export's
    manifest's) or one of ``same_weights`` are refused unless ``allow_other``: another model's
    raw scores are on another scale. Lines without a model (``{"raw_score": x}``) are taken
    as given.

    Args:
        path: The JSONL file.
        model: The model the scores are for.
        allow_other: Take lines of any model.
        same_weights: SHA-256 of other files with the same weights (those ``model`` was
            recalibrated from).

    Raises:
        ConfigError: ``path`` does not exist.
        DatasetError: Unreadable, not JSON lines with a finite ``raw_score``, or no lines.
        CalibrationError: A line of another model (``allow_other`` not set).
    """
    check_inputs(None, path)
    accepted = {model.sha256, *same_weights}
    scores: list[float] = []
    for number, text in _lines(path):
        try:
            line = _ScoreLine.model_validate(json.loads(text))
        except (ValueError, ValidationError) as exc:
            raise DatasetError(
                f"{path} line {number}: not a result message with a finite raw_score "
                f"({_first_error(exc)}); keep only the daemon's result lines of good frames"
            ) from exc
        sha = None if line.model is None else line.model.checkpoint_sha256
        if sha is not None and sha not in accepted and not allow_other:
            raise CalibrationError(
                f"{path} line {number}: a result of checkpoint sha256 {sha[:12]}, not of "
                f"{model.path} (sha256 {model.sha256[:12]}); another model's raw "
                "scores do not fit this one: keep only this checkpoint's lines, or pass "
                "--allow-other-checkpoint if it has the same weights"
            )
        scores.append(line.raw_score)
    if not scores:
        raise DatasetError(
            f"--scores: {path} holds no result lines; give the daemon's JSONL results "
            "(sinks.jsonl.path) filtered to frames marked good"
        )
    return GoodSamples(np.array(scores, np.float64), None, "scores", path)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines (1-based, as an editor shows them)."""
    try:
        with path.open(encoding="utf-8") as fh:
            for number, text in enumerate(fh, 1):
                if text.strip():
                    yield number, text
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"--scores: cannot read {path}: {exc}") from exc


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc']) or 'line'}: {err['msg']}"
    return str(exc)
