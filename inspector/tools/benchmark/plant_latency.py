"""Capture-to-PLC latency of the real daemon: from ``captured_at`` to OPC UA and MQTT subscribers.

One run of ``Daemon`` per rate, each in a process of its own
(:mod:`inspector.tools.benchmark.plant_process`): the demo's cameras -> batcher -> worker ->
post-processing -> the JSON-lines sink, the MQTT sink and the OPC UA server, as production
runs them (OPC UA: ``Basic256Sha256`` with the daemon's certificate, a trusted client
certificate and a user; MQTT: TLS and a password at QoS 1, to a Debian Mosquitto of the
benchmark's own on loopback). The model, frames and batching are the retention benchmark's
(:mod:`inspector.tools.benchmark.retention_windows`: the demo's line, resnet18 at 128 px,
seeded weights, the demo's generated parts).

Frames need a ``captured_at`` (a directory source sets none), so each camera is a camera
source playing a video of its generated frames, which stamps each frame when it reads it:

- ``demo``: a live camera at the demo's per-camera rate (the file played at its frame rate,
  newest frame only: a frame the daemon was too slow for is dropped as stale, as a live
  camera's is);
- ``saturation``: the file read as fast as the pipeline takes it, every frame (the camera
  source's read-ahead of 4 frames: a frame's wait there counts, as a queue at the camera does).

Subscribers in the benchmark's process, connected before the first frame (the videos are
moved into place only then): an asyncua client (:mod:`inspector.tools.benchmark.plant_opcua`)
and a paho-mqtt client on ``<prefix>/+/result``. A frame's latency to a sink is the moment its
value reached that subscriber (epoch seconds) less its ``captured_at`` (the same machine's
clock). Its capture-to-verdict latency (``processed_at`` less ``captured_at``) is the daemon's
own part.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspector.errors import InspectorError
from inspector.tools.benchmark.mosquitto import Mosquitto, Subscriber, free_port
from inspector.tools.benchmark.opcua_pki import Pki, make_pki
from inspector.tools.benchmark.plant_opcua import OpcuaEndpoint, OpcuaWatcher
from inspector.tools.benchmark.report import latency_fields
from inspector.tools.benchmark.retention_figures import RateName
from inspector.tools.benchmark.retention_windows import (
    Prepared,
    camera_ids,
    prepare,
    window_config,
)
from inspector.tools.benchmark.retention_windows import Settings as LineSettings

#: The child script.
SCRIPT = Path(__file__).with_name("plant_process.py")
RATES: tuple[RateName, ...] = ("demo", "saturation")
SINKS = ("opcua", "mqtt")
NAMESPACE = "urn:inspector:bench-verdicts"
SERVER_URI = "urn:inspector:bench-daemon"
CLIENT_URI = "urn:inspector:bench-plc"
OPCUA_USER, OPCUA_PASSWORD = "plc", "bench-only-plc-password"
TOPIC_PREFIX = "bench/plant"
#: Longest wait for the subscribers' last values once the daemon has delivered everything.
SETTLE_S = 10.0


@dataclass(frozen=True)
class PlantSettings:
    """One benchmark run (``bench/plant_latency.py``'s flags).

    Attributes:
        line: The demo's line as the retention benchmark builds it (frames per rate, cameras,
            per-camera rate, model, batching; ``pairs`` unused).
        deadline_ms: Every camera's ``deadline_ms`` (``Late`` on OPC UA and in MQTT).
        min_publishing_interval_ms: ``sinks.opcua.min_publishing_interval_ms``; the client asks
            for 0 ms and gets this.
        timeout_s: Longest a run's process may take besides its frames' time.
    """

    line: LineSettings
    deadline_ms: int
    min_publishing_interval_ms: int = 20
    timeout_s: float = 600.0


@dataclass
class Plant:
    """What every run shares: the model and videos, the certificates and the broker."""

    prepared: Prepared
    videos: dict[RateName, dict[str, Path]]
    pki: Pki
    broker: Mosquitto


def write_videos(settings: PlantSettings, prepared: Prepared) -> dict[RateName, dict[str, Path]]:
    """One MJPEG video per rate and camera of the generated frames, at the demo's rate."""
    videos: dict[RateName, dict[str, Path]] = {}
    for rate in RATES:
        videos[rate] = {}
        for camera, folder in prepared.frames[rate]:
            path = settings.line.work / "videos" / rate / f"{camera}.avi"
            path.parent.mkdir(parents=True, exist_ok=True)
            size = settings.line.frame_size
            writer = cv2.VideoWriter(
                str(path),
                cv2.VideoWriter.fourcc(*"MJPG"),
                settings.line.fps_per_camera,
                (size, size),
            )
            if not writer.isOpened():
                raise InspectorError(f"bench: OpenCV cannot write the video {path}")
            for frame in sorted(folder.iterdir()):
                image = cv2.imdecode(np.fromfile(frame, np.uint8), cv2.IMREAD_COLOR)
                if image is None:
                    raise InspectorError(f"bench: cannot decode the generated frame {frame}")
                writer.write(cv2.resize(image, (size, size)))
            writer.release()
            videos[rate][camera] = path
    return videos


