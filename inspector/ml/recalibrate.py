"""``inspector calibrate``: re-fit a checkpoint's thresholds from good images or good scores.

A line drifts (lighting, a new batch of parts) and its false-alarm rate with it; an anomalib
import may come without thresholds. Both need new thresholds, not new weights: from a folder
of good images, scored on the daemon's own path, or from the raw scores of frames marked good
in the daemon's JSONL results. Only the calibration changes; a daemon serving the file
takes the new one on SIGHUP.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inspector import __version__
from inspector.checkpoint import LoadedCheckpoint, load_checkpoint, save_checkpoint
from inspector.errors import CalibrationError, ConfigError, DatasetError, ImageDecodeError
from inspector.imaging import read_image
from inspector.messages import ModelRef
from inspector.ml.calibrate import fit_calibration
from inspector.ml.config import CalibrationMode
from inspector.ml.data import IMAGE_SUFFIXES, list_images
from inspector.model.calibration import Calibration
from inspector.model.config import Frozen
from inspector.model.device import resolve_device
from inspector.model.fastpath import RuntimeOptions
from inspector.runtime.metrics import Metrics
from inspector.runtime.worker import ModelWorker

log = logging.getLogger(__name__)

#: Key of ``CheckpointMeta.training`` listing each recalibration (oldest first).
HISTORY_KEY = "recalibrations"


class RecalibrateConfig(Frozen):
    """Settings of ``inspector calibrate``.

    Attributes:
        target_false_alarm_rate: Share of good samples allowed above the new image threshold.
        device: Where images are scored (``auto``: CUDA when available).
        precision: As the daemon's ``model.precision``: calibrate with the precision it serves.
        batch_size: Images per forward pass.
        allow_other_checkpoint: Accept JSONL lines of other checkpoints (same weights, other
            file: only the caller can know).
    """

    target_false_alarm_rate: float = Field(gt=0, lt=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["fp32", "bf16", "auto"] = "auto"
    batch_size: int = Field(default=8, ge=1)
    allow_other_checkpoint: bool = False


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


class RecalibrationRecord(BaseModel):
    """One recalibration; the new checkpoint lists each in ``training["recalibrations"]``.

    Attributes:
        at: UTC time, ISO 8601.
        from_sha256: The input checkpoint's SHA-256. Same weights: a later ``--scores`` takes
            its results as this checkpoint's.
        source: ``images`` or ``scores``.
        input: The good-image folder or the scores file.
        n_samples: Good images scored, or score lines used.
        target_false_alarm_rate: The rate asked for.
        pixel_refitted: ``False`` when the pixel threshold was kept (scores carry no maps).
        before: The calibration replaced (``None``: there was none).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    at: str
    from_sha256: str
    source: Literal["images", "scores"]
    input: str
    n_samples: int
    target_false_alarm_rate: float
    pixel_refitted: bool
    before: Calibration | None


