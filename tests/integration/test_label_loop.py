"""The labelling loop, end to end: flagged frames -> labels -> dataset -> new model -> line.

A real daemon (directory source, JSON-lines sink, retention of every frame, the results and
control API) inspects a generated line with the session's small model. That model was
calibrated on four held-out good images (a threshold that is the largest of a handful of
scores), so on a new batch of good parts it raises false alarms, as the README warns. An
operator labels the flagged frames through ``POST /v1/results/{frame_id}/label`` and
``inspector dataset export`` writes the dataset. Two new checkpoints come from it:
``inspector calibrate`` refits the old model's thresholds on its ``train/good``, and a short
``inspector train`` learns the new batch's good parts (6 epochs on two dozen images). Each is
loaded through ``POST /v1/models`` and put in the camera's recipe, and the same frames are
played again.

The line's defects are missing parts, the kind the CI-sized model (random encoder, a few
epochs) separates from good parts with a margin; on its weaker kinds the good and defect
scores overlap, and no threshold fitted on good parts alone could lower false alarms without
losing a catch.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.cli import main
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon
from inspector.tools.synth import generate_dataset

ADMIN = "admin-token-for-the-label-loop-01"
CAMERA = "line-1"
#: The target false-alarm rate of the refits: at least 1/rate good frames must be exported.
TARGET_RATE = "0.1"
#: The retrained model as the session's (tests/conftest.py), on the exported good frames; 40 %
#: of them held out, so that its threshold is fitted on ten good frames rather than two.
TRAIN = ["--backbone", "resnet18", "--image-size", "128", "--weights", "none", "--epochs", "6"]
TRAIN += ["--batch-size", "8", "--patience", "0", "--seed", "0", "--device", "cpu"]
TRAIN += ["--val-fraction", "0.4", "--false-alarm-rate", TARGET_RATE, "--no-progress"]
N_GOOD, N_MISSING = 30, 6


@dataclass
class Line:
    """The running daemon and the files of the loop."""

    daemon: Daemon
    thread: threading.Thread
    checkpoint: Path
    frames: Path
    results: Path
    retention: Path
    work: Path

    @property
    def base(self) -> str:
        assert self.daemon.server is not None
        return f"http://127.0.0.1:{self.daemon.server.port}"

    def call(self, method: str, path: str, body: Any = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        return requests.request(method, self.base + path, json=body, headers=headers, timeout=60)


def _frames(root: Path) -> Path:
    """A new batch of the synthetic line: good parts and parts with a missing piece.

    Another seed than the session's training data; each file is named after its truth.
    """
    generate_dataset(
        root / "synth",
        seed=5,
        image_size=128,
        n_train=1,
        n_test_good=N_GOOD,
        n_test_per_defect=N_MISSING,
        defect_kinds=("missing",),
    )
    frames = root / "frames"
    frames.mkdir()
    for kind in ("good", "missing"):
        for src in sorted((root / "synth" / "test" / kind).iterdir()):
            shutil.copy(src, frames / f"{kind}_{src.name}")
    return frames


@pytest.fixture
def line(checkpoint: LoadedCheckpoint, tmp_path: Path) -> Iterator[Line]:
    frames = _frames(tmp_path)
    results, retention = tmp_path / "results.jsonl", tmp_path / "retained"
    config = InspectorConfig.model_validate(
        {
            "sources": [{"type": "directory", "path": str(frames), "camera_id": CAMERA}],
            "model": {
                "checkpoint": str(checkpoint.path),
                "device": "cpu",
                "warmup_batches": 0,
                "precision": "fp32",
            },
            "batcher": {"max_batch_size": 4, "max_wait_ms": 5},
            "sinks": {"kafka": {"enabled": False}, "jsonl": {"path": str(results)}},
            "http": {"host": "127.0.0.1", "port": 0, "admin_token": ADMIN},
            # Every frame retained, good ones too: the export's train/good needs them.
            "retention": {"enabled": True, "path": str(retention), "good_sample_rate": 1.0},
            "daemon": {"drain_timeout_s": 10},
        }
    )
    daemon = Daemon(config, registry=CollectorRegistry())
    thread = threading.Thread(target=daemon.run, name="label-loop-daemon")
    thread.start()
    running = Line(daemon, thread, checkpoint.path, frames, results, retention, tmp_path)

    def ready() -> bool:
        assert thread.is_alive(), "the daemon stopped during start-up"
        if daemon.server is None or not daemon.server.port:
            return False
        return requests.get(running.base + "/readyz", timeout=5).status_code == 200

    try:
        wait_until(ready, 120, "the daemon's /readyz 200")
        yield running
    finally:
        daemon.request_exit()
        thread.join(60)
        assert not thread.is_alive(), "the daemon did not stop"


def _verdicts(line: Line, model: str) -> dict[str, bool]:
    """Frame id -> flagged, of the results the served model ``model`` gave."""
    if not line.results.exists():
        return {}
    found = {}
    for text in line.results.read_text().splitlines():
        result = json.loads(text)
        if result["model"]["name"] == model:
            found[result["frame_id"]] = result["is_anomalous"]
    return found


def _play(line: Line, model: str) -> dict[str, bool]:
    """Wait until every frame has a verdict of ``model``; the verdicts."""
    total = len(list(line.frames.iterdir()))
    wait_until(lambda: len(_verdicts(line, model)) == total, 120, f"{total} verdicts of {model}")
    return _verdicts(line, model)


def _replay_with(line: Line, model: str, checkpoint: Path) -> dict[str, bool]:
    """Serve ``checkpoint`` as ``model`` for the camera and play the same frames again."""
    added = line.call("POST", "/v1/models", {"name": model, "checkpoint": str(checkpoint)})
    assert added.status_code == 201, added.text
    recipe = line.call("PUT", f"/v1/cameras/{CAMERA}", {"model": model})
    assert recipe.status_code == 200, recipe.text
    # The folder source ran dry: a fresh one with the same camera id plays the files again.
    assert line.call("DELETE", f"/v1/sources/{CAMERA}").status_code == 200
    source = {"type": "directory", "path": str(line.frames), "camera_id": CAMERA}
    assert line.call("POST", "/v1/sources", source).status_code == 201
    return _play(line, model)


def _tally(verdicts: dict[str, bool]) -> tuple[set[str], set[str]]:
    """False alarms (flagged good frames) and catches (flagged defects), by frame id."""
    flagged = {frame for frame, anomalous in verdicts.items() if anomalous}
    false_alarms = {frame for frame in flagged if frame.startswith("good_")}
    return false_alarms, flagged - false_alarms


def test_labelled_false_alarms_give_a_model_with_fewer_of_them(line: Line) -> None:
    models = line.call("GET", "/v1/models").json()
    first = next(m["name"] for m in models if m["default"])
    before = _play(line, first)
    false_alarms, caught = _tally(before)
    assert false_alarms, "the stale thresholds raise false alarms on the new batch"
    assert caught, "the model catches missing parts"

    # Every frame is retained (good_sample_rate 1); the operator reviews the flagged ones.
    wait_until(
        lambda: (
            line.daemon.results.retention is not None
            and line.daemon.results.retention.store.count() == len(before)
        ),
        60,
        "every frame retained",
    )
    listed = line.call("GET", f"/v1/results?camera={CAMERA}&flagged=true&limit=500")
    assert listed.status_code == 200, listed.text
    assert {i["frame_id"] for i in listed.json()["items"]} == false_alarms | caught
    for frame in sorted(false_alarms | caught):
        body = (
            {"label": "false_alarm"}
            if frame in false_alarms
            else {"label": "defect", "kind": "missing"}
        )
        labelled = line.call("POST", f"/v1/results/{quote(frame, safe='')}/label", body)
        assert labelled.status_code == 200, labelled.text

    dataset = line.work / "dataset"
    export = ["dataset", "export", "--retention", str(line.retention), "--out", str(dataset)]
    assert main([*export, "--camera", CAMERA]) == 0
    # Every good frame is in the dataset (the false alarms by their label), a share held out.
    train_good = list((dataset / "train" / "good").iterdir())
    test_good = list((dataset / "test" / "good").iterdir())
    goods = sum(frame.startswith("good_") for frame in before)
    assert len(train_good) + len(test_good) == goods
    assert len(list((dataset / "test" / "missing").iterdir())) == len(caught)

    recalibrated = line.work / "recalibrated.safetensors"
    retrained = line.work / "retrained.safetensors"
    calibrate = ["calibrate", "--checkpoint", str(line.checkpoint), "--out", str(recalibrated)]
    calibrate += ["--good", str(dataset / "train" / "good"), "--false-alarm-rate", TARGET_RATE]
    assert main([*calibrate, "--device", "cpu", "--precision", "fp32"]) == 0
    assert main(["train", "--data", str(dataset), "--out", str(retrained), *TRAIN]) == 0

    lines = [f"label loop: {goods} good and {len(before) - goods} defective frames, "]
    lines[0] += f"{len(train_good)} exported to train/good"
    lines.append(f"  {first}: {len(false_alarms)} false alarms, {len(caught)} defects caught")
    outcomes = {}
    for model, checkpoint in (("recalibrated", recalibrated), ("retrained", retrained)):
        outcomes[model] = _tally(_replay_with(line, model, checkpoint))
        lines.append(
            f"  {model}: {len(outcomes[model][0])} false alarms, "
            f"{len(outcomes[model][1])} defects caught"
        )
    print("\n" + "\n".join(lines))
    for model, (false_alarms_now, caught_now) in outcomes.items():
        assert len(false_alarms_now) < len(false_alarms), model
        assert caught <= caught_now, f"{model}: caught before, missed now: {caught - caught_now}"
