"""The inference fast path keeps the answers: maps and AUROC against the fp32 reference."""

from __future__ import annotations

import os
import threading

import cv2
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.model.fastpath import (
    FastModel,
    RuntimeOptions,
    in_passing_thread,
    resolve_precision,
)
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.tools.synth import SynthSummary

CPU = torch.device("cpu")
#: Stated tolerances on raw maps (1 - cosine similarity, blurred; values ~0.1-0.7).
FP32_TOL = 1e-4  # channels_last / compile: same maths, other kernel order
BF16_TOL = 0.01  # bf16 features; the distances and the blur stay in fp32
BF16_AUROC_TOL = 0.02


def _test_set(synth: SynthSummary, size: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray]:
    paths = sorted((synth.root / "test").rglob("*.png"))
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths]
    batch = preprocess(torch.stack([to_tensor_rgb(i) for i in images]), size)
    labels = np.array([p.parent.name != "good" for p in paths])
    return batch, labels


def _run(model: FastModel, batch: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    maps, scores = [], []
    for start in range(0, len(batch), 8):
        out = model(batch[start : start + 8])
        maps.append(out.anomaly_map.numpy())
        scores.append(out.pred_score.numpy())
    return np.concatenate(maps), np.concatenate(scores)


@pytest.fixture(scope="module")
def reference(
    checkpoint: LoadedCheckpoint, synth_data: SynthSummary
) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    batch, labels = _test_set(synth_data, checkpoint.model.config.image_size)
    plain = FastModel(checkpoint.model, CPU, RuntimeOptions(channels_last=False))
    maps, scores = _run(plain, batch)
    return batch, labels, maps, scores


def test_channels_last_matches_fp32(
    checkpoint: LoadedCheckpoint,
    reference: tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    batch, _, ref_maps, _ = reference
    fast = FastModel(checkpoint.model, CPU, RuntimeOptions(channels_last=True))
    maps, _ = _run(fast, batch)
    assert np.abs(maps - ref_maps).max() < FP32_TOL


def test_bf16_stays_within_tolerance_and_keeps_auroc(
    checkpoint: LoadedCheckpoint,
    reference: tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray],
) -> None:
    batch, labels, ref_maps, ref_scores = reference
    fast = FastModel(checkpoint.model, CPU, RuntimeOptions(precision="bf16"))
    assert fast.precision == "bf16"
    maps, scores = _run(fast, batch)
    assert maps.dtype == np.float32
    diff = float(np.abs(maps - ref_maps).max())
    auroc_ref = roc_auc_score(labels, ref_scores)
    auroc_bf16 = roc_auc_score(labels, scores)
    print(f"bf16: max |map diff| {diff:.4g}, image AUROC {auroc_ref:.4f} -> {auroc_bf16:.4f}")
    assert diff < BF16_TOL
    assert abs(auroc_bf16 - auroc_ref) <= BF16_AUROC_TOL
    # bf16 really ran: the maps are close, not identical.
    assert diff > 0


@pytest.mark.component  # torch.compile runs a C++ compiler
def test_compile_matches_fp32() -> None:
    torch.manual_seed(0)
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=(64, 64)))
    images = torch.randn(2, 3, 64, 64)
    ref = FastModel(model, CPU, RuntimeOptions(channels_last=False))(images)
    compiled = FastModel(model, CPU, RuntimeOptions(compile=True))(images)
    assert torch.allclose(compiled.anomaly_map, ref.anomaly_map, atol=FP32_TOL)
    assert torch.allclose(compiled.pred_score, ref.pred_score, atol=FP32_TOL)


@pytest.mark.parametrize(("amx", "onednn_bf16"), [(True, True), (False, True), (False, False)])
def test_auto_given_to_the_fast_path_reads_no_cpu_flag(
    monkeypatch: pytest.MonkeyPatch, amx: bool, onednn_bf16: bool
) -> None:
    # No CPU-flag rule: whatever the CPU reports, the unmeasured auto is fp32 on the CPU (the
    # measured choice is inspector.backends.auto's, through load_model).
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16)
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16" and resolve_precision("fp32", CPU) == "fp32"
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=(64, 64)))
    assert FastModel(model, CPU, RuntimeOptions(precision="auto")).precision == "fp32"


def test_int8_is_not_a_fast_path_precision() -> None:
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=(64, 64)))
    with pytest.raises(ValueError, match=r"int8 record: load it with .*load_model"):
        FastModel(model, CPU, RuntimeOptions(precision="int8"))


def test_cuda_graphs_are_ignored_on_cpu() -> None:
    model = ReverseDistillation(ArchitectureConfig(backbone="resnet18", image_size=(64, 64)))
    fast = FastModel(model, CPU, RuntimeOptions(cuda_graphs=True))
    assert not fast.use_cuda_graphs
    out = fast(torch.randn(3, 3, 64, 64))
    assert out.anomaly_map.shape == (3, 1, 64, 64)


def _os_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def _parallel_op() -> float:
    # Large enough for torch to split it across its intra-op (OpenMP) threads.
    return float(torch.ones(1 << 22).add_(1).sum())


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
@pytest.mark.skipif(torch.get_num_threads() < 2, reason="needs 2+ intra-op threads")
def test_a_passing_thread_takes_its_openmp_team_with_it() -> None:
    before = _os_threads()
    assert in_passing_thread(_parallel_op) == float(2 * (1 << 22))
    wait_until(lambda: _os_threads() == before, 5, "the set-up thread's OpenMP workers to end")
    # The contrast: a thread that stays alive keeps its team (itself plus its workers).
    stop = threading.Event()
    live = threading.Thread(target=lambda: (_parallel_op(), stop.wait()))
    live.start()
    try:
        wait_until(lambda: _os_threads() >= before + 2, 10, "the live thread's OpenMP team")
    finally:
        stop.set()
        live.join()
    wait_until(lambda: _os_threads() == before, 5, "the live thread's team to end with it")


def test_a_passing_thread_returns_results_and_raises_failures() -> None:
    seen: list[threading.Thread] = []

    def work() -> str:
        seen.append(threading.current_thread())
        return "done"

    assert in_passing_thread(work) == "done"
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()

    def broken() -> None:
        raise ValueError("no checkpoint")

    with pytest.raises(ValueError, match="no checkpoint"):
        in_passing_thread(broken)
