"""``inspector demo`` end to end: synthetic line, training, broker, daemon, cameras, view.

Runs the real command in a subprocess, the way a newcomer runs it (``make demo`` does the same
without ``--frames``). With ``INSPECTOR_TEST_BOOTSTRAP`` set it runs on that broker instead of
the embedded one. The high-resolution camera (1024 x 768, inspected in 63 tiles by a model of
its own) sends one frame in 25, at least one.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np

from inspector.messages import result_json_schema


def _demo(workdir: Path, frames: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "inspector", "demo", "--frames", str(frames)]
    cmd += ["--workdir", str(workdir), "--fps", "0", "--plain", "--port", "0", "--device", "cpu"]
    if os.environ.get("INSPECTOR_TEST_BOOTSTRAP"):
        cmd += ["--bootstrap-servers", os.environ["INSPECTOR_TEST_BOOTSTRAP"]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def test_demo_runs_the_whole_line(tmp_path: Path) -> None:
    run = _demo(tmp_path, 40)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "training the demo model once" in run.stdout
    assert "training the high-resolution camera's model once" in run.stdout
    assert "sent 40 frames" in run.stdout

    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    results = [json.loads(line) for line in lines]
    schema = result_json_schema()
    for result in results:
        jsonschema.validate(result, schema)
    # 39 frames from the regular cameras, every 25th of them corrupt, and 1 from the
    # high-resolution camera: 39 results, 1 dead letter, nothing lost.
    assert len(results) == 39
    assert len({r["frame_id"] for r in results}) == 39
    dead_letters = [
        json.loads(x) for x in (tmp_path / "results.dlq.jsonl").read_text().splitlines()
    ]
    assert len(dead_letters) == 1
    assert "1 dead letters" in run.stdout
    assert {r["camera_id"] for r in results} == {"line1-cam1", "line1-cam2", "line1-hires"}
    (hires,) = [r for r in results if r["camera_id"] == "line1-hires"]
    # Inspected whole, by its own model, with defect regions in full-frame pixels.
    assert hires["model"]["name"] == "hires"
    assert tuple(hires["image_size"]) == (768, 1024)
    for defect in hires["defects"]:
        x, y, w, h = defect["bbox"]
        assert 0 <= x < x + w <= 1024 and 0 <= y < y + h <= 768
    assert "line1-hires (1024x768, 63 tiles/frame): 1 frames, caught " in run.stdout

    flagged = [r for r in results if r["is_anomalous"]]
    assert flagged, "no frame was flagged"
    assert all(r["defects"] for r in flagged)
    overlays = list((tmp_path / "overlays").rglob("*.png"))
    assert len(overlays) == len(flagged)
    assert f"overlays of the {len(flagged)} flagged frames" in run.stdout
    assert "inspector running" in (tmp_path / "demo.log").read_text()

    # Retention is on: every flagged frame kept for the operator console, whose address (and
    # the token that labels there) the demo printed once the daemon was ready.
    assert re.search(r"operator console: http://127\.0\.0\.1:\d+/ ", run.stdout), run.stdout
    assert re.search(r"give the console the admin token \S{16,}", run.stdout)
    index = sqlite3.connect(tmp_path / "retained" / "index.sqlite3")
    try:
        retained = index.execute("SELECT frame_id FROM frames WHERE is_anomalous = 1").fetchall()
    finally:
        index.close()
    assert {r[0] for r in retained} == {r["frame_id"] for r in flagged}

    again = _demo(tmp_path, 8)  # cached line and model: no training the second time
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "(cached)" in again.stdout and "training" not in again.stdout
    assert "sent 8 frames" in again.stdout
    assert "line1-hires (1024x768, 63 tiles/frame): 1 frames" in again.stdout
    # The second run retained its own flagged frames only (its frame ids start at 0 again).
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    flagged_again = {r["frame_id"] for r in map(json.loads, lines) if r["is_anomalous"]}
    index = sqlite3.connect(tmp_path / "retained" / "index.sqlite3")
    try:
        kept = index.execute("SELECT frame_id FROM frames WHERE is_anomalous = 1").fetchall()
    finally:
        index.close()
    assert {r[0] for r in kept} == flagged_again


def test_simulate_publishes_a_line(
    tmp_path: Path, bootstrap: str, make_topic: Callable[..., str], read_topic: Callable[..., Any]
) -> None:
    topic = make_topic(1)
    cmd = [sys.executable, "-m", "inspector", "simulate", "--bootstrap-servers", bootstrap]
    cmd += ["--topic", topic, "--data", str(tmp_path / "line"), "--image-size", "64"]
    cmd += ["--frames", "6", "--fps", "0", "--cameras", "3", "--bad-every", "3"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    records = read_topic(topic, 6)
    assert len(records) == 6
    headers = [dict(r.headers) for r in records]
    assert [h["camera_id"] for h in headers] == [b"line1-cam1", b"line1-cam2", b"line1-cam3"] * 2
    assert [r.key for r in records] == [h["camera_id"] for h in headers]
    truths = [h["truth"] for h in headers]
    assert truths[2] == truths[5] == b"corrupt"
    decoded = [cv2.imdecode(np.frombuffer(r.value, np.uint8), cv2.IMREAD_COLOR) for r in records]
    assert [d is not None for d in decoded] == [True, True, False, True, True, False]
