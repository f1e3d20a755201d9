"""Exported models on disk: a folder with the graph and a manifest that pins it.

An export is a folder that an inference server can take as it is (Triton's ``model.onnx``,
OpenVINO Model Server's ``model.xml``/``model.bin``) plus ``inspector-export.json``: the source
checkpoint's metadata (architecture, preprocessing, calibration: for int8, the thresholds
re-fitted on the int8 model), the SHA-256 of every file, the quantization report, and a digest
of the manifest itself. The same metadata is embedded in the graph (ONNX ``metadata_props``,
OpenVINO ``rt_info``), so a server that sees only the graph still has the normalisation and
thresholds; loading checks that both say the same.

The checkpoint's probe set goes with it: its recorded values in ``meta.probes``, its images in
``probes.safetensors`` (digested in ``files`` like the graph's), so the daemon checks an
export's maps on load as it checks a checkpoint's (:mod:`inspector.runtime.parity`).

Like a checkpoint, an export is verified before it serves: a changed byte in any file, or an
edited manifest, is refused. Its identity in results (``model.checkpoint_sha256``) is the
manifest's SHA-256, which covers every file through their digests.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from inspector import __version__
from inspector.checkpoint import CheckpointMeta, QuantizationReport
from inspector.errors import ExportError
from inspector.regular_files import open_regular, read_regular

MANIFEST = "inspector-export.json"
FORMAT: Literal["inspector.export/v1"] = "inspector.export/v1"
#: The graph's input and outputs, by name.
INPUT = "images"
OUTPUTS = ("anomaly_map", "pred_score")
#: Key of the checkpoint metadata embedded in the graph.
META_KEY = "inspector"
#: A manifest larger than this is not one (it holds a few kB of JSON).
_MAX_MANIFEST_BYTES = 4 * 1024 * 1024
GraphFormat = Literal["onnx", "openvino"]
#: The files of each graph format, the first one being the graph a runtime opens.
GRAPH_FILES: dict[GraphFormat, tuple[str, ...]] = {
    "onnx": ("model.onnx",),
    "openvino": ("model.xml", "model.bin"),
}
#: The probe set's images beside the graph (``meta.probes`` records their values): a
#: safetensors file with one uint8 tensor, :data:`PROBE_TENSOR`. Digested in ``files`` like
#: the graph's; absent from exports of checkpoints without a probe set.
PROBES_FILE = "probes.safetensors"
PROBE_TENSOR = "images"
#: A probe file larger than this is not one (4 images at 1024 px are 12 MiB).
_MAX_PROBES_BYTES = 64 * 1024 * 1024


class ExportManifest(BaseModel):
    """``inspector-export.json``.

    Attributes:
        format: ``inspector.export/v1``.
        graph_format: ``onnx`` or ``openvino`` (IR).
        precision: ``fp32`` or ``int8`` (weights and activations of the network; the anomaly
            map, upsampling and blur stay fp32).
        files: SHA-256 of each file of the graph, by name.
        meta: The source checkpoint's metadata; for int8 its calibration re-fitted on the int8
            model's scores.
        source_checkpoint_sha256: The checkpoint it was exported from.
        quantization: For int8: how, and the accuracy guard's figures.
        package_version: inspector version that wrote it.
        created_at: UTC time, ISO 8601.
        digest: SHA-256 of this manifest's other fields (edits are refused).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["inspector.export/v1"] = FORMAT
    graph_format: GraphFormat
    precision: Literal["fp32", "int8"]
    files: dict[str, str]
    meta: CheckpointMeta
    source_checkpoint_sha256: str
    quantization: QuantizationReport | None = None
    package_version: str = __version__
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat())
    digest: str = ""

    def content_digest(self) -> str:
        """SHA-256 of every field but :attr:`digest`, as canonical JSON."""
        fields = self.model_dump(mode="json", exclude={"digest"})
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class LoadedExport:
    """A verified export.

    Attributes:
        folder: Where it is.
        manifest: Its manifest.
        sha256: SHA-256 of the manifest file (the export's identity in results).
        graph: The file a runtime opens (``model.onnx`` or ``model.xml``).
    """

    folder: Path
    manifest: ExportManifest
    sha256: str
    graph: Path


