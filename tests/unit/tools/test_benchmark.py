"""``inspector bench`` in model mode: the JSON contract, the anomalib comparison, bad flags.

Speed itself is never asserted (benchmarks measure it); these tests check that the numbers
exist, are consistent with each other, and that the comparison really compares.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import inspector.tools.benchmark.anomalib_ref as anomalib_ref
from inspector.backends.auto import candidates
from inspector.cli import build_parser, main

SMALL = ["--backbone", "resnet18", "--image-size", "64", "--batch-size", "2", "--device", "cpu"]
#: The contract's fields plus the ones every result carries.
COMMON = {
    "images_per_s",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "latency_unit",
    "peak_rss_mb",
    "peak_gpu_mb",
    "mode",
    "backbone",
    "image_size",
    "batch_size",
    "frames",
    "device",
    "device_name",
    "precision",
    "channels_last",
    "compile",
    "cuda_graphs",
    "torch",
    "threads",
    "gflop_per_image",
    "achieved_tflops",
    "command",
}
COMPARISON = {"anomalib_images_per_s", "speedup", "max_abs_diff", "anomalib_version"}


def _bench(capsys: pytest.CaptureFixture[str], *flags: str) -> dict[str, Any]:
    code = main(["bench", *SMALL, "--frames", "4", "--warmup", "1", *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 1, captured.out
    result: dict[str, Any] = json.loads(lines[0])
    return result


def _assert_sane(result: Mapping[str, Any]) -> None:
    assert set(result) >= COMMON
    assert result["images_per_s"] > 0
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["peak_rss_mb"] > 0
    assert result["gflop_per_image"] > 0
    expected_tflops = result["images_per_s"] * result["gflop_per_image"] / 1000
    assert result["achieved_tflops"] == pytest.approx(expected_tflops, rel=1e-2)
    assert result["torch"] == torch.__version__
    assert result["threads"] == torch.get_num_threads()
    assert result["device"] == "cpu" and result["device_name"]
    assert result["peak_gpu_mb"] is None  # CPU run


def test_model_mode_reports_every_field(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out = tmp_path / "sub" / "result.json"
    result = _bench(capsys, "--json", str(out))
    _assert_sane(result)
    assert (result["mode"], result["backbone"], result["image_size"]) == ("model", "resnet18", 64)
    assert (result["batch_size"], result["frames"], result["latency_unit"]) == (2, 4, "batch")
    # auto by default: measured as the daemon measures (one of the paths this CPU runs).
    assert result["precision"] in candidates(torch.device("cpu"))
    assert result["channels_last"] is True
    assert not (result["compile"] or result["cuda_graphs"])
    assert not COMPARISON & set(result)
    assert json.loads(out.read_text()) == result
    # The recorded command reproduces the run: it parses to the same options.
    again = build_parser().parse_args(result["command"][1:])
    assert (again.frames, again.batch_size, again.image_size) == (4, 2, 64)
    assert (again.warmup, again.channels_last, again.precision) == (1, True, "auto")


def test_frames_round_up_to_whole_batches_and_precision_is_resolved(
    capsys: pytest.CaptureFixture[str],
) -> None:
    result = _bench(capsys, "--frames", "3", "--precision", "bf16", "--no-channels-last")
    _assert_sane(result)
    assert result["frames"] == 4  # two full batches of 2: no odd shape inside the timed loop
    assert result["precision"] == "bf16"
    assert result["channels_last"] is False
    assert "--no-channels-last" in result["command"]


needs_anomalib = pytest.mark.skipif(
    importlib.util.find_spec("anomalib") is None, reason="anomalib (dev dependency) missing"
)


@needs_anomalib
def test_compare_anomalib_same_answer(capsys: pytest.CaptureFixture[str]) -> None:
    result = _bench(capsys, "--compare-anomalib", "--precision", "fp32")
    _assert_sane(result)
    assert set(result) >= COMPARISON
    assert result["anomalib_version"] == importlib.metadata.version("anomalib")
    assert result["anomalib_images_per_s"] > 0 and result["speedup"] > 0
    assert result["speedup"] == pytest.approx(
        result["images_per_s"] / result["anomalib_images_per_s"], rel=1e-2
    )
    # Non-trivial maps (a diff of two all-zero maps would prove nothing), equal in fp32.
    assert result["anomalib_map_max"] > 0.1
    assert result["max_abs_diff"] < 1e-4


@needs_anomalib
def test_compare_anomalib_detects_different_weights(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    convert = anomalib_ref.convert_anomalib_state_dict

    def perturbed(*args: Any, **kwargs: Any) -> Any:
        config, tensors, post = convert(*args, **kwargs)
        key = "decoder.layer1.0.conv1.weight"
        tensors = {**tensors, key: tensors[key] * 1.5}
        return config, tensors, post

    monkeypatch.setattr(anomalib_ref, "convert_anomalib_state_dict", perturbed)
    result = _bench(capsys, "--compare-anomalib", "--precision", "fp32")
    assert result["max_abs_diff"] > 1e-3


def test_compare_without_anomalib_exits_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # None in sys.modules makes the import fail as if anomalib were not installed.
    monkeypatch.setitem(sys.modules, "anomalib.models.image.reverse_distillation.torch_model", None)
    code = main(["bench", *SMALL, "--frames", "2", "--compare-anomalib"])
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert "pip install 'inspector[dev]'" in captured.err


def _exit_code(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        return exc.code


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--precision", "fp16"], "invalid choice"),
        (["--mode", "fast"], "invalid choice"),
        (["--batch-size", "0"], "at least 1"),
        (["--frames", "0"], "at least 1"),
        (["--image-size", "100"], "multiple of 32"),
        (["--warmup", "-1"], "--warmup"),
        (["--mode", "e2e", "--compare-anomalib"], "--compare-anomalib"),
        (["--bootstrap-servers", "localhost:9092"], "--bootstrap-servers"),
        (["--decode-device", "cuda"], "--decode-device"),
        (["--mode", "e2e", "--frames", "3"], "twice --batch-size"),
        (["--rate", "10"], "--rate 10: a positive rate, in --mode e2e only"),
        (["--mode", "e2e", "--rate", "0"], "--rate 0: a positive rate"),
    ],
)
def test_bad_flags_exit_2(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    argv = ["bench", "--backbone", "resnet18", "--device", "cpu", "--batch-size", "2", *flags]
    assert _exit_code(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit_code(["bench", "--backbone", "resnet18", "--device", "cuda"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.component  # runs `inspector bench` in a subprocess
def test_console_prints_one_json_object(tmp_path: Path) -> None:
    # A real process: nothing below Python's sys.stdout (C libraries, child processes) may
    # write to stdout either.
    proc = subprocess.run(
        [sys.executable, "-m", "inspector", "bench", *SMALL, "--frames", "2", "--warmup", "0"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["frames"] == 2
