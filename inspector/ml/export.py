"""``inspector export``: a checkpoint as an ONNX or OpenVINO graph, fp32 or int8, verified.

The graph is the whole model (:class:`~inspector.model.engine.ExportGraph`): encoder, bottleneck,
decoder, ``1 - cos`` per layer, upsampling, sum and blur, with images ``(N, 3, H, W)`` in and
``anomaly_map`` ``(N, 1, H, W)`` and ``pred_score`` ``(N,)`` out. Normalisation statistics and
thresholds travel in its metadata and in the manifest (:mod:`inspector.backends.manifest`).

int8 (``--int8``): NNCF's post-training quantization, static, on good images that the
checkpoint's own preprocessing turns into model input. The anomaly map, upsampling and blur
stay fp32 (they are left out of quantization by scope). An accuracy guard
(:mod:`inspector.ml.int8_guard`) compares the int8 graph with the fp32 one on held-out images
and refuses the export when it loses accuracy; the thresholds are re-fitted to the int8 scores.
"""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspector.backends import engine_for_export, load_model
from inspector.backends.convert import method_line, openvino_model, quantize_openvino, require
from inspector.backends.manifest import (
    GRAPH_FILES,
    INPUT,
    META_KEY,
    OUTPUTS,
    ExportManifest,
    GraphFormat,
    LoadedExport,
    embedded_meta_json,
    is_export,
    load_manifest,
    write_manifest,
    write_probe_images,
)
from inspector.checkpoint import PROBE_IMAGES, CheckpointMeta, load_checkpoint
from inspector.errors import ExportError
from inspector.ml.int8_guard import GuardData, Int8Settings, guard_data, run_guard
from inspector.model.engine import Backend, ExportGraph

log = logging.getLogger(__name__)

INSTALL = "pip install 'inspector[export]'"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote.

    Attributes:
        folder: The export.
        sha256: Its manifest's SHA-256 (its ``checkpoint_sha256`` in results).
        manifest: The manifest.
    """

    folder: Path
    sha256: str
    manifest: ExportManifest


def _require(module: str) -> Any:
    return require(module, INSTALL)


def _check_out(out: Path) -> None:
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or is_export(out))):
        raise ExportError(
            f"--out {out} exists and is not an export folder; choose a new folder (an existing "
            "export there is replaced)"
        )


def write_graph(graph: ExportGraph, fmt: GraphFormat, folder: Path, meta: CheckpointMeta) -> None:
    """Write the fp32 graph with its embedded metadata into ``folder`` (no manifest).

    Args:
        graph: The model as one graph, on the CPU in eval mode.
        fmt: ``onnx`` or ``openvino``.
        folder: An existing, empty folder.
        meta: Embedded in the graph.

    Raises:
        BackendUnavailableError: The exporter's package is missing.
    """
    if fmt == "openvino":
        ov = _require("openvino")
        converted = openvino_model(graph.model, meta, INSTALL)
        ov.save_model(converted, str(folder / GRAPH_FILES["openvino"][0]), compress_to_fp16=False)
        return
    h, w = meta.model.image_size
    example = torch.zeros(1, 3, h, w)
    onnx = _require("onnx")
    _require("onnxscript")  # torch's dynamo exporter
    path = folder / GRAPH_FILES["onnx"][0]
    # The exporter prints its progress on stdout and logs each graph pass: the command's output
    # is its summary.
    for noisy in ("onnx_ir", "onnxscript"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            input_names=[INPUT],
            output_names=list(OUTPUTS),
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            dynamo=True,
            external_data=False,  # one file (a model under ONNX's 2 GB limit)
            verbose=False,
        )
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, {META_KEY: embedded_meta_json(meta)})
    onnx.save(proto, str(path))


def _quantize(fmt: GraphFormat, fp32: Path, int8: Path, data: GuardData, meta: Any) -> str:
    """NNCF post-training quantization of ``fp32``'s graph into ``int8``; returns the method."""
    if fmt == "openvino":
        ov = _require("openvino")
        model = ov.Core().read_model(str(fp32 / GRAPH_FILES["openvino"][0]))
        quantized, method = quantize_openvino(model, data.calibration.numpy(), meta, INSTALL)
        ov.save_model(quantized, str(int8 / GRAPH_FILES["openvino"][0]), compress_to_fp16=False)
        return method
    nncf = _require("nncf")
    logging.getLogger("nncf").setLevel(logging.WARNING)
    items = [x[None] for x in data.calibration.numpy()]
    # onnxruntime takes a feed by input name.
    dataset = nncf.Dataset(items, lambda x: {INPUT: x})
    kwargs: dict[str, Any] = {
        "subset_size": len(data.calibration),
        "preset": nncf.QuantizationPreset.PERFORMANCE,
    }
    onnx = _require("onnx")
    proto = onnx.load(str(fp32 / GRAPH_FILES["onnx"][0]))
    # The dynamo exporter names nodes by op, not by module: what follows the decoder's last
    # ReLU is the anomaly map's (norms, upsampling, blur).
    scope = nncf.IgnoredScope(names=_onnx_map_nodes(proto), validate=False)
    quantized = nncf.quantize(proto, dataset, ignored_scope=scope, **kwargs)
    onnx.helper.set_model_props(quantized, {META_KEY: embedded_meta_json(meta)})
    onnx.save(quantized, str(int8 / GRAPH_FILES["onnx"][0]))
    return method_line(nncf.__version__, len(data.calibration))


