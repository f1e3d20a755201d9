"""``inspector bench --mode e2e`` over the test broker (Tansu, or INSPECTOR_TEST_BOOTSTRAP)."""

from __future__ import annotations

import json

import pytest

from inspector.cli import main

pytestmark = pytest.mark.integration

FRAMES = 24


def test_e2e_bench_counts_every_frame(
    bootstrap: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The shell's daemon overrides must not redirect the benchmark's own daemon.
    monkeypatch.setenv("INSPECTOR_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("INSPECTOR_MODEL__CHECKPOINT", "/nonexistent.safetensors")
    code = main(
        [
            "bench",
            "--mode",
            "e2e",
            "--backbone",
            "resnet18",
            "--image-size",
            "64",
            "--batch-size",
            "4",
            "--frames",
            str(FRAMES),
            "--device",
            "cpu",
            "--warmup",
            "1",
            "--bootstrap-servers",
            bootstrap,
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = captured.out.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert (result["mode"], result["broker"], result["latency_unit"]) == (
        "e2e",
        "external",
        "frame",
    )
    assert (result["frames"], result["results"], result["dead_letters"]) == (FRAMES, FRAMES, 0)
    assert result["images_per_s"] > 0 and result["model_only_images_per_s"] > 0
    before, after = result["model_only_before_after"]
    assert result["model_only_images_per_s"] == pytest.approx((before + after) / 2, rel=1e-2)
    assert result["e2e_ratio"] == pytest.approx(
        result["images_per_s"] / result["model_only_images_per_s"], rel=1e-2
    )
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    # Named: the daemon's own time (the same figures) and capture (here: produce) to verdict,
    # which adds the wait in the topic while the daemon started.
    assert [result[f"daemon_{q}_ms"] for q in ("p50", "p95", "p99")] == [
        result[f"{q}_ms"] for q in ("p50", "p95", "p99")
    ]
    for q in ("p50", "p95", "p99"):
        assert result[f"capture_to_verdict_{q}_ms"] >= result[f"daemon_{q}_ms"] - 1
    assert result["daemon_inference_ms_p50"] > 0 and result["model_only_batch_ms_p50"] > 0
    assert result["peak_rss_mb"] > 0 and result["gflop_per_image"] > 0
    # The benchmark checkpoint flags some frames, not all or none (post-processing work).
    assert 0 < result["anomalous_results"] < FRAMES
    assert result["command"][-2:] == ["--bootstrap-servers", bootstrap]


def test_paced_e2e_reports_produce_to_result_latency(
    bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    flags = ["--backbone", "resnet18", "--image-size", "64", "--batch-size", "4"]
    flags += ["--frames", str(FRAMES), "--device", "cpu", "--warmup", "1", "--rate", "20"]
    code = main(["bench", "--mode", "e2e", *flags, "--bootstrap-servers", bootstrap])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    result = json.loads(captured.out)
    # Every offered frame is counted once; the probe frame sent first is not among them.
    assert (result["frames"], result["results"], result["dead_letters"]) == (FRAMES, FRAMES, 0)
    assert result["rate"] == 20.0
    assert result["command"][-4:] == ["--bootstrap-servers", bootstrap, "--rate", "20.0"]
    p50, p95, p99 = (result[f"produce_to_result_{q}_ms"] for q in ("p50", "p95", "p99"))
    assert 0 < p50 <= p95 <= p99
    # A frame's time inside the daemon is part of its time from producer to result.
    # (1 ms: record timestamps are whole milliseconds.)
    assert p50 >= result["p50_ms"] - 1 and p99 >= result["p99_ms"] - 1
