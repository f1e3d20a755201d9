"""anomalib's Reverse Distillation exported by anomalib's own code, and runners for its graphs.

The peers of ``inspector bench --compare`` (:mod:`inspector.tools.benchmark.peers`) are what an
anomalib user deploys: the Lightning ``ReverseDistillation`` module's own ``to_onnx`` and
``to_openvino`` (with ``CompressionType.INT8_PTQ`` and a real ``anomalib.data.Folder``
datamodule for int8, which is anomalib's ``_post_training_quantization_ov``:
``nncf.quantize(model, nncf.Dataset(val_dataloader, lambda x: x["image"]))``).

Those graphs hold anomalib's pre-processing (resize, ImageNet normalisation) and
post-processing, so they take what anomalib's inferencers feed them: RGB float in 0..1 at the
input size. The post-processor is anomalib's ``PostProcessor`` with normalisation off: an
untrained module has no min/max statistics (NaN), and with them off the graph returns the raw
map and score, comparable to the eager model's and to ours. Normalisation is an element-wise
min-max over the map, negligible in time; thresholding stays in the graph.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from inspector.errors import ConfigError
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.model.records import InferenceBatch
from inspector.tools.benchmark.timing import Batch

#: What the graphs' ``anomaly_map`` output is (stated in the result).
GRAPH_MAP = (
    "raw: anomalib PostProcessor(enable_normalization=False), input RGB float 0..1 at the "
    "input size (anomalib's Resize and Normalize inside the graph)"
)
#: What ``nncf.Dataset`` iterates for anomalib's int8 (stated in the result).
INT8_CALIBRATION = (
    "ReverseDistillation.to_openvino(compression_type=INT8_PTQ, datamodule=anomalib.data.Folder"
    " over synthetic good images, val split from train/good): anomalib's "
    "_post_training_quantization_ov, nncf.quantize with NNCF's defaults"
)
#: Output names of anomalib's graphs that the benchmark reads.
OUTPUTS = ("anomaly_map", "pred_score")


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Keep the exporters' progress lines and known warnings out of the benchmark's output.

    torch's ONNX exporter prints its passes on stdout and logs that it exports opset 18 where
    anomalib asks for 14; onnxscript then logs a traceback when it cannot down-convert (it
    keeps the model as exported, which is what anomalib's users get too).
    """
    names = ("torch.onnx", "onnxscript", "onnx_ir", "nncf")
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def build_module(backbone: str, size: tuple[int, int], seed: int) -> Any:
    """The Lightning ``ReverseDistillation`` of anomalib, with seeded random weights, in eval mode.

    Raises:
        ConfigError: anomalib is not installed.
    """
    try:
        with warnings.catch_warnings():
            # anomalib 2.7 warns on import about its dependencies' renamed modules.
            warnings.simplefilter("ignore", FutureWarning)
            from anomalib.models import ReverseDistillation
            from anomalib.post_processing import PostProcessor
    except ImportError as exc:
        raise ConfigError(
            f"--compare needs anomalib ({exc}): pip install 'inspector[dev]'"
        ) from exc
    torch.manual_seed(seed)
    module = ReverseDistillation(
        backbone=backbone,
        layers=("layer1", "layer2", "layer3"),
        pre_trained=False,
        pre_processor=ReverseDistillation.configure_pre_processor(size),
        post_processor=PostProcessor(enable_normalization=False),
        # Training-time components: they take no part in the forward pass or the export.
        evaluator=False,
        visualizer=False,
    )
    return module.eval()


@dataclass(frozen=True)
class Calibration:
    """The int8 calibration data, as an anomalib datamodule will read it.

    Attributes:
        root: A synthetic MVTec-layout folder (``train/good``, one defect kind under ``test``).
        batch_size: The datamodule's batch size (NNCF quantizes on its batches).
        val_share: Share of ``train/good`` in the validation split (what int8 calibrates on).
        seed: The split's seed.
    """

    root: Path
    batch_size: int
    val_share: float
    seed: int