def _onnx_map_nodes(proto: Any) -> list[str]:
    """Names of the ONNX nodes after the last Relu (the map's ops: norms, upsampling, blur)."""
    nodes = list(proto.graph.node)
    last_relu = max(i for i, n in enumerate(nodes) if n.op_type == "Relu")
    return [n.name for n in nodes[last_relu + 1 :] if n.name]


def export_model(
    checkpoint: Path,
    out: Path,
    fmt: GraphFormat,
    *,
    int8: Int8Settings | None = None,
) -> ExportResult:
    """Export ``checkpoint`` to ``out``; with ``int8``, quantize and guard accuracy.

    Args:
        checkpoint: The safetensors checkpoint.
        out: The export folder (created; an export already there is replaced).
        fmt: ``onnx`` or ``openvino``.
        int8: Quantize with NNCF, with these calibration images and guard; ``None``: fp32.

    Raises:
        ExportError: ``out`` is not free, or the int8 model failed the guard.
        ConfigError: ``--int8`` without ``--good``, or ``--good`` without images.
        BackendUnavailableError: The exporter's packages are missing.
    """
    _check_out(out)
    loaded = load_checkpoint(checkpoint)
    meta = loaded.meta
    graph = ExportGraph(loaded.model).eval()
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        fp32 = work / "fp32"
        fp32.mkdir()
        write_graph(graph, fmt, fp32, meta)
        probes = loaded.extra.get(PROBE_IMAGES)
        if probes is not None:  # meta.probes records their values; every load checks them
            write_probe_images(fp32, probes)
        manifest = ExportManifest(
            graph_format=fmt,
            precision="fp32",
            files={},
            meta=meta,
            source_checkpoint_sha256=loaded.sha256,
        )
        write_manifest(fp32, manifest)
        final = fp32
        if int8 is not None:
            data = guard_data(int8, meta)
            final = work / "int8"
            final.mkdir()
            method = _quantize(fmt, fp32, final, data, meta)
            if probes is not None:
                write_probe_images(final, probes)
            backend: Backend = "openvino" if fmt == "openvino" else "onnxruntime"
            graph_file = GRAPH_FILES[fmt][0]
            cpu = torch.device("cpu")
            unsealed = LoadedExport(
                final, manifest.model_copy(update={"precision": "int8"}), "", final / graph_file
            )
            report, calibration = run_guard(
                load_model(fp32, backend, cpu).engine,
                engine_for_export(unsealed, backend),
                data,
                meta,
                method=method,
                tolerance=int8.tolerance,
            )
            int8_meta = meta.model_copy(update={"calibration": calibration})
            # The embedded metadata must be the manifest's: rewrite it with the new thresholds.
            _embed(final, fmt, int8_meta)
            manifest = manifest.model_copy(
                update={"precision": "int8", "meta": int8_meta, "quantization": report}
            )
        sha = write_manifest(final, manifest)
        if out.exists():
            shutil.rmtree(out)
        final.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    written = load_manifest(out)
    return ExportResult(out, sha, written.manifest)


def _embed(folder: Path, fmt: GraphFormat, meta: CheckpointMeta) -> None:
    """Replace the metadata embedded in ``folder``'s graph."""
    if fmt == "openvino":
        ov = _require("openvino")
        xml = folder / GRAPH_FILES["openvino"][0]
        model = ov.Core().read_model(str(xml))
        model.set_rt_info(embedded_meta_json(meta), [META_KEY, "meta"])
        tmp = folder / "tmp"
        tmp.mkdir()
        ov.save_model(model, str(tmp / xml.name), compress_to_fp16=False)
        del model
        for name in GRAPH_FILES["openvino"]:
            (tmp / name).replace(folder / name)
        tmp.rmdir()
        return
    onnx = _require("onnx")
    path = folder / GRAPH_FILES["onnx"][0]
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {META_KEY: embedded_meta_json(meta)})
    onnx.save(proto, str(path))


def map_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference of two arrays of maps."""
    return float(np.abs(a - b).max()) if a.size else 0.0
