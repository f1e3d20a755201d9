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
    assert result["peak_rss_mb"] > 0 and result["gflop_per_image"] > 0
    # The benchmark checkpoint flags some frames, not all or none (post-processing work).
    assert 0 < result["anomalous_results"] < FRAMES
    assert result["command"][-2:] == ["--bootstrap-servers", bootstrap]
