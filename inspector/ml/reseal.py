"""An export written anew with other metadata: the same graph, a fresh manifest digest.

What ``inspector calibrate`` writes for an export (``--backend openvino|onnxruntime``): the
graph's files are copied unchanged but for the metadata embedded in them (which loading
compares with the manifest's), and the manifest is sealed again, so the new folder is verified
like any export and its results name the new manifest's SHA-256.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

from inspector import __version__
from inspector.backends.manifest import (
    GRAPH_FILES,
    PROBES_FILE,
    LoadedExport,
    is_export,
    write_manifest,
)
from inspector.checkpoint import CheckpointMeta
from inspector.errors import ExportError


def check_export_out(out: Path) -> None:
    """Refuse an ``out`` that is neither free nor an export (an export there is replaced).

    Raises:
        ExportError: ``out`` is a file, or a folder with something else in it.
    """
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_export(out))):
        raise ExportError(
            f"--out {out} exists and is not an export folder; choose a new folder (an existing "
            "export there, the input included, is replaced)"
        )


def reseal_export(export: LoadedExport, out: Path, meta: CheckpointMeta) -> str:
    """Write ``export`` at ``out`` with ``meta`` in its manifest and graph; return its SHA-256.

    Written in a folder beside ``out`` and renamed into place, so a daemon never reads a half
    written export; an export already at ``out`` (``export`` itself included) is replaced.

    Args:
        export: A verified export.
        out: The folder to write.
        meta: The metadata (the same architecture and preprocessing: the graph is unchanged).

    Raises:
        ExportError: ``out`` is not free, or the export cannot be written.
        BackendUnavailableError: The graph format's package (to rewrite its metadata) is
            missing.
    """
    from inspector.ml.export import _embed  # the one writer of the graph's embedded metadata

    check_export_out(out)
    manifest = export.manifest.model_copy(
        update={
            "meta": meta,
            "created_at": datetime.now(UTC).isoformat(),
            "package_version": __version__,
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        # The graph's files, and the probe images its metadata's probe set records.
        for name in (
            *GRAPH_FILES[manifest.graph_format],
            *(set(export.manifest.files) & {PROBES_FILE}),
        ):
            shutil.copyfile(export.folder / name, work / name)
        # Loading refuses a graph whose embedded metadata is not its manifest's.
        _embed(work, manifest.graph_format, meta)
        sha = write_manifest(work, manifest)
        work.chmod(0o755)  # mkdtemp's 0700 would hide it from a daemon running as another user
        if out.exists():
            # Two renames: the moment without an export at `out` is as short as it gets.
            old = out.with_name(f".{out.name}.replaced-{uuid.uuid4().hex[:8]}")
            out.rename(old)
            work.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            work.rename(out)
    except OSError as exc:
        raise ExportError(f"cannot write the export {out}: {exc}") from exc
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sha
