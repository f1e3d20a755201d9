"""The daemon end to end over a real Kafka-protocol broker (Tansu, or INSPECTOR_TEST_BOOTSTRAP)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import cv2
import jsonschema
import numpy as np
import pytest
import yaml
from kafka_helpers import Topics, collect, create_topics, daemon_settings, produce
from prometheus_client import CollectorRegistry
from waiting import wait_until

from inspector.checkpoint import LoadedCheckpoint
from inspector.messages import result_json_schema
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon

pytestmark = pytest.mark.integration

DEFECTS = ("crack", "missing", "scratch")


def _settings(bootstrap: str, topics: Topics, ckpt: Path) -> dict[str, object]:
    return daemon_settings(bootstrap, topics, ckpt, daemon={"drain_timeout_s": 60})


def _jpeg(path: Path) -> bytes:
    return cv2.imencode(".jpg", cv2.imread(str(path)), [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def _good_and_defective(root: Path, n_good: int, n_each: int) -> list[tuple[str, bytes]]:
    out = [
        (f"good/{p.name}", _jpeg(p)) for p in sorted((root / "test" / "good").iterdir())[:n_good]
    ]
    for kind in DEFECTS:
        out += [
            (f"{kind}/{p.name}", p.read_bytes())
            for p in sorted((root / "test" / kind).iterdir())[:n_each]
        ]
    return out


def _bbox_hits_mask(defects: list[dict[str, object]], mask: np.ndarray) -> bool:
    for d in defects:
        x, y, w, h = d["bbox"]  # type: ignore[misc]
        if mask[y : y + h, x : x + w].any():
            return True
    return False


def test_results_and_dead_letters_end_to_end(
    bootstrap: str,
    checkpoint: LoadedCheckpoint,
    data_root: Path,
    group_offsets: Callable[[str], dict[int, int]],
) -> None:
    topics = Topics.unique()
    create_topics(bootstrap, topics)
    good_bad = _good_and_defective(data_root, n_good=4, n_each=2)
    jpeg = good_bad[0][1]
    broken = [
        ("bad/empty", b""),
        ("bad/text", b"this is not an image"),
        ("bad/truncated", jpeg[: len(jpeg) // 2]),
    ]
    # Frames sent before the daemon's group ever existed must be inspected (earliest).
    produce(bootstrap, topics.frames, good_bad + broken)

    registry = CollectorRegistry()
    daemon = Daemon(
        InspectorConfig.model_validate(_settings(bootstrap, topics, checkpoint.path)),
        registry=registry,
    )
    exit_code: list[int] = []
    thread = threading.Thread(target=lambda: exit_code.append(daemon.run()))
    thread.start()
    try:
        got = collect(bootstrap, topics, expected=len(good_bad) + len(broken))
        # Every offset is acknowledged: a periodic commit reaches the end of the log.
        per_partition = Counter(p for p, _ in got.coordinates())
        wait_until(
            lambda: group_offsets(topics.group) == dict(per_partition), 30, "the end of the log"
        )
    finally:
        daemon.request_exit()
        thread.join(60)
    assert exit_code == [0]

    by_id = Counter(r["frame_id"] for r in got.results)
    assert by_id == Counter(frame_id for frame_id, _ in good_bad)  # exactly one each
    schema = result_json_schema()
    for result in got.results:
        jsonschema.validate(result, schema)
    dead = {h["frame_id"].decode(): (value, h) for _, value, h in got.dead}
    assert sorted(dead) == sorted(frame_id for frame_id, _ in broken)
    for frame_id, payload in broken:
        value, headers = dead[frame_id]
        assert value == payload  # the original bytes, for replay after a fix
        assert headers["source_topic"].decode() == topics.frames
        assert {"error", "error_type", "source_partition", "source_offset", "failed_at"} <= set(
            headers
        )
    assert dead["bad/empty"][1]["error_type"] == b"empty"

    defective = [r for r in got.results if not str(r["frame_id"]).startswith("good/")]
    flagged = [r for r in defective if r["is_anomalous"]]
    assert len(flagged) >= len(defective) // 2
    for r in flagged:
        kind, name = str(r["frame_id"]).split("/")
        mask = (
            cv2.imread(
                str(data_root / "ground_truth" / kind / name.replace(".png", "_mask.png")),
                cv2.IMREAD_GRAYSCALE,
            )
            > 0
        )
        assert r["defects"] and _bbox_hits_mask(r["defects"], mask), r["frame_id"]

    # Every offset was acknowledged, so the group's committed position is the end of the log.
    assert group_offsets(topics.group) == dict(per_partition)
    assert registry.get_sample_value("inspector_frames_received_total", {"source": "kafka"}) == len(
        good_bad
    ) + len(broken)


def _start(config_path: Path, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "inspector", "run", "--config", str(config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )


@pytest.mark.parametrize("kill", [signal.SIGKILL, signal.SIGTERM])
def test_restart_loses_nothing(
    bootstrap: str,
    checkpoint: LoadedCheckpoint,
    data_root: Path,
    tmp_path: Path,
    kill: signal.Signals,
) -> None:
    topics = Topics.unique()
    create_topics(bootstrap, topics)
    frames = _good_and_defective(data_root, n_good=12, n_each=4) * 4
    frames = [(f"{i}:{fid}", value) for i, (fid, value) in enumerate(frames)]
    config = tmp_path / "daemon.yaml"
    settings = _settings(bootstrap, topics, checkpoint.path)
    # Small queues, so a signal finds most frames still unread in Kafka.
    settings["batcher"] = {"max_batch_size": 2, "max_wait_ms": 5, "queue_size": 4}
    config.write_text(yaml.safe_dump(settings))
    log = tmp_path / "daemon.log"
    produce(bootstrap, topics.frames, frames)

    first = _start(config, log)
    try:
        wait_until(
            lambda: len(collect(bootstrap, topics, 5, timeout=1).results) >= 5, 120, "5 results"
        )
        first.send_signal(kill)
        code = first.wait(60)
    finally:
        first.kill()
    if kill == signal.SIGTERM:
        assert code == 0, log.read_text()[-3000:]

    second = _start(config, log)
    try:
        wait_until(lambda: log.read_text().count("inspector running") == 2, 120, "the restart")
        got = collect(bootstrap, topics, expected=len(frames), timeout=180, distinct=True)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(60) == 0, log.read_text()[-3000:]
    seen = Counter(got.coordinates())
    assert len(seen) == len(frames), f"lost {len(frames) - len(seen)} frame(s)"  # zero losses
    duplicates = sum(n - 1 for n in seen.values())
    if kill == signal.SIGTERM:
        assert duplicates == 0  # a drained shutdown commits everything it delivered
    print(f"{kill.name}: {len(frames)} frames, {duplicates} duplicate(s)")