def is_export(path: Path) -> bool:
    """Whether ``path`` is an export folder (or its manifest) rather than a checkpoint."""
    return path.name == MANIFEST or (path.is_dir() and (path / MANIFEST).is_file())


def file_sha256(path: Path) -> str:
    """SHA-256 of a regular file, read in blocks up to the size it had when opened.

    Raises:
        OSError: It cannot be opened or read.
        ExportError: Not a regular file (a directory, FIFO or device: never read).
    """
    h = hashlib.sha256()
    fh, left = open_regular(path, ExportError, "graph file")
    with fh:
        # Bounded by the size at opening: a file that grows meanwhile is not read on and on
        # (its digest then differs from the manifest's, and it is refused).
        while left > 0 and (block := fh.read(min(left, 1 << 20))):
            h.update(block)
            left -= len(block)
    return h.hexdigest()


def write_manifest(folder: Path, manifest: ExportManifest) -> str:
    """Digest the graph's files, seal and write the manifest atomically; return its SHA-256.

    Raises:
        ExportError: A graph file is missing or the manifest cannot be written.
    """
    files = {}
    names = GRAPH_FILES[manifest.graph_format]
    if (folder / PROBES_FILE).is_file():
        names = (*names, PROBES_FILE)
    for name in names:
        try:
            files[name] = file_sha256(folder / name)
        except OSError as exc:
            raise ExportError(f"cannot read {folder / name} to digest it: {exc}") from exc
    sealed = manifest.model_copy(update={"files": files})
    sealed = sealed.model_copy(update={"digest": sealed.content_digest()})
    data = sealed.model_dump_json(indent=2).encode()
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{MANIFEST}.", suffix=".tmp")
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / MANIFEST)
    except OSError as exc:
        raise ExportError(f"cannot write {folder / MANIFEST}: {exc}") from exc
    return hashlib.sha256(data).hexdigest()


