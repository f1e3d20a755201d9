"""``inspector bench --compare``: every peer path runs, with the same weights, and agrees.

Speed is never asserted (benchmarks measure it); this checks that each path is there with
finite figures, that the exports of the same weights give the same maps as their fp32
reference, and that the flags are checked.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from inspector.cli import build_parser, main

SMALL = ["--backbone", "resnet18", "--image-size", "64", "--batch-size", "2", "--device", "cpu"]
OURS = ("ours", "ours-openvino", "ours-openvino-int8", "ours-pt2e-int8", "ours-onnxruntime")
THEIRS = (
    "anomalib",
    "anomalib-onnxruntime",
    "anomalib-openvino-f32",
    "anomalib-openvino-bf16",
    "anomalib-openvino-int8",
)
TIMING = ("median_batch_ms", "p95_batch_ms", "images_per_s", "images_per_s_p95")
#: Figures every path has: on random weights some AUROCs are 0.5 or below, never missing.
ACCURACY = ("max_abs_map_diff", "image_auroc", "pixel_auroc", "image_auroc_drop")


@pytest.mark.component  # torch.compile runs a C++ compiler
def test_every_peer_path_runs_on_the_same_weights(capsys: pytest.CaptureFixture[str]) -> None:
    flags = ["--frames", "4", "--warmup", "1", "--compare", "openvino,onnxruntime,anomalib"]
    code = main(["bench", *SMALL, *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 1, captured.out  # one JSON object, the exporters' chatter elsewhere
    result: dict[str, Any] = json.loads(lines[0])
    paths = result["paths"]
    assert set(paths) == {*OURS, *THEIRS}
    # ours is the daemon's default as it serves here: precision auto, measured, with the int8
    # record inspector quantize made on the synthetic good images.
    ours = paths["ours"]
    assert ours["made_by"].startswith("precision auto")
    assert set(ours["auto_images_per_s"]) >= {"fp32", "int8"}
    assert ours["precision"] in ("fp32", "bf16", "int8")
    for name, row in paths.items():
        for key in (*TIMING, *ACCURACY):
            assert isinstance(row[key], float | int) and math.isfinite(row[key]), (name, key)
        assert row["images_per_s"] > 0 and row["median_batch_ms"] <= row["p95_batch_ms"]
        assert row["reference"] == ("ours-torch-fp32" if name in OURS else "anomalib")
        assert row["family"] == ("ours" if name in OURS else "anomalib")
    references = result["references"]
    # Non-trivial maps (a diff of all-zero maps would prove nothing).
    assert references["ours-torch-fp32"]["map_max"] > 0.1
    # Same weights: our fp32 PyTorch maps are anomalib's eager maps.
    assert references["ours_fp32_vs_anomalib_max_abs_map_diff"] <= 1e-4
    # Our fp32 exports give the PyTorch maps (the export's parity bound).
    for name in ("ours-openvino", "ours-onnxruntime"):
        assert paths[name]["max_abs_map_diff"] <= 1e-4, name
        assert paths[name]["score_pearson"] > 0.9999
    # anomalib's graphs, fed 0..1 RGB with their own preprocessing inside, agree with its
    # eager model fed our preprocessing: the comparison compares like with like.
    for name in ("anomalib-openvino-f32", "anomalib-onnxruntime"):
        assert paths[name]["max_abs_map_diff"] <= 1e-4, name
        assert paths[name]["image_auroc_drop"] == pytest.approx(0, abs=1e-6)
    assert paths["anomalib-openvino-int8"]["calibration_images"] == 24
    assert paths["ours-openvino-int8"]["precision"] == "int8"
    # PyTorch's own int8, timed beside OpenVINO's (the README's reason it is not served).
    assert paths["ours-pt2e-int8"]["precision"] == "int8"
    assert paths["ours-pt2e-int8"]["images_per_s"] > 0
    assert paths["anomalib-openvino-f32"]["precision"] == "f32"
    # The --compare-anomalib fields for ours, and ratios from the same run.
    assert result["speedup"] == pytest.approx(
        result["images_per_s"] / result["anomalib_images_per_s"], rel=1e-2
    )
    ratios = result["ratios"]
    assert set(ratios["ours_vs"]) == set(THEIRS)
    assert ratios["best_ours"] in OURS
    assert result["timing"]["warmup_batches_per_path"] == 1
    # The recorded command reproduces the run.
    again = build_parser().parse_args(result["command"][1:])
    assert again.compare == ("openvino", "onnxruntime", "anomalib")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--compare", "anomalib,tensorrt"], "--compare anomalib,tensorrt: a comma list"),
        (["--compare", "openvino,openvino"], "distinct groups"),
        (["--mode", "e2e", "--compare", "anomalib"], "--compare works in --mode model only"),
        (["--compare", "anomalib", "--compare-anomalib"], "give one"),
    ],
)
def test_bad_compare_flags_exit_2(
    capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["bench", *SMALL, *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert message in captured.err