def run_config(
    settings: PlantSettings, plant: Plant, rate: RateName, folder: Path, opcua_port: int
) -> dict[str, Any]:
    """The daemon configuration of one rate: the retention benchmark's, sources and sinks ours."""
    config = window_config(settings.line, plant.prepared, rate, False, folder)
    sources = [
        {
            "type": "camera",
            "camera_id": camera,
            "uri": str(folder / "cameras" / video.name),
            "live": rate == "demo",
            # The file appears once the subscribers are connected: look for it often.
            "reconnect_initial_s": 0.05,
            "reconnect_max_s": 0.1,
        }
        for camera, video in plant.videos[rate].items()
    ]
    pki = plant.pki
    config["sources"] = sources
    config["cameras"] = {"*": {"deadline_ms": settings.deadline_ms}}
    config["sinks"] |= {
        "mqtt": plant.broker.sink_settings(
            topic_prefix=TOPIC_PREFIX, client_id=f"bench-daemon-{rate}"
        ),
        "opcua": {
            "enabled": True,
            "host": "127.0.0.1",
            "port": opcua_port,
            "namespace_uri": NAMESPACE,
            "certificate_file": str(pki.server.certificate),
            "private_key_file": str(pki.server.key),
            "trusted_clients_dir": str(pki.trusted_dir),
            "security_modes": ["sign", "sign_and_encrypt"],
            "users": {OPCUA_USER: OPCUA_PASSWORD},
            "min_publishing_interval_ms": settings.min_publishing_interval_ms,
        },
    }
    return config


