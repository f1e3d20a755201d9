"""GenICam source throughput and cost, on Aravis' software GigE Vision camera (loopback).

Two phases, one JSON line on stdout and a section in the generated performance file:

- source alone: the ``genicam`` source in free run at ``--fps`` per pixel format, polled as
  fast as it hands frames out: frames/s achieved and the reader thread's CPU time per frame
  (Linux's per-thread counters), conversion included;
- through the daemon: the same camera feeding the daemon (a seeded random model, JSONL sink):
  results/s against the camera's rate, and frames dropped as stale (the newest frame wins when
  the model is slower than the camera).

    .venv/bin/python bench/genicam.py --fps 50 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry

from inspector.runtime.config import explicit_config
from inspector.runtime.config_genicam import GenicamSourceConfig, PixelFormat
from inspector.runtime.daemon import Daemon
from inspector.runtime.metrics import Metrics
from inspector.runtime.sources.aravis import list_devices
from inspector.runtime.sources.genicam import GenicamSource
from inspector.tools.benchmark.checkpoint import write_checkpoint
from inspector.tools.benchmark.options import BenchOptions, synthetic_jpegs
from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section

FAKE_CAMERA = "arv-fake-gv-camera-0.8"


def _thread_cpu_s(name: str) -> float:
    """CPU seconds (user + system) of this process's thread called ``name``."""
    thread = next(t for t in threading.enumerate() if t.name == name)
    fields = Path(f"/proc/self/task/{thread.native_id}/stat").read_text().rsplit(")", 1)[1]
    utime, stime = (int(v) for v in fields.split()[11:13])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def _start_camera(serial: str) -> subprocess.Popen[bytes]:
    binary = shutil.which(FAKE_CAMERA)
    if binary is None:
        sys.exit(f"{FAKE_CAMERA} is not on PATH: run bash .ci/ensure-aravis .venv")
    process = subprocess.Popen(
        [binary, "--interface", "127.0.0.1", "--serial", serial],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not any(d.serial == serial for d in list_devices()):
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            sys.exit(f"{FAKE_CAMERA} {serial} not discovered")
        time.sleep(0.2)
    return process


def source_alone(
    device: str, pixel_format: PixelFormat, fps: float, seconds: float
) -> dict[str, float]:
    registry = CollectorRegistry()
    config = GenicamSourceConfig(
        camera_id="bench", device=device, pixel_format=pixel_format, frame_rate=fps
    )
    source = GenicamSource(config, Metrics(registry))
    source.setup()
    try:
        while not source.poll(1.0):  # streaming, first frame in
            pass
        cpu0, t0, polled = _thread_cpu_s("genicam-bench"), time.monotonic(), 0
        while time.monotonic() - t0 < seconds:
            polled += len(source.poll(0.5))
        elapsed, cpu = time.monotonic() - t0, _thread_cpu_s("genicam-bench") - cpu0
    finally:
        source.close()
    stale = registry.get_sample_value(
        "inspector_frames_dropped_total", {"camera": "bench", "reason": "stale"}
    )
    incomplete = registry.get_sample_value(
        "inspector_camera_frames_incomplete_total", {"camera": "bench"}
    )
    grabbed = polled + (stale or 0)
    return {
        "frames_per_s": polled / elapsed,
        "reader_cpu_ms_per_frame": 1e3 * cpu / max(grabbed, 1),
        "incomplete": incomplete or 0,
    }


def through_daemon(device: str, fps: float, seconds: float, folder: Path) -> dict[str, float]:
    options = BenchOptions(
        mode="e2e", backbone="resnet18", image_size=128, batch_size=4, frames=8, device="cpu"
    )
    checkpoint = write_checkpoint(folder, options, torch.device("cpu"), synthetic_jpegs(8, 128, 0))
    results = folder / "results.jsonl"
    config = explicit_config(
        {
            "sources": [
                {
                    "type": "genicam",
                    "camera_id": "bench",
                    "device": device,
                    "pixel_format": "BayerRG8",
                    "frame_rate": fps,
                }
            ],
            "model": {"checkpoint": str(checkpoint), "device": "cpu", "warmup_batches": 1},
            "batcher": {"max_batch_size": 4, "max_wait_ms": 10},
            "sinks": {"kafka": {"enabled": False}, "jsonl": {"path": str(results)}},
            "http": {"host": "127.0.0.1", "port": 0},
        }
    )
    daemon = Daemon(config)
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while daemon.pipeline is None or daemon.readiness():
            if time.monotonic() > deadline:
                sys.exit(f"daemon not ready: {daemon.readiness()}")
            time.sleep(0.1)
        time.sleep(2.0)  # past warm-up
        count0, t0 = _lines(results), time.monotonic()
        time.sleep(seconds)
        count, elapsed = _lines(results) - count0, time.monotonic() - t0
        stale = daemon.registry.get_sample_value(
            "inspector_frames_dropped_total", {"camera": "bench", "reason": "stale"}
        )
    finally:
        daemon.request_exit()
        thread.join(60)
    return {"camera_fps": fps, "results_per_s": count / elapsed, "stale_dropped": stale or 0}


def _lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fps", type=float, default=50.0, help="camera frame rate, source alone")
    parser.add_argument("--daemon-fps", type=float, default=10.0, help="camera rate into daemon")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per phase")
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    serial = f"B{uuid.uuid4().hex[:6].upper()}"
    camera = _start_camera(serial)
    device = f"Aravis-Fake-{serial}"
    try:
        alone = {
            fmt: source_alone(device, fmt, args.fps, args.seconds) for fmt in ("Mono8", "BayerRG8")
        }
        with tempfile.TemporaryDirectory() as tmp:
            daemon = through_daemon(device, args.daemon_fps, args.seconds, Path(tmp))
    finally:
        camera.terminate()
        camera.wait(10)
    result = {"camera": "arv-fake-gv-camera 512x512", "source_alone": alone, "daemon": daemon}
    print(json.dumps(result))
    if not args.no_record:
        rows = [["phase", "pixel format", "camera fps", "frames/s", "reader CPU ms/frame"]]
        rows += [
            [
                "source alone",
                fmt,
                f"{args.fps:g}",
                f"{r['frames_per_s']:.1f}",
                f"{r['reader_cpu_ms_per_frame']:.2f}",
            ]
            for fmt, r in alone.items()
        ]
        rows.append(
            [
                "daemon (resnet18 128 px, CPU)",
                "BayerRG8",
                f"{args.daemon_fps:g}",
                f"{daemon['results_per_s']:.1f} results",
                "",
            ]
        )
        write_section(
            args.record,
            "genicam",
            "GenICam source (software GigE Vision camera, loopback)",
            markdown_table(rows)
            + f"\nStale frames dropped while the model ran: {daemon['stale_dropped']:.0f}.\n",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
