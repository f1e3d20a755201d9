"""``bench/interleaved_e2e.py``: daemon windows and model-only windows over a real broker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def test_interleaved_windows_pair_every_frame_with_model_only(
    bootstrap: str, tmp_path: Path
) -> None:
    record = tmp_path / "PERFORMANCE.md"
    cmd = [sys.executable, str(ROOT / "bench" / "interleaved_e2e.py")]
    cmd += ["--backbone", "resnet18", "--image-size", "64", "--batch-size", "2"]
    cmd += ["--windows", "2", "--batches-per-window", "3", "--precision", "fp32"]
    cmd += ["--bootstrap-servers", bootstrap, "--record", str(record), "--timeout", "150"]
    # The script's own waits end first, so a stuck run fails with the daemon's readiness reasons.
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=480, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # the JSON line only: the model process speaks on a pipe
    result = json.loads(lines[0])
    windows = result["windows"]
    assert len(windows) == 2 and result["dead_letters"] == 0
    assert all(w["e2e_images_per_s"] > 0 and w["model_only_images_per_s"] > 0 for w in windows)
    e2e = sum(w["e2e_images_per_s"] for w in windows) / 2
    model = sum(w["model_only_images_per_s"] for w in windows) / 2
    assert result["e2e_ratio"] == pytest.approx(e2e / model, rel=1e-3)
    # The generated performance file gets the windows as its own section.
    text = record.read_text()
    assert "<!-- bench:interleaved_e2e -->" in text and "| window | e2e images/s" in text
    assert f"Mean e2e/model-only ratio {result['e2e_ratio']:.2f}" in text