def _settle(done: Callable[[], bool], timeout: float) -> None:
    """Wait until ``done()`` or ``timeout`` seconds; what did not come shows in the counts."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.02)


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def quantiles(latencies_ms: list[float]) -> dict[str, float | None]:
    """``p50_ms``, ``p95_ms``, ``p99_ms`` (linear interpolation); ``None`` each without any."""
    keys = ("p50_ms", "p95_ms", "p99_ms")
    if not latencies_ms:
        return dict.fromkeys(keys)
    fields = latency_fields(latencies_ms, "frame")
    return {k: float(fields[k]) for k in keys}


def _latencies(arrivals: dict[str, float], captured: dict[str, float]) -> list[float]:
    return [1000 * (at - captured[f]) for f, at in arrivals.items() if f in captured]


def run_rate(settings: PlantSettings, plant: Plant, rate: RateName) -> dict[str, Any]:
    """One daemon run at ``rate`` with both subscribers; its figures.

    Raises:
        InspectorError: The daemon failed, ran too long, or a subscriber could not connect.
    """
    folder = settings.line.work / "runs" / rate
    (folder / "cameras").mkdir(parents=True)
    port = free_port()
    config = run_config(settings, plant, rate, folder, port)
    cameras = list(plant.videos[rate])
    spec, out, log_path = (folder / n for n in ("spec.json", "out.json", "daemon.log"))
    spec.write_text(json.dumps({"config": config, "cameras": cameras, "linger_s": 60}))
    frames = settings.line.frames(rate)
    pace_s = frames / settings.line.cameras / settings.line.fps_per_camera
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
    mqtt = Subscriber(
        plant.broker, TOPIC_PREFIX, f"bench-plc-{rate}", topic=f"{TOPIC_PREFIX}/+/result"
    )
    opcua = OpcuaWatcher(
        OpcuaEndpoint(
            f"opc.tcp://127.0.0.1:{port}/",
            NAMESPACE,
            str(plant.pki.server.certificate),
            plant.pki.plc,
            OPCUA_USER,
            OPCUA_PASSWORD,
        ),
        cameras,
    )
    with log_path.open("wb") as child_log:
        child = subprocess.Popen(
            [sys.executable, "-I", str(SCRIPT), str(spec), str(out)],
            cwd=folder,
            env=env,
            stdout=child_log,
            stderr=child_log,
        )

        def failed(why: str) -> InspectorError:
            if child.poll() is None:
                child.kill()
                child.wait()
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            return InspectorError(f"bench: the {rate} run {why}; the daemon's log ends:\n{tail}")

        try:
            try:
                opcua.start(timeout=120)
            except Exception as exc:
                raise failed(f"had no OPC UA subscriber ({exc!r})") from exc
            # Now the cameras' files appear: every frame is captured after both subscribed.
            released = time.time()
            for video in plant.videos[rate].values():
                shutil.copy(video, folder / "cameras" / f".{video.name}")
                os.replace(folder / "cameras" / f".{video.name}", folder / "cameras" / video.name)
            deadline = time.monotonic() + settings.timeout_s + pace_s
            while not (folder / "finished").exists():
                if child.poll() is not None or time.monotonic() > deadline:
                    raise failed("ended early" if child.poll() is not None else "ran too long")
                time.sleep(0.05)
            results = [json.loads(line) for line in (folder / "results.jsonl").open()]
            # MQTT at QoS 1: every result comes. OPC UA: a camera's last result is never
            # replaced, and one subscription's changes come in order, so its arrival is the end.
            ids = {r["frame_id"] for r in results}
            last = {r["camera_id"]: r["frame_id"] for r in results}.values()
            _settle(lambda: ids <= {m.json()["frame_id"] for m in mqtt.received()}, SETTLE_S)
            _settle(lambda: all(f in opcua.seen for f in last), SETTLE_S)
            ended = time.time()
            # The client leaves before the server stops, as a PLC would not see it go.
            opcua.stop()
            (folder / "stop").touch()
            code = child.wait(60)
        finally:
            opcua.stop()
            mqtt.close()
            if child.poll() is None:  # interrupted: the daemon must not outlive the benchmark
                child.kill()
                child.wait()
    if code != 0 or not out.exists():
        raise failed(f"exited with {code}")
    report = json.loads(out.read_text())
    return rate_figures(settings, rate, results, opcua, mqtt, report, ended - released)


def rate_figures(
    settings: PlantSettings,
    rate: RateName,
    results: list[dict[str, Any]],
    opcua: OpcuaWatcher,
    mqtt: Subscriber,
    report: dict[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    """Latency percentiles per sink and the counts of one run."""
    captured = {r["frame_id"]: _epoch(r["captured_at"]) for r in results if r.get("captured_at")}
    verdict_ms = [
        1000 * (_epoch(r["processed_at"]) - captured[r["frame_id"]])
        for r in results
        if r["frame_id"] in captured
    ]
    mqtt_seen: dict[str, float] = {}
    for message in mqtt.received():
        mqtt_seen.setdefault(message.json()["frame_id"], message.arrived)
    seen = {"opcua": opcua.seen, "mqtt": mqtt_seen}
    dropped = sum(report["opcua_updates_dropped"].values())
    sinks: dict[str, Any] = {}
    for sink in SINKS:
        latencies = _latencies(seen[sink], captured)
        daemon = report["plant"][sink]
        sinks[sink] = {
            **quantiles(latencies),
            "max_ms": max(latencies, default=None),
            "seen": len(latencies),
            "produced": len(results),
            "unknown_seen": len(seen[sink]) - len(latencies),
            # The daemon's own view: capture to served (opcua) or PUBACK (mqtt).
            "daemon_mean_ms": 1000 * daemon["sum_s"] / daemon["count"] if daemon["count"] else None,
            "daemon_observed": daemon["count"],
            "late": daemon["late"],
        }
    sinks["opcua"] |= {
        "updates_dropped": dropped,
        "notifications": opcua.notifications,
        "publishing_interval_ms": opcua.revised_interval_ms,
    }
    frames = settings.line.frames(rate)
    return {
        "frames": frames,
        "fps_per_camera": settings.line.fps_per_camera if rate == "demo" else None,
        "produced": len(results),
        "stale_dropped": frames - len(results),
        "sinks": sinks,
        "capture_to_verdict": quantiles(verdict_ms) | {"n": len(verdict_ms)},
        "wall_s": wall_s,
    }


def run_bench(settings: PlantSettings) -> dict[str, Any]:
    """Prepare, start the broker, run each rate, stop the broker; the figures per rate."""
    t0 = time.monotonic()
    line = settings.line
    prepared = prepare(line)
    videos = write_videos(settings, prepared)
    pki = make_pki(line.work / "pki", SERVER_URI, CLIENT_URI)
    (line.work / "mosquitto").mkdir(parents=True)
    broker = Mosquitto(line.work / "mosquitto").prepare()
    broker.start()
    plant = Plant(prepared, videos, pki, broker)
    try:
        rates = {rate: run_rate(settings, plant, rate) for rate in RATES}
    finally:
        broker.stop()
    return {"rates": rates, "wall_s": time.monotonic() - t0, "cameras": camera_ids(line.cameras)}


__all__ = [
    "PlantSettings",
    "quantiles",
    "rate_figures",
    "run_bench",
    "run_config",
    "run_rate",
    "write_videos",
]
