"""One-file checkpoints: safetensors tensors plus JSON metadata, verified on load.

The file holds every tensor of the model (the frozen encoder too, so inference never needs
ImageNet weights) and, in the safetensors header's metadata, the model config, calibration,
preprocessing, a training summary, the package version and the creation time. Loading never
unpickles anything. A SHA-256 digest over tensors and metadata is stored alongside, so a
truncated or edited file is refused instead of producing silently wrong scores.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from inspector import __version__
from inspector.errors import CheckpointError, CheckpointFileError
from inspector.model import ReverseDistillation
from inspector.model.calibration import Calibration
from inspector.model.config import ArchitectureConfig
from inspector.model.preprocess import Preprocessing
from inspector.model.probes import ProbeSet
from inspector.regular_files import open_regular

FORMAT: Literal["inspector.checkpoint/v1"] = "inspector.checkpoint/v1"
_META_KEY = "inspector"
_DIGEST_KEY = "inspector_sha256"
#: safetensors' own limit on the JSON header (its ``MAX_HEADER_SIZE``).
_MAX_HEADER_BYTES = 100_000_000
_REMAKE = "re-copy it or re-create it with `inspector train` / `inspector import-anomalib`"


class QuantizationReport(BaseModel):
    """How an int8 model was made and how far it is from fp32, on held-out data.

    Attributes:
        method: The quantizer (e.g. ``nncf.quantize``) and its settings.
        calibration_images: Good images the activation ranges were fitted on.
        held_out_images: Images the guard compared on (not used for calibration).
        max_map_difference: Largest absolute difference of a raw map value, int8 vs fp32.
        score_correlation: Pearson correlation of raw image scores, int8 vs fp32.
        metrics: Per metric (``image_auroc``, ``pixel_auroc``, ``aupro``): ``{"fp32": .,
            "int8": .}`` on the held-out set; empty when it had no anomalous images.
        tolerance: The largest drop of any metric the guard accepts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: str
    calibration_images: int
    held_out_images: int
    max_map_difference: float
    score_correlation: float
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    tolerance: float