class RecalibrationReport(RecalibrationRecord):
    """What ``inspector calibrate`` did: the record plus the outcome (``--json`` writes it).

    Attributes:
        checkpoint: Input checkpoint.
        out: Written checkpoint.
        out_sha256: Its SHA-256 (what the daemon's results will name).
        n_unreadable: Images skipped as unreadable.
        calibration_false_alarm_rate: Share of the samples above the new threshold.
        false_alarm_rate_sd: Binomial spread (1 sd) of the rate on new good frames owed to
            the number of samples, ``sqrt(rate (1 - rate) / n)``.
        after: The new calibration.
        warnings: Caveats, also logged (few samples).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    checkpoint: str
    out: str
    out_sha256: str
    n_unreadable: int
    calibration_false_alarm_rate: float
    false_alarm_rate_sd: float
    after: Calibration
    warnings: list[str] = Field(default_factory=list)

    def summary(self) -> str:
        """One line: what was written, from what, thresholds before -> after, expected rate."""
        before, after = self.before, self.after

        def change(field: Literal["image_threshold", "pixel_threshold"]) -> str:
            old = "none" if before is None else f"{getattr(before, field):.6g}"
            return f"{old} -> {getattr(after, field):.6g}"

        pixel = (
            f"pixel threshold {change('pixel_threshold')}"
            if self.pixel_refitted
            else f"pixel threshold {after.pixel_threshold:.6g} kept (scores carry no maps; "
            "calibrate from --good images to refit it)"
        )
        return (
            f"wrote {self.out} (sha256 {self.out_sha256[:12]}) from {self.n_samples} "
            f"{'good image(s)' if self.source == 'images' else 'score line(s)'} in {self.input}: "
            f"image threshold {change('image_threshold')}"
            f", {pixel}; false-alarm rate target {self.target_false_alarm_rate:g}, "
            f"{self.calibration_false_alarm_rate:.4g} of the samples above, expect "
            f"±{self.false_alarm_rate_sd:.2g} (1 sd) on new good frames"
        )


def recalibrate(
    checkpoint_path: Path,
    out: Path,
    config: RecalibrateConfig,
    *,
    good: Path | None = None,
    scores: Path | None = None,
) -> RecalibrationReport:
    """Re-fit ``checkpoint_path``'s calibration and write the result to ``out`` atomically.

    Images refit the image and pixel thresholds and both ranges (``good_only`` fitting, as
    ``inspector train``); scores refit the image threshold and range and keep the pixel ones.

    Args:
        checkpoint_path: The checkpoint; replaced only if ``out`` is the same path.
        out: Checkpoint to write (temporary file and rename: a reloading daemon never reads
            half a file).
        config: Target rate and scoring settings.
        good: Folder of good images (not the training images: their scores are too low).
        scores: JSONL of ``inspector.result/v1`` messages (or ``{"raw_score": x}`` lines) of
            frames marked good. Exactly one of ``good`` and ``scores``.

    Returns:
        The report.

    Raises:
        ConfigError: Not exactly one input, an input that does not exist, scores for a
            checkpoint without calibration, or a device that is not available.
        DatasetError: No readable images; a scores file unreadable, empty or malformed.
        CalibrationError: Scores of another checkpoint, or too few samples for the target.
        CheckpointError: The input cannot be loaded or the output cannot be written.
    """
    if (good is None) == (scores is None):
        raise ConfigError("give exactly one of --good DIR and --scores FILE")
    loaded = load_checkpoint(checkpoint_path)
    before = loaded.meta.calibration
    if scores is None:
        assert good is not None
        samples = score_good_images(loaded, good, config)
    elif before is None:
        raise ConfigError(
            f"--scores: {checkpoint_path} has no calibration, and scores alone cannot fit its "
            "pixel threshold and map range; calibrate it from --good images"
        )
    else:
        samples = read_good_scores(scores, loaded, allow_other=config.allow_other_checkpoint)
    rate, n = config.target_false_alarm_rate, len(samples.scores)
    warnings = check_sample_count(n, rate, samples.where)
    for text in warnings:
        log.warning("%s", text)
    after = _fit(samples, before, rate)
    record = RecalibrationRecord(
        at=datetime.now(UTC).isoformat(),
        from_sha256=loaded.sha256,
        source=samples.source,
        input=str(samples.where),
        n_samples=n,
        target_false_alarm_rate=rate,
        pixel_refitted=samples.map_extremes is not None,
        before=before,
    )
    history = [*_history(loaded), record.model_dump(mode="json")]
    meta = loaded.meta.model_copy(
        update={
            "calibration": after,
            "training": {**loaded.meta.training, HISTORY_KEY: history},
            "created_at": record.at,
            "package_version": __version__,
        }
    )
    out_sha = save_checkpoint(out, loaded.model.cpu(), meta)
    return RecalibrationReport(
        **dict(record),
        checkpoint=str(checkpoint_path),
        out=str(out),
        out_sha256=out_sha,
        n_unreadable=samples.n_unreadable,
        calibration_false_alarm_rate=float((samples.scores > after.image_threshold).mean()),
        false_alarm_rate_sd=math.sqrt(rate * (1 - rate) / n),
        after=after,
        warnings=warnings,
    )


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


def score_good_images(
    checkpoint: LoadedCheckpoint, folder: Path, config: RecalibrateConfig
) -> GoodSamples:
    """Raw scores and map extremes of the images directly inside ``folder``.

    Scored by the daemon's model stage (the checkpoint's preprocessing, the fast path at
    ``config.precision``), so the thresholds fit the scores the daemon will compute.
    Unreadable files are logged by path and skipped.

    Raises:
        ConfigError: ``folder`` is not a folder.
        DatasetError: It holds no readable images.
    """
    if not folder.is_dir():
        raise ConfigError(f"--good: {folder} is not a folder of good images")
    paths = list_images(folder)
    if not paths:
        raise DatasetError(
            f"--good: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) directly in {folder}"
        )
    worker = ModelWorker(
        checkpoint.model,
        resolve_device(config.device),
        Metrics(CollectorRegistry()),
        warmup_batches=0,
        max_batch_size=config.batch_size,
        runtime=RuntimeOptions(precision=config.precision),
        preprocessing=checkpoint.meta.preprocessing,
    )
    scores: list[np.ndarray] = []
    # Per image only the map's min and max: good_only fitting reads nothing else of the maps,
    # and N full maps would not fit in memory for a large folder (256 KB each at 256 px).
    extremes: list[np.ndarray] = []
    unreadable = 0
    for start in range(0, len(paths), config.batch_size):
        images = []
        for path in paths[start : start + config.batch_size]:
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


def read_good_scores(path: Path, checkpoint: LoadedCheckpoint, *, allow_other: bool) -> GoodSamples:
    """Raw scores of the good frames listed in a JSONL file.

    Lines naming another checkpoint than ``checkpoint`` (or one it was recalibrated from:
    same weights) are refused unless ``allow_other``: another model's raw scores are on
    another scale. Lines without a model (``{"raw_score": x}``) are taken as given.

    Raises:
        ConfigError: ``path`` does not exist.
        DatasetError: Unreadable, not JSON lines with a finite ``raw_score``, or no lines.
        CalibrationError: A line of another checkpoint (``allow_other`` not set).
    """
    if not path.exists():
        raise ConfigError(f"--scores: {path} does not exist")
    same_model = _same_weights(checkpoint)
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
        if sha is not None and sha not in same_model and not allow_other:
            raise CalibrationError(
                f"{path} line {number}: a result of checkpoint sha256 {sha[:12]}, not of "
                f"{checkpoint.path} (sha256 {checkpoint.sha256[:12]}); another model's raw "
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


def _history(checkpoint: LoadedCheckpoint) -> list[Any]:
    """Earlier recalibrations as stored, to carry over (``training`` is free-form JSON)."""
    entries = checkpoint.meta.training.get(HISTORY_KEY)
    return list(entries) if isinstance(entries, list) else []


def _same_weights(checkpoint: LoadedCheckpoint) -> set[str]:
    """SHA-256 of ``checkpoint`` and of each checkpoint it was recalibrated from."""
    found = {checkpoint.sha256}
    for entry in _history(checkpoint):
        try:
            found.add(RecalibrationRecord.model_validate(entry).from_sha256)
        except ValidationError:  # an entry edited by hand or written by another version
            continue
    return found


def _fit(samples: GoodSamples, before: Calibration | None, rate: float) -> Calibration:
    n = len(samples.scores)
    # In good_only mode fit_calibration reads only the maps' min and max: each image's two
    # extremes stand in for its map. Without maps the scores do (each is a map's maximum),
    # and the pixel fields are then the checkpoint's, which scores cannot refit.
    maps = samples.scores if samples.map_extremes is None else samples.map_extremes
    fitted = fit_calibration(
        samples.scores,
        np.zeros(n, int),
        maps.reshape(n, 1, -1),
        None,
        mode=CalibrationMode.GOOD_ONLY,
        target_false_alarm_rate=rate,
    )
    if samples.map_extremes is not None or before is None:
        return fitted
    kept = ("pixel_threshold", "pixel_min", "pixel_max")
    return fitted.model_copy(update={k: getattr(before, k) for k in kept})
