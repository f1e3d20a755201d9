"""`inspector run` with a GenICam camera (Aravis' software GigE Vision camera on loopback).

The daemon streams the camera in software-trigger mode; each trigger through the control API
becomes exactly one frame, inspected once, with its result in the JSONL file and on the
results topic.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import requests
from genicam_camera import fake_camera
from kafka_helpers import Topics, collect, create_topics

from inspector.checkpoint import LoadedCheckpoint
from inspector.runtime.config import InspectorConfig
from inspector.runtime.daemon import Daemon

pytestmark = pytest.mark.integration

TOKEN = "genicam-token-0123456789"


def test_every_triggered_frame_is_inspected_once(
    bootstrap: str, checkpoint: LoadedCheckpoint, tmp_path: Path
) -> None:
    topics = Topics.unique()
    create_topics(bootstrap, topics)
    jsonl = tmp_path / "results.jsonl"
    with fake_camera() as camera:
        config = InspectorConfig.model_validate(
            {
                "kafka": topics.kafka_settings(bootstrap),
                "sources": [
                    {
                        "type": "genicam",
                        "camera_id": "line1-top",
                        "device": camera.device.id,
                        "pixel_format": "BayerRG8",
                        "region": [0, 0, 256, 192],
                        "trigger": {"mode": "software"},
                    }
                ],
                "model": {"checkpoint": str(checkpoint.path), "device": "cpu"},
                "sinks": {"jsonl": {"path": str(jsonl)}},
                "http": {"host": "127.0.0.1", "port": 0, "admin_token": TOKEN},
            }
        )
        daemon = Daemon(config)
        exit_code: list[int] = []
        thread = threading.Thread(target=lambda: exit_code.append(daemon.run()), daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 90
            while not (daemon.control is not None and not daemon.readiness()):
                assert thread.is_alive() and time.monotonic() < deadline, daemon.readiness()
                time.sleep(0.1)
            assert daemon.server is not None
            url = f"http://127.0.0.1:{daemon.server.port}/v1/sources/line1-top/trigger"
            for _ in range(5):
                answer = requests.post(
                    url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
                )
                assert answer.status_code == 200, answer.text
                time.sleep(0.4)  # one frame per trigger: none merged, none dropped as stale
            got = collect(bootstrap, topics, expected=5, timeout=60)
            on_topic = [r["frame_id"] for r in got.results]
            in_file = [json.loads(line)["frame_id"] for line in jsonl.read_text().splitlines()]
            assert sorted(on_topic) == sorted(in_file) == [f"line1-top:{i}" for i in range(1, 6)]
            result = got.results[0]
            assert result["camera_id"] == "line1-top" and result["image_size"] == [192, 256]
            assert not got.dead

            # The camera dies: not ready, with the reason; it comes back: frames resume.
            camera.kill()
            readyz = f"http://127.0.0.1:{daemon.server.port}/readyz"
            deadline = time.monotonic() + 30
            while (answer := requests.get(readyz, timeout=10)).status_code == 200:
                assert time.monotonic() < deadline, "still ready with the camera gone"
                time.sleep(0.2)
            assert any(r.startswith("genicam line1-top:") for r in answer.json()["reasons"])
            with fake_camera(serial=camera.device.serial):
                deadline = time.monotonic() + 60
                while requests.get(readyz, timeout=10).status_code != 200:
                    assert thread.is_alive() and time.monotonic() < deadline, "no reconnect"
                    time.sleep(0.2)
                answer = requests.post(
                    url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
                )
                assert answer.status_code == 200
                again = collect(bootstrap, topics, expected=6, timeout=60)
        finally:
            daemon.request_exit()
            thread.join(60)
    assert exit_code == [0]
    assert len(again.results) == 6 and len({r["frame_id"] for r in again.results}) == 6
