"""The daemon's ``inspector_score_drift``: frames darkened by 30 % halfway through a run raise it
past the alert level (0.25) within one window; the same frames undarkened do not."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from prometheus_client import CollectorRegistry
from results_helpers import daemon_config

from inspector.checkpoint import LoadedCheckpoint, save_checkpoint
from inspector.model.drift import MIN_GOOD, reference_edges
from inspector.runtime.daemon import Daemon
from inspector.runtime.drift import WINDOW

#: Frames as calibrated before the change: enough for a first figure.
BEFORE = 150


def _goods(data_root: Path) -> list[Path]:
    goods = sorted((data_root / "train" / "good").iterdir()) + sorted(
        (data_root / "test" / "good").iterdir()
    )
    assert len(goods) >= MIN_GOOD
    return goods


def _run(checkpoint: Path, frames: Path, results: Path) -> tuple[CollectorRegistry, list[float]]:
    """The daemon over ``frames`` (a finite directory source); its registry and raw scores."""
    registry = CollectorRegistry()
    config = daemon_config(
        checkpoint,
        [{"type": "directory", "path": str(frames), "camera_id": "cam-1"}],
        None,
        sinks={"kafka": {"enabled": False}, "jsonl": {"path": str(results)}},
        http={"host": "127.0.0.1", "port": 0},
    )
    assert Daemon(config, registry=registry).run() == 0
    lines = results.read_text().splitlines()
    return registry, [json.loads(line)["raw_score"] for line in lines]


def _write(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i:05d}.png"), image)
    return folder


def test_darker_frames_raise_the_drift_past_the_alert_level(
    checkpoint: LoadedCheckpoint, data_root: Path, tmp_path: Path
) -> None:
    goods = [cv2.imread(str(p)) for p in _goods(data_root)]
    # The reference, as calibration stores it: the held-out good images' raw scores.
    _, scores = _run(checkpoint.path, _write(tmp_path / "reference", goods), tmp_path / "r.jsonl")
    calibration = checkpoint.meta.calibration
    assert calibration is not None
    meta = checkpoint.meta.model_copy(
        update={
            "calibration": calibration.model_copy(
                update={"good_score_quintiles": reference_edges(scores)}
            )
        }
    )
    model = tmp_path / "with-reference.safetensors"
    save_checkpoint(model, checkpoint.model, meta)

    same = [goods[i % len(goods)] for i in range(BEFORE + WINDOW)]
    darker = same[:BEFORE] + [(g * 0.7).astype(np.uint8) for g in same[BEFORE:]]
    steady, _ = _run(model, _write(tmp_path / "steady", same), tmp_path / "s.jsonl")
    changed, _ = _run(model, _write(tmp_path / "darker", darker), tmp_path / "d.jsonl")

    labels = {"camera": "cam-1"}
    unchanged = steady.get_sample_value("inspector_score_drift", labels)
    drifted = changed.get_sample_value("inspector_score_drift", labels)
    print(f"score drift: same frames {unchanged}, darkened by 30 % {drifted}")
    assert unchanged is not None and unchanged < 0.25
    assert drifted is not None and drifted > 0.25