def folder_datamodule(data: Calibration) -> Any:
    """An ``anomalib.data.Folder`` over ``data.root``.

    Its validation split (what anomalib's int8 calibrates on) is taken from ``train/good``, so
    both sides calibrate on good images only, as a line has them.
    """
    from anomalib.data import Folder

    root = data.root
    defect = next(p.name for p in sorted((root / "test").iterdir()) if p.name != "good")
    return Folder(
        name="synthetic",
        root=root,
        normal_dir="train/good",
        abnormal_dir=f"test/{defect}",
        normal_test_dir="test/good",
        mask_dir=f"ground_truth/{defect}",
        train_batch_size=data.batch_size,
        eval_batch_size=data.batch_size,
        # Loader processes would compete with the benchmark for the CPU.
        num_workers=0,
        val_split_mode="from_train",
        val_split_ratio=data.val_share,
        seed=data.seed,
    )


def export_onnx(module: Any, folder: Path, size: tuple[int, int]) -> Path:
    """``module.to_onnx`` (dynamic batch, fixed size); returns the ``.onnx`` file."""
    with quiet():
        return Path(module.to_onnx(folder, input_size=size))


def export_openvino(
    module: Any, folder: Path, size: tuple[int, int], datamodule: Any | None = None
) -> Path:
    """``module.to_openvino``, fp32 weights, or int8 (``INT8_PTQ``) with ``datamodule``."""
    from anomalib.deploy import CompressionType

    compression = None if datamodule is None else CompressionType.INT8_PTQ
    with quiet():
        path = module.to_openvino(
            folder, input_size=size, compression_type=compression, datamodule=datamodule
        )
    return Path(path)


def exported_paths(
    module: Any, groups: set[str], data: Calibration, work: Path, size: tuple[int, int]
) -> list[tuple[str, OnnxRuntimeGraph | OpenVINOGraph, dict[str, Any]]]:
    """The exports of anomalib's ``module`` that ``groups`` ask for, ready to run.

    ``onnxruntime``: ``to_onnx`` in onnxruntime. ``openvino``: ``to_openvino`` compiled with
    the f32 and the bf16 precision hint, and ``to_openvino`` with ``INT8_PTQ`` calibrated on
    ``data`` compiled as anomalib's ``OpenVINOInferencer`` compiles (the plugin's defaults).

    Returns:
        ``(name, runner, info)`` per path; ``info`` says what it is, for the result.
    """
    version = importlib.metadata.version("anomalib")
    paths: list[tuple[str, OnnxRuntimeGraph | OpenVINOGraph, dict[str, Any]]] = []

    def add(name: str, graph: OnnxRuntimeGraph | OpenVINOGraph, **info: Any) -> None:
        precision = info.pop("precision", graph.precision)
        backend = "onnxruntime" if isinstance(graph, OnnxRuntimeGraph) else "openvino"
        row = {"backend": backend, "precision": precision, "map": GRAPH_MAP, **info}
        paths.append((name, graph, row))

    if "onnxruntime" in groups:
        onnx = export_onnx(module, work / "anomalib-onnx", size)
        add("anomalib-onnxruntime", OnnxRuntimeGraph(onnx), made_by=f"anomalib {version} to_onnx")
    if "openvino" in groups:
        xml = export_openvino(module, work / "anomalib-openvino", size)
        for hint in ("f32", "bf16"):
            add(
                f"anomalib-openvino-{hint}",
                OpenVINOGraph(xml, hint),
                made_by=f"anomalib {version} to_openvino",
                compiled=f"INFERENCE_PRECISION_HINT {hint}",
            )
        datamodule = folder_datamodule(data)
        graph = OpenVINOGraph(
            export_openvino(module, work / "anomalib-int8", size, datamodule), None
        )
        add(
            "anomalib-openvino-int8",
            graph,
            precision=f"int8, the rest {graph.precision}",
            made_by=f"anomalib {version} {INT8_CALIBRATION}",
            compiled="the plugin's default precision, as OpenVINOInferencer compiles",
            calibration_images=len(datamodule.val_data),
        )
    return paths


