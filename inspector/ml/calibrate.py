"""``inspector calibrate``: re-fit a model's thresholds from good images or good scores.

A line drifts (lighting, a new batch of parts) and its false-alarm rate with it; an anomalib
import may come without thresholds. Both need new thresholds, not new weights: from a folder
of good images, or from the raw scores of frames marked good in the daemon's JSONL results
(:mod:`inspector.ml.good_samples`), fitted as training fits
(:mod:`inspector.ml.calibration_fit`). Only the calibration changes; a daemon serving the file
takes the new one on SIGHUP.

Images are scored by the model as the daemon serves it (:mod:`inspector.ml.served`: the same
backend, and the same precision, ``auto`` included: the daemon's cached choice on this
machine), and the thresholds refitted are the ones that serve:

- a checkpoint served in fp32 or bf16: its ``calibration``;
- a checkpoint served from its int8 record (``precision: int8``, or ``auto`` choosing it): the
  record's thresholds; the fp32/bf16 ones are kept;
- an export (``--backend openvino|onnxruntime``): a new export folder, the same graph with the
  refitted thresholds in its manifest and in the graph's embedded metadata, sealed with a
  fresh manifest digest, so it is verified like any export (its results name the new
  manifest's SHA-256).
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inspector import __version__
from inspector.backends import LoadedModel
from inspector.backends.manifest import load_manifest
from inspector.checkpoint import CheckpointMeta, load_checkpoint, save_checkpoint
from inspector.errors import CalibrationError, ConfigError
from inspector.ml.calibration_fit import fit_calibration
from inspector.ml.config import CalibrationMode
from inspector.ml.good_samples import (
    GoodSamples,
    check_inputs,
    check_sample_count,
    read_good_scores,
    score_good_images,
)
from inspector.ml.probes import probe_images_from, with_probes
from inspector.ml.reseal import check_export_out, reseal_export
from inspector.ml.served import ServedPrecision, default_auto_cache_dir, load_served
from inspector.model.calibration import Calibration
from inspector.model.config import Frozen
from inspector.model.engine import Backend

log = logging.getLogger(__name__)

#: Key of ``CheckpointMeta.training`` listing each recalibration (oldest first).
HISTORY_KEY = "recalibrations"


class RecalibrateConfig(Frozen):
    """Settings of ``inspector calibrate``: the daemon's ``model`` settings, and the target.

    Attributes:
        target_false_alarm_rate: Share of good samples allowed above the new image threshold.
        backend: As the daemon's ``model.backend``: ``torch`` (a checkpoint), ``openvino`` or
            ``onnxruntime`` (an export folder).
        device: Where images are scored (``auto``: CUDA when available; the CPU for exports).
        precision: As the daemon's ``model.precision`` (``torch``): calibrate with the
            precision it serves (``auto``: its measured choice, cached in ``auto_cache_dir``).
        batch_size: Images per forward pass (``auto`` shares the daemon's cached choice when it
            equals its ``batcher.max_batch_size``).
        auto_cache_dir: As the daemon's ``model.auto_cache_dir``.
        allow_other_checkpoint: Accept JSONL lines of other checkpoints (same weights, other
            file: only the caller can know).
    """

    target_false_alarm_rate: float = Field(gt=0, lt=1)
    backend: Backend = "torch"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: ServedPrecision = "auto"
    batch_size: int = Field(default=8, ge=1)
    auto_cache_dir: Path | None = Field(default_factory=default_auto_cache_dir)
    allow_other_checkpoint: bool = False


class RecalibrationRecord(BaseModel):
    """One recalibration; the new model lists each in ``training["recalibrations"]``.

    Attributes:
        at: UTC time, ISO 8601.
        from_sha256: The input's SHA-256 (a checkpoint's, or an export's manifest's). Same
            weights: a later ``--scores`` takes its results as this model's.
        source: ``images`` or ``scores``.
        input: The good-image folder or the scores file.
        n_samples: Good images scored, or score lines used.
        target_false_alarm_rate: The rate asked for.
        pixel_refitted: ``False`` when the pixel threshold was kept (scores carry no maps).
        before: The calibration replaced (``None``: there was none).
        backend: The runtime that serves the model (and scored the images).
        precision: What it serves in (``None``: a record of an older version).
        refitted: ``int8`` when the thresholds replaced are the checkpoint's int8 record's
            (it serves from it), else ``calibration``.
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
    backend: Backend = "torch"
    precision: str | None = None
    refitted: Literal["calibration", "int8"] = "calibration"


