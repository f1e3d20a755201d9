"""``inspector bench --compare anomalib-openvino-inferencer``: our daemon beside anomalib's loop.

Speed is never asserted (benchmarks measure it): this checks that both sides ran end to end on
every file, that the ratio is the quotient of the rates it reports, and that the daemon's peak
memory is stated for int8 beside fp32, each from a run that served that precision.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from inspector.cli import build_parser, main
from inspector.errors import InspectorError
from inspector.tools.benchmark.e2e_peers import GROUP, results_span
from inspector.tools.benchmark.processes import run_child

# Runs the benchmark's peers in subprocesses: the component tier (make component), not make unit.
pytestmark = pytest.mark.component

SMALL = ["--backbone", "resnet18", "--image-size", "64", "--batch-size", "2", "--device", "cpu"]
FRAMES = 6


def test_daemon_and_anomalib_inferencer_loop_run_on_the_same_files(
    capsys: pytest.CaptureFixture[str],
) -> None:
    flags = ["--frames", str(FRAMES), "--warmup", "1", "--compare", GROUP]
    code = main(["bench", *SMALL, *flags])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 1, captured.out  # one JSON object, the children's logs elsewhere
    result: dict[str, Any] = json.loads(lines[0])

    e2e = result["end_to_end"]
    ours, theirs = e2e["paths"]["ours"], e2e["paths"][GROUP]
    assert ours["images_per_s"] > 0 and theirs["images_per_s"] > 0
    assert e2e["ratio"] == pytest.approx(ours["images_per_s"] / theirs["images_per_s"], rel=1e-3)
    # Its rate is the mean of its runs before and after ours.
    assert theirs["images_per_s"] == pytest.approx(
        sum(theirs["images_per_s_before_after"]) / 2, rel=1e-3
    )
    assert result["images_per_s"] == ours["images_per_s"]
    assert result["precision"] == ours["precision"]
    assert ours["precision_asked"] == "auto"

    runs = result["runs"]
    # Every process went through every file: a result per file, none lost to a dead letter.
    for name, run in runs.items():
        assert run["results"] == FRAMES, name
        assert run["peak_rss_mb"] >= run["rss_at_end_mb"] > 0, name
    assert {f"{GROUP}-before", f"{GROUP}-after", "ours", "ours-first-start"} <= set(runs)

    memory = result["memory"]
    peak = memory["peak_rss_mb"]
    assert set(peak) == {"ours-int8", "ours-fp32", "ours-auto-first-start", GROUP}
    assert all(mb > 0 for mb in peak.values())
    assert memory["int8_vs_fp32"] == pytest.approx(peak["ours-int8"] / peak["ours-fp32"], rel=1e-3)
    # Each peak comes from a daemon that served that precision (int8 on OpenVINO).
    int8_run, fp32_run = runs[memory["runs"]["ours-int8"]], runs[memory["runs"]["ours-fp32"]]
    assert (int8_run["backend"], int8_run["precision"]) == ("openvino", "int8")
    assert (fp32_run["backend"], fp32_run["precision"]) == ("torch", "fp32")
    assert int8_run["peak_rss_mb"] == peak["ours-int8"]
    at_end = memory["rss_at_end_mb"]
    assert set(at_end) == {"ours-int8", "ours-fp32"} and all(mb > 0 for mb in at_end.values())
    assert memory["int8_vs_fp32_at_end"] == pytest.approx(
        at_end["ours-int8"] / at_end["ours-fp32"], rel=1e-3
    )

    # The recorded command reproduces the run.
    again = build_parser().parse_args(result["command"][1:])
    assert again.compare == (GROUP,)


def test_the_daemon_is_timed_from_the_first_read_to_the_last_result() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def line(processed_after_s: float, total_ms: float, anomalous: bool) -> str:
        processed = (t0 + timedelta(seconds=processed_after_s)).isoformat()
        message = {"processed_at": processed, "latency_ms": {"total": total_ms}}
        return json.dumps({**message, "is_anomalous": anomalous})

    # The second frame was read first (0.05 s in), the third result came last (0.40 s in).
    lines = [line(0.20, 100.0, False), line(0.25, 200.0, True), line(0.40, 150.0, True)]
    seconds, anomalous = results_span(lines)
    assert seconds == pytest.approx(0.35)
    assert anomalous == 2


def test_a_failing_child_is_reported_with_the_end_of_its_log(tmp_path: Path) -> None:
    # A configuration the daemon refuses: the child exits non-zero before any frame.
    spec = {"config": {"batcher": {"max_batch_size": 0}}}
    with pytest.raises(InspectorError, match="daemon process exited with 1") as failure:
        run_child("daemon", spec, tmp_path / "bad", timeout_s=120)
    assert "max_batch_size" in str(failure.value)  # the child's own error, quoted