class Int8Record(BaseModel):
    """An int8 variant a checkpoint can be served as (``inspector quantize``).

    The good images it was calibrated and checked on are stored as tensors beside the model
    (:data:`INT8_CALIBRATION`, :data:`INT8_HELD_OUT`), so ``precision: auto`` re-creates the
    same int8 model on any machine and checks it against the recorded difference.

    Attributes:
        backend: The runtime whose int8 kernels run it.
        guard: The accuracy guard's figures when it was made.
        calibration: The thresholds re-fitted to the int8 model's scores.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["openvino"] = "openvino"
    guard: QuantizationReport
    calibration: Calibration | None


#: Tensors of the good images an int8 variant was calibrated / checked on: uint8 RGB
#: ``(n, 3, H, W)`` at the model's input size.
INT8_CALIBRATION = "int8.calibration_images"
INT8_HELD_OUT = "int8.held_out_images"
#: The probe set's images (:mod:`inspector.model.probes`): uint8 RGB ``(n, 3, H, W)`` at the
#: model's input size, recorded by ``CheckpointMeta.probes``.
PROBE_IMAGES = "probes.images"
_EXTRA_PREFIXES = ("int8.", "probes.")


class CheckpointMeta(BaseModel):
    """Everything in a checkpoint besides tensors.

    Attributes:
        format: File format tag, ``inspector.checkpoint/v1``.
        name: Human-readable model name (shown in results and metrics).
        model: Architecture.
        calibration: Thresholds and normalisation; ``None`` for an uncalibrated model.
        preprocessing: Input transform.
        training: Free-form summary of the training run (data, epochs, losses, seed...).
        int8: An int8 variant's record (``inspector quantize``), or ``None``.
        probes: The probe set's recorded fp32 values (its images: :data:`PROBE_IMAGES`), which
            every load compares the served model with; ``None`` in files written before it.
        package_version: inspector version that wrote the file.
        created_at: UTC creation time, ISO 8601.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["inspector.checkpoint/v1"] = FORMAT
    name: str
    model: ArchitectureConfig
    calibration: Calibration | None = None
    preprocessing: Preprocessing = Field(default_factory=Preprocessing)
    training: dict[str, Any] = Field(default_factory=dict)
    int8: Int8Record | None = None
    probes: ProbeSet | None = None
    package_version: str = __version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A verified checkpoint.

    Attributes:
        model: The model in eval mode on the CPU.
        meta: Its metadata.
        sha256: SHA-256 of the file's bytes (identifies the exact model in results).
        path: Where it was read from.
        extra: Tensors stored beside the model (:data:`INT8_CALIBRATION`, :data:`PROBE_IMAGES`).
    """

    model: ReverseDistillation
    meta: CheckpointMeta
    sha256: str
    path: Path
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _digest(tensors: dict[str, torch.Tensor], meta_json: str) -> str:
    h = hashlib.sha256(meta_json.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(
    path: Path,
    model: ReverseDistillation,
    meta: CheckpointMeta,
    extra: dict[str, torch.Tensor] | None = None,
) -> str:
    """Write ``model`` and ``meta`` to ``path`` atomically.

    Args:
        path: Destination file (parent folders are created).
        model: The model; its config must equal ``meta.model``.
        meta: Metadata to store.
        extra: Tensors to store beside the model's, named ``int8.*`` or ``probes.*``.

    Returns:
        The SHA-256 of the written file.

    Raises:
        CheckpointError: The model and metadata disagree, or the file cannot be written.
    """
    if model.config != meta.model:
        raise CheckpointError("model config and checkpoint metadata disagree; refusing to save")
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for name, tensor in (extra or {}).items():
        if not name.startswith(_EXTRA_PREFIXES):
            raise CheckpointError(
                f"extra tensor {name!r} must be named "
                f"{' or '.join(prefix + '*' for prefix in _EXTRA_PREFIXES)}"
            )
        tensors[name] = tensor.detach().contiguous().cpu()
    meta_json = meta.model_dump_json()
    data = st_save(
        tensors, metadata={_META_KEY: meta_json, _DIGEST_KEY: _digest(tensors, meta_json)}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Write to a temporary file and rename, so a crash never leaves a half-written checkpoint
    # where the daemon would pick it up.
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc
    try:
        # mkstemp creates 0600 whatever the umask; a daemon running as another user must be able
        # to read the model.
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # a power cut must not leave an empty file under the real name
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc}") from exc
    return hashlib.sha256(data).hexdigest()


def _refusal(path: Path, why: str) -> CheckpointFileError:
    return CheckpointFileError(f"{path} is not a readable checkpoint: {why}; {_REMAKE}")


def _check_layout(path: Path, fh: BinaryIO, size: int) -> None:
    """Refuse a header that declares more than the file holds, before reading any tensor.

    Raises:
        CheckpointFileError: Too short, a header length past the end of the file, or a tensor
            whose ``data_offsets`` end past it.
    """
    if size < 8:
        raise _refusal(path, f"{size} bytes, shorter than the 8-byte header length")
    header_len = int.from_bytes(fh.read(8), "little")
    if header_len > min(size - 8, _MAX_HEADER_BYTES):
        raise _refusal(
            path,
            f"its header declares {header_len} bytes but the file holds {size - 8} after the "
            "length field (truncated, or not a safetensors file)",
        )
    try:
        header = json.loads(fh.read(header_len))
    except (ValueError, UnicodeDecodeError):
        return  # not JSON: `st_load` refuses it with its own reason, from what was read
    data_len = size - 8 - header_len
    for name, entry in header.items() if isinstance(header, dict) else ():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            continue  # malformed: `st_load` refuses it with its own reason
        begin, end = offsets
        if isinstance(end, int) and end > data_len:
            raise _refusal(
                path,
                f"its header places tensor {name!r} at bytes {begin}..{end} of the tensor "
                f"data, but the file holds {data_len} bytes of it (truncated, or a forged "
                "header)",
            )


def _read_checked(path: Path) -> bytes:
    """The bytes of a checkpoint file that is a regular file whose header fits it.

    Raises:
        CheckpointError: It cannot be opened or read.
        CheckpointFileError: Not a regular file, or its header declares more than it holds.
    """
    try:
        fh, size = open_regular(path, CheckpointFileError, "checkpoint")
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    with fh:
        try:
            _check_layout(path, fh, size)
            fh.seek(0)
            # At most the size fstat gave: a file that grows meanwhile is not read on and on.
            return fh.read(size)
        except OSError as exc:
            raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read and verify a checkpoint; never unpickles.

    Only a regular file is read (symlinks are followed), and only after its header was checked
    against its size: ``/dev/zero``, a FIFO, a directory or a header claiming a terabyte is
    refused before any tensor is read.

    Args:
        path: A file written by :func:`save_checkpoint`.

    Returns:
        The model (eval mode, CPU), its metadata and the file's SHA-256.

    Raises:
        CheckpointFileError: Not a regular file, or a header that declares more than the file
            holds (exit code 2).
        CheckpointError: Missing, truncated, tampered with, or not matching its own config.
    """
    data = _read_checked(path)
    # One open file: tensors, metadata and the file's SHA-256 come from the same bytes. With
    # `safe_open(path).metadata()` they would come from two opens of a path that a deploy's
    # atomic replace can swap in between (the reported model hash would not be the model run),
    # and safetensors reads metadata from a path only; the header is the format's 8-byte length
    # and JSON, which `st_load` has just validated.
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or not a safetensors file: {exc}); "
            f"{_REMAKE}"
        ) from exc
    stored = header.get("__metadata__") or {}
    meta_json, digest = stored.get(_META_KEY), stored.get(_DIGEST_KEY)
    if meta_json is None or digest is None:
        raise CheckpointError(
            f"{path} is a safetensors file but not an inspector checkpoint (no metadata); "
            "convert anomalib checkpoints with `inspector import-anomalib`"
        )
    if _digest(tensors, meta_json) != digest:
        raise CheckpointError(
            f"{path} failed its integrity check: tensors or metadata were modified after it was "
            "written; do not use it, re-create it from the training run"
        )
    try:
        meta = CheckpointMeta.model_validate_json(meta_json)
    except ValidationError as exc:
        raise CheckpointError(f"{path} has invalid metadata: {exc}") from exc
    model = ReverseDistillation(meta.model)
    extra = {k: tensors.pop(k) for k in list(tensors) if k.startswith(_EXTRA_PREFIXES)}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{path}: tensors do not match its model config ({meta.model.backbone}): {exc}"
        ) from exc
    model.eval()
    return LoadedCheckpoint(model, meta, hashlib.sha256(data).hexdigest(), path, extra)