class RecalibrationReport(RecalibrationRecord):
    """What ``inspector calibrate`` did: the record plus the outcome (``--json`` writes it).

    Attributes:
        checkpoint: Input checkpoint (or export folder).
        out: Written checkpoint (or export folder).
        out_sha256: Its SHA-256 (what the daemon's results will name).
        precision_reason: How ``auto`` (or ``int8``) decided the precision, ``; cached`` when
            read from the daemon's cache; ``None`` for an explicit fp32/bf16 or an export.
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
    precision_reason: str | None = None
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
        served = f"{self.backend} {self.precision}"
        if self.refitted == "int8":
            served += (
                " (the int8 record's thresholds; the fp32/bf16 ones kept: --precision fp32 "
                "refits them)"
            )
        return (
            f"wrote {self.out} (sha256 {self.out_sha256[:12]}) from {self.n_samples} "
            f"{'good image(s)' if self.source == 'images' else 'score line(s)'} in {self.input}"
            f", served as {served}: image threshold {change('image_threshold')}"
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
    """Re-fit the thresholds ``checkpoint_path`` serves with and write the result to ``out``.

    Images refit the image and pixel thresholds and both ranges (``good_only`` fitting, as
    ``inspector train``); scores refit the image threshold and range and keep the pixel ones.
    Which thresholds, and what is written: see the module's docstring.

    Args:
        checkpoint_path: The checkpoint, or the export folder (``config.backend`` openvino or
            onnxruntime); replaced only if ``out`` is the same path.
        out: Checkpoint (temporary file and rename: a reloading daemon never reads half a
            file) or export folder (written beside it, then swapped in) to write.
        config: Target rate, and the daemon's model settings.
        good: Folder of good images (not the training images: their scores are too low).
        scores: JSONL of ``inspector.result/v1`` messages (or ``{"raw_score": x}`` lines) of
            frames marked good. Exactly one of ``good`` and ``scores``.

    Returns:
        The report.

    Raises:
        ConfigError: Not exactly one input, an input that does not exist, scores for a
            model without calibration, or a device that is not available.
        DatasetError: No readable images; a scores file unreadable, empty or malformed.
        CalibrationError: Scores of another model, too few samples for the target, or the
            input changed while it was being calibrated.
        CheckpointError: The input cannot be loaded or the output cannot be written
            (``ExportError`` for exports, among them an ``out`` that is not an export folder).
    """
    # Before the model is loaded (and precision auto perhaps measured).
    check_inputs(good, scores)
    if config.backend != "torch":
        check_export_out(out)
    served = load_served(
        checkpoint_path,
        config.backend,
        device=config.device,
        precision=config.precision,
        batch_size=config.batch_size,
        auto_cache_dir=config.auto_cache_dir,
    )
    # A checkpoint served from its int8 record has the record's thresholds here (load_model).
    before = served.meta.calibration
    if scores is None:
        assert good is not None
        samples = score_good_images(served, good, config.batch_size)
    elif before is None:
        raise ConfigError(
            f"--scores: {checkpoint_path} has no calibration, and scores alone cannot fit its "
            "pixel threshold and map range; calibrate it from --good images"
        )
    else:
        samples = read_good_scores(
            scores,
            served,
            allow_other=config.allow_other_checkpoint,
            same_weights=_recalibrated_from(served.meta),
        )
    rate, n = config.target_false_alarm_rate, len(samples.scores)
    warnings = check_sample_count(n, rate, samples.where)
    for text in warnings:
        log.warning("%s", text)
    after = _fit(samples, before, rate)
    engine = served.engine
    # A checkpoint served in int8 runs its int8 record (on OpenVINO), with the record's
    # thresholds.
    int8_record = config.backend == "torch" and engine.precision == "int8"
    record = RecalibrationRecord(
        at=datetime.now(UTC).isoformat(),
        from_sha256=served.sha256,
        source=samples.source,
        input=str(samples.where),
        n_samples=n,
        target_false_alarm_rate=rate,
        pixel_refitted=samples.map_extremes is not None,
        before=before,
        backend=engine.backend,
        precision=engine.precision,
        refitted="int8" if int8_record else "calibration",
    )
    if config.backend == "torch":
        out_sha = _write_checkpoint(checkpoint_path, served, out, after, record, good)
    else:
        out_sha = _write_export(served, out, after, record)
    auto = served.auto
    reason = None if auto is None else auto.reason + ("; cached" if auto.cached else "")
    return RecalibrationReport(
        **dict(record),
        checkpoint=str(checkpoint_path),
        out=str(out),
        out_sha256=out_sha,
        n_unreadable=samples.n_unreadable,
        calibration_false_alarm_rate=float((samples.scores > after.image_threshold).mean()),
        false_alarm_rate_sd=math.sqrt(rate * (1 - rate) / n),
        after=after,
        precision_reason=reason,
        warnings=warnings,
    )


def _stamped(meta: CheckpointMeta, record: RecalibrationRecord) -> CheckpointMeta:
    """``meta`` with ``record`` appended to its history, dated and versioned now."""
    history = [*_history(meta), record.model_dump(mode="json")]
    return meta.model_copy(
        update={
            "training": {**meta.training, HISTORY_KEY: history},
            "created_at": record.at,
            "package_version": __version__,
        }
    )


def _changed(path: Path, scored: str, now: str) -> CalibrationError:
    return CalibrationError(
        f"{path} changed while it was being calibrated (sha256 {scored[:12]} scored, "
        f"{now[:12]} now); nothing was written: calibrate it again"
    )


def _write_checkpoint(
    path: Path,
    served: LoadedModel,
    out: Path,
    after: Calibration,
    record: RecalibrationRecord,
    good: Path | None,
) -> str:
    """Write the checkpoint with ``after`` in place of the thresholds it serves with.

    Calibrated from ``good`` images, its probe set is recorded anew from a few of them (a
    checkpoint written before probe sets gets one); from scores, the stored one is kept.
    """
    # Read again for what the served model does not carry: the stored int8 images and the
    # fp32 thresholds of a checkpoint served from its int8 record.
    source = load_checkpoint(path)
    if source.sha256 != served.sha256:
        raise _changed(path, served.sha256, source.sha256)
    meta = source.meta
    if record.refitted == "int8":
        assert meta.int8 is not None  # it served in int8 from this record
        meta = meta.model_copy(update={"int8": meta.int8.model_copy(update={"calibration": after})})
    else:
        meta = meta.model_copy(update={"calibration": after})
    # The extra tensors are the int8 record's images (precision auto re-creates the int8 model
    # from them, so they travel with the record) and the probe set's.
    extra = source.extra
    if good is not None:
        size = meta.model.image_size
        meta, extra = with_probes(
            meta, source.model, probe_images_from(good, size), "calibration", extra
        )
    return save_checkpoint(out, source.model, _stamped(meta, record), extra)


def _write_export(
    served: LoadedModel, out: Path, after: Calibration, record: RecalibrationRecord
) -> str:
    """Write the export anew at ``out`` with ``after``: same graph, fresh manifest digest."""
    export = load_manifest(served.path)  # verified again: the files copied are the ones scored
    if export.sha256 != served.sha256:
        raise _changed(served.path, served.sha256, export.sha256)
    meta = export.manifest.meta.model_copy(update={"calibration": after})
    return reseal_export(export, out, _stamped(meta, record))


def _history(meta: CheckpointMeta) -> list[Any]:
    """Earlier recalibrations as stored, to carry over (``training`` is free-form JSON)."""
    entries = meta.training.get(HISTORY_KEY)
    return list(entries) if isinstance(entries, list) else []


def _recalibrated_from(meta: CheckpointMeta) -> set[str]:
    """SHA-256 of each model the one with ``meta`` was recalibrated from (same weights)."""
    found = set()
    for entry in _history(meta):
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