def load_manifest(path: Path) -> LoadedExport:
    """Read an export's manifest and verify it and every file it names.

    Args:
        path: The export folder, or its ``inspector-export.json``.

    Raises:
        ExportError: Not an export, unreadable, edited, or a file changed or missing.
    """
    folder = path.parent if path.name == MANIFEST else path
    manifest_path = folder / MANIFEST
    hint = "re-create it with `inspector export`"
    if not manifest_path.exists():
        raise ExportError(
            f"{folder} is not an exported model (no {MANIFEST}); "
            "pass a checkpoint with model.backend: torch, or an `inspector export` folder"
        )
    try:
        data = read_regular(manifest_path, ExportError, "manifest", _MAX_MANIFEST_BYTES)
        manifest = ExportManifest.model_validate_json(data)
    except OSError as exc:
        raise ExportError(f"cannot read {manifest_path}: {exc.strerror or exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(root)"
        raise ExportError(
            f"{manifest_path}: invalid manifest at {where}: {first['msg']}; {hint}"
        ) from None
    if manifest.digest != manifest.content_digest():
        raise ExportError(
            f"{manifest_path} failed its integrity check: the manifest was edited after export; "
            f"do not use it, {hint}"
        )
    expected = GRAPH_FILES[manifest.graph_format]
    if set(manifest.files) - {PROBES_FILE} != set(expected):
        raise ExportError(f"{manifest_path} names files {sorted(manifest.files)}, not {expected}")
    for name, digest in manifest.files.items():
        file = folder / name
        try:
            actual = file_sha256(file)
        except FileNotFoundError:
            raise ExportError(f"{file} is missing (named in {manifest_path}); {hint}") from None
        except ExportError as exc:  # not a regular file: say which manifest lists it
            raise ExportError(f"{exc} (named in {manifest_path})") from None
        except OSError as exc:
            raise ExportError(
                f"cannot read {file} (named in {manifest_path}): {exc.strerror or exc}"
            ) from exc
        if actual != digest:
            raise ExportError(
                f"{file} failed its integrity check (its SHA-256 is not the manifest's): it was "
                f"modified or truncated after export; do not use it, {hint}"
            )
    return LoadedExport(folder, manifest, hashlib.sha256(data).hexdigest(), folder / expected[0])


def check_embedded_meta(export: LoadedExport, embedded: str | None) -> None:
    """Refuse a graph whose embedded metadata is not its manifest's.

    Raises:
        ExportError: Missing or different.
    """
    if embedded is None:
        raise ExportError(
            f"{export.graph} carries no inspector metadata: not written by `inspector export`"
        )
    try:
        same = CheckpointMeta.model_validate_json(embedded) == export.manifest.meta
    except ValidationError:
        same = False
    if not same:
        raise ExportError(
            f"{export.graph}: the metadata embedded in the graph does not match "
            f"{export.folder / MANIFEST}; re-create the export with `inspector export`"
        )


def check_io(export: LoadedExport, inputs: dict[str, list[int | None]], outputs: set[str]) -> None:
    """Refuse a graph whose input or outputs are not what its metadata says.

    Args:
        export: The export.
        inputs: The graph's inputs: name -> shape (``None`` for a dynamic dimension).
        outputs: The graph's output names.

    Raises:
        ExportError: Another input name or shape, or missing outputs.
    """
    h, w = export.manifest.meta.model.image_size
    shape = inputs.get(INPUT)
    if list(inputs) != [INPUT] or shape is None or shape[1:] != [3, h, w]:
        raise ExportError(
            f"{export.graph}: the graph's input is {inputs}, but its metadata says "
            f"{INPUT} (N, 3, {h}, {w}); re-create the export with `inspector export`"
        )
    if not set(OUTPUTS) <= outputs:
        raise ExportError(
            f"{export.graph}: the graph's outputs are {sorted(outputs)}, not {list(OUTPUTS)}"
        )


def embedded_meta_json(meta: CheckpointMeta) -> str:
    """The metadata as embedded in a graph (the manifest's ``meta``)."""
    return meta.model_dump_json()


def write_probe_images(folder: Path, images: torch.Tensor) -> None:
    """Write the probe images ``(n, 3, H, W)`` uint8 as :data:`PROBES_FILE` in ``folder``.

    Raises:
        ExportError: It cannot be written.
    """
    data = st_save({PROBE_TENSOR: images.detach().contiguous().cpu()})
    try:
        (folder / PROBES_FILE).write_bytes(data)
    except OSError as exc:
        raise ExportError(f"cannot write {folder / PROBES_FILE}: {exc}") from exc


def load_probe_images(export: LoadedExport) -> torch.Tensor | None:
    """The export's probe images, uint8 ``(n, 3, H, W)``; ``None`` when it has none.

    The bytes read are checked against the manifest's digest (not the file as it was when
    the manifest was verified: it could have been replaced since).

    Raises:
        ExportError: Unreadable, not the file the manifest digested, or not one uint8 tensor.
    """
    digest = export.manifest.files.get(PROBES_FILE)
    if digest is None:
        return None
    path = export.folder / PROBES_FILE
    hint = "re-create the export with `inspector export`"
    try:
        data = read_regular(path, ExportError, "probe file", _MAX_PROBES_BYTES)
    except OSError as exc:
        raise ExportError(f"cannot read {path}: {exc.strerror or exc}; {hint}") from exc
    if hashlib.sha256(data).hexdigest() != digest:
        raise ExportError(f"{path} failed its integrity check (not the manifest's); {hint}")
    try:
        images = st_load(data).get(PROBE_TENSOR)
    except SafetensorError as exc:
        raise ExportError(f"{path} is not a readable probe file: {exc}; {hint}") from exc
    if images is None or images.dtype != torch.uint8 or images.dim() != 4:
        raise ExportError(f"{path} holds no uint8 tensor {PROBE_TENSOR!r} (n, 3, H, W); {hint}")
    return images
