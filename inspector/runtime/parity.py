"""The parity check on load: a model must score its stored probe set as recorded.

Every model the daemon serves passes through :func:`check_parity` before it warms up
(:func:`~inspector.runtime.models.load_served_model`: start, SIGHUP, the state file, the control
API). The probe images stored with it (:mod:`inspector.model.probes`) go through its
:class:`~inspector.runtime.worker.ModelWorker` as frames do (preprocessing, backend, precision,
device), in one batch; each image's score, map maximum and map mean must lie within the
tolerance of that backend and precision (:data:`~inspector.model.probes.TOLERANCES`) of the
fp32 values recorded at training or calibration. An export, a quantization or a runtime that
changed the maps is refused with a :class:`~inspector.errors.ModelParityError`.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from inspector.checkpoint import CheckpointMeta
from inspector.errors import ModelParityError
from inspector.model.probes import compare, fingerprint, images_digest, tolerance_for
from inspector.runtime.ids import for_log
from inspector.runtime.metrics import Metrics
from inspector.runtime.worker import ModelWorker

log = logging.getLogger(__name__)

_RECORD = (
    "record a new probe set with `inspector calibrate --checkpoint FILE --good DIR` (or "
    "re-train), then export again"
)


def check_parity(
    name: str,
    path: Path,
    worker: ModelWorker,
    meta: CheckpointMeta,
    images: torch.Tensor | None,
    metrics: Metrics,
) -> None:
    """Score the probe set with ``worker`` and refuse a model whose values moved.

    Counts the outcome in ``inspector_model_parity_checks_total{result}``: ``passed``,
    ``refused``, or ``unchecked`` (a model written before probe sets: logged as a warning,
    served all the same). Run before the worker's warm-up, so its batch is not in the
    inference metrics.

    Args:
        name: The model's name (for messages).
        path: Its checkpoint or export folder (for messages).
        worker: The model as it will serve.
        meta: Its metadata (``meta.probes``: the recorded values).
        images: Its probe images, uint8 RGB ``(n, 3, H, W)`` at the model's input size, or
            ``None`` when it stores none.
        metrics: Where the outcome is counted.

    Raises:
        ModelParityError: A value differs by more than the tolerance, or the stored images
            are not those the record was made on.
    """
    fast = worker.fast
    served = f"{fast.backend} {fast.precision} on {worker.device}"
    what = f"model {for_log(name)} ({for_log(str(path))}, served as {served})"
    record = meta.probes
    if record is None or images is None:
        metrics.model_parity_checks.labels(result="unchecked").inc()
        why = (
            "has no probe set (written before inspector stored one)"
            if record is None
            else "has a probe set record but not its images (written by a tool that dropped them)"
        )
        log.warning(
            "%s %s: its maps cannot be checked against the fp32 model's; %s",
            what,
            why,
            _RECORD,
        )
        return
    t0 = time.perf_counter()
    size = tuple(worker.image_size)
    if images_digest(images) != record.images_sha256 or tuple(images.shape[2:]) != size:
        metrics.model_parity_checks.labels(result="refused").inc()
        raise ModelParityError(
            f"{what} refused: its stored probe images are not the ones its probe set was "
            f"recorded on (or not {size[0]}x{size[1]}); {_RECORD}"
        )
    measured = fingerprint(worker.infer(list(images)))
    tolerance = tolerance_for(fast.backend, fast.precision)
    worst = compare(record, measured, tolerance)
    seconds = time.perf_counter() - t0
    if not worst.passed:
        metrics.model_parity_checks.labels(result="refused").inc()
        raise ModelParityError(
            f"{what} refused by the parity check: {worst.describe()} (tolerance for "
            f"{fast.backend} {fast.precision}: {tolerance.absolute:g} + {tolerance.relative:g} "
            f"x |recorded|; probe set of {len(images)} image(s) recorded at {record.source} "
            f"with {record.recorded_with}): the model no longer computes the maps it was "
            "calibrated on. Re-export it from its checkpoint (`inspector export`), re-quantize "
            "it (`inspector quantize` / `export --int8`), or, if its weights changed on "
            f"purpose, {_RECORD}"
        )
    metrics.model_parity_checks.labels(result="passed").inc()
    log.info(
        "%s passed the parity check in %.2f s: %d probe image(s), worst %s",
        what,
        seconds,
        len(images),
        worst.describe(),
    )