def eager_runner(
    reference: nn.Module, size: tuple[int, int], device: torch.device
) -> Callable[[Batch], InferenceBatch]:
    """The eager ``ReverseDistillationModel`` on our preprocessing (as ``--compare-anomalib``).

    Maps and scores are brought to the host, as our worker brings them.
    """

    def run(batch: Batch) -> InferenceBatch:
        with torch.no_grad():
            rgb = torch.stack([to_tensor_rgb(img) for img in batch]).to(device)
            out = reference(preprocess(rgb, size))
            maps, scores = out.anomaly_map.float().cpu(), out.pred_score.float().cpu()
            return InferenceBatch(maps, scores.flatten())

    return run


def versions() -> dict[str, str | None]:
    """``<package>_version`` of each peer path's package (``None``: not installed)."""
    versions: dict[str, str | None] = {}
    for package in ("anomalib", "openvino", "onnxruntime", "nncf"):
        try:
            versions[f"{package}_version"] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[f"{package}_version"] = None
    return versions


def unit_rgb(batch: Sequence[np.ndarray | torch.Tensor]) -> np.ndarray:
    """Frames (BGR uint8 arrays or RGB uint8 tensors) as anomalib's graphs take them.

    RGB float32 in 0..1, ``(N, 3, H, W)``, what anomalib's inferencers feed: its
    normalisation is inside the graph.
    """
    tensors = [img if isinstance(img, torch.Tensor) else to_tensor_rgb(img) for img in batch]
    return np.ascontiguousarray((torch.stack(tensors).float() / 255).numpy())


def _result(maps: np.ndarray, scores: np.ndarray) -> InferenceBatch:
    # anomalib's graphs return scores (N, 1); ours and the eager model (N,).
    return InferenceBatch(
        torch.from_numpy(np.array(maps)), torch.from_numpy(np.array(scores)).flatten()
    )


class OnnxRuntimeGraph:
    """An anomalib ONNX export in onnxruntime, with the session options of our own engine."""

    def __init__(self, path: Path) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self.precision = "fp32"

    def __call__(self, batch: Sequence[np.ndarray | torch.Tensor]) -> InferenceBatch:
        """Raw maps ``(N, 1, H, W)`` and scores ``(N,)`` of uint8 frames."""
        maps, scores = self._session.run(list(OUTPUTS), {self._input: unit_rgb(batch)})
        return _result(maps, scores)


class OpenVINOGraph:
    """An anomalib OpenVINO IR compiled for the CPU.

    Args:
        path: The ``.xml`` file.
        precision_hint: ``INFERENCE_PRECISION_HINT`` (``f32``, ``bf16``); ``None``: the
            plugin's default, as anomalib's ``OpenVINOInferencer`` compiles (its ``config``
            defaults to none).
    """

    def __init__(self, path: Path, precision_hint: str | None) -> None:
        import openvino as ov

        # The latency hint, as our engine compiles: one request at a time, every core on it.
        config = {"PERFORMANCE_HINT": "LATENCY"}
        if precision_hint is not None:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        compiled = ov.Core().compile_model(str(path), "CPU", config)
        self._request = compiled.create_infer_request()
        #: What the plugin runs the non-int8 operations in (a hint it cannot honour is dropped).
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        self.precision = str(hint.get_type_name()) if hasattr(hint, "get_type_name") else str(hint)

    def __call__(self, batch: Sequence[np.ndarray | torch.Tensor]) -> InferenceBatch:
        """Raw maps ``(N, 1, H, W)`` and scores ``(N,)`` of uint8 frames."""
        self._request.infer({0: unit_rgb(batch)})
        # Copies (in _result): the request reuses its output buffers.
        maps, scores = (self._request.get_tensor(name).data for name in OUTPUTS)
        return _result(maps, scores)
