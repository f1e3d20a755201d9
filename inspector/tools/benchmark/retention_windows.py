"""What retention costs the real daemon: results/s with retention on and off, alternating windows.

Each window is one run of ``Daemon`` (as ``inspector run`` runs it) in a process of its own
(:mod:`inspector.tools.benchmark.retention_process`): the demo's two cameras as directory
sources of generated frames (the demo's 256 px synthetic metal parts, every fourth with a
scratch) -> batcher -> worker -> post-processing -> the JSON-lines sink, and with retention on,
the retention sink beside it (a fresh folder per window). The model is small (resnet18 at
128 px, the demo's; seeded random weights, ``weights: none``) with thresholds that flag about a
quarter of the frames (:func:`inspector.tools.benchmark.checkpoint.calibrate`), and retention
keeps every flagged frame and the demo's share of good ones.

Two rates, each in windows alternating off, on, off, on, ...:

- ``demo``: each camera paced at the demo's per-camera rate (directory source ``fps``);
- ``saturation``: unpaced, the folders read as fast as the pipeline takes them.

A window's rate is its results over the span from its first frame's read (the earliest
``processed_at`` less its ``latency_ms.total``) to its last result's ``processed_at``, so
loading and warm-up are left out; its CPU time is the process's over that same span
(interpolated from the child's samples) per result, and the retention writer thread's whole
life per result. At the demo's rate the daemon keeps the pace either way, so results/s shows
only whether it still does; what retention takes of the machine there is the CPU per result.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from inspector.errors import InspectorError
from inspector.model.config import Backbone
from inspector.model.fastpath import in_passing_thread
from inspector.tools.benchmark.checkpoint import write_checkpoint
from inspector.tools.benchmark.options import BenchOptions, synthetic_jpegs
from inspector.tools.benchmark.retention_figures import (
    PACE_KEPT,
    RateName,
    Window,
    summarise,
    window_figures,
)
from inspector.tools.demo.setup import DemoOptions, demo_config

log = logging.getLogger(__name__)

#: The child script.
SCRIPT = Path(__file__).with_name("retention_process.py")


def demo_line() -> tuple[DemoOptions, dict[str, Any]]:
    """The demo's options and the parts of its daemon configuration a window copies.

    Read from the demo itself, so the benchmark follows it: cameras and rate, batcher, model
    warm-up and the ``retention:`` section.
    """
    opts = DemoOptions()
    config = demo_config(opts, "127.0.0.1:9", Path("unused.safetensors"), 0)
    return opts, {
        # What sets how frames are batched; the queue and memory bounds stay the defaults.
        "batcher": {
            "max_batch_size": config.batcher.max_batch_size,
            "max_wait_ms": config.batcher.max_wait_ms,
        },
        "warmup_batches": config.model.warmup_batches,
        "retention": config.retention.model_dump(mode="json"),
    }


@dataclass(frozen=True)
class Settings:
    """One benchmark run (``bench/retention.py``'s flags).

    Attributes:
        pairs: Windows per rate and condition (off, on, off, on, ...: ``2 * pairs`` per rate).
        demo_frames: Frames per window at the demo's rate, over all cameras.
        saturation_frames: Frames per window at saturation.
        cameras: Cameras (directory sources); the demo's.
        fps_per_camera: The demo's rate per camera.
        backbone: The model's encoder.
        image_size: Model input in pixels.
        frame_size: Generated frames' size in pixels.
        precision: ``model.precision`` (fixed: ``auto`` could choose differently per window).
        good_sample_rate: ``retention.good_sample_rate``.
        max_bytes: ``retention.max_bytes``.
        image_format: ``retention.image_format`` (directory frames are encoded, not kept).
        daemon: The demo's batcher and warm-up (see :func:`demo_line`).
        work: Where the windows' folders go (on the disk retention would write to).
        seed: Seeds the weights and the frames.
        timeout_s: Longest a window's process may run besides its frames' time.
    """

    pairs: int
    demo_frames: int
    saturation_frames: int
    cameras: int
    fps_per_camera: float
    backbone: Backbone = "resnet18"
    image_size: int = 128
    frame_size: int = 256
    precision: Literal["fp32", "bf16"] = "fp32"
    good_sample_rate: float = 0.01
    max_bytes: int = 512 * 1024**2
    image_format: Literal["png", "jpeg"] = "png"
    daemon: dict[str, Any] = field(default_factory=dict)
    work: Path = Path("bench-retention")
    seed: int = 0
    timeout_s: float = 600.0

    def frames(self, rate: RateName) -> int:
        """Frames per window at ``rate``: a multiple of the cameras, at least one per camera."""
        total = self.demo_frames if rate == "demo" else self.saturation_frames
        return max(self.cameras, total - total % self.cameras)


@dataclass(frozen=True)
class Prepared:
    """What every window runs on: a frames folder per rate and camera, and the checkpoint."""

    frames: dict[RateName, list[tuple[str, Path]]]
    checkpoint: Path


def camera_ids(n: int) -> list[str]:
    """The demo's camera ids (``line1-cam1``, ...)."""
    return [f"line1-cam{i + 1}" for i in range(n)]


def prepare(settings: Settings) -> Prepared:
    """Generate the frames (one folder per rate and camera) and the checkpoint."""
    cameras = camera_ids(settings.cameras)
    folders: dict[RateName, list[tuple[str, Path]]] = {}
    rates: tuple[RateName, ...] = ("demo", "saturation")
    most = max(settings.frames(r) for r in rates)
    jpegs = synthetic_jpegs(most, settings.frame_size, settings.seed)
    for rate in rates:
        folders[rate] = []
        for c, camera in enumerate(cameras):
            folder = settings.work / "frames" / rate / camera
            folder.mkdir(parents=True, exist_ok=True)
            # Frame ids are the file names: distinct per camera, as the demo's.
            for k, i in enumerate(range(c, settings.frames(rate), settings.cameras)):
                (folder / f"{camera}-{k:05d}.jpg").write_bytes(jpegs[i])
            folders[rate].append((camera, folder))
    options = BenchOptions(
        mode="e2e",
        backbone=settings.backbone,
        image_size=settings.image_size,
        device="cpu",
        seed=settings.seed,
    )
    options.model_config()  # a wrong size is refused before anything runs
    # On a thread that ends with it: the parent keeps no OpenMP team beside the windows.
    checkpoint = in_passing_thread(
        lambda: write_checkpoint(settings.work, options, torch.device("cpu"), jpegs)
    )
    return Prepared(folders, checkpoint)


def window_config(
    settings: Settings, prepared: Prepared, rate: RateName, retention: bool, folder: Path
) -> dict[str, Any]:
    """The daemon configuration of one window."""
    pace = {"fps": settings.fps_per_camera} if rate == "demo" else {}
    sources = [
        {"type": "directory", "camera_id": camera, "path": str(path), **pace}
        for camera, path in prepared.frames[rate]
    ]
    kept = {
        **settings.daemon.get("retention", {}),
        "enabled": retention,
        "path": str(folder / "retained"),
        "good_sample_rate": settings.good_sample_rate,
        "max_bytes": settings.max_bytes,
        "image_format": settings.image_format,
    }
    return {
        "sources": sources,
        "model": {
            "checkpoint": str(prepared.checkpoint),
            "device": "cpu",
            "precision": settings.precision,
            "warmup_batches": settings.daemon.get("warmup_batches", 1),
            "auto_cache_dir": str(settings.work / "auto-cache"),
        },
        "batcher": settings.daemon.get("batcher", {}),
        "sinks": {"kafka": {"enabled": False}, "jsonl": {"path": str(folder / "results.jsonl")}},
        "http": {"host": "127.0.0.1", "port": 0},
        "retention": kept if retention else {"enabled": False},
    }


@dataclass(frozen=True)
class WindowRun:
    """What one window's daemon process left.

    Attributes:
        out: What the process measured (its ``out.json``).
        process_s: The process's wall time, start-up included.
        lines: The JSON-lines sink's lines (one per result).
        tail: The end of the process's log, for error messages.
    """

    out: dict[str, Any]
    process_s: float
    lines: list[str]
    tail: str


def run_window_process(
    settings: Settings, config: dict[str, Any], rate: RateName, folder: Path
) -> WindowRun:
    """Run one window's daemon (``config``) in a process of its own, in a new ``folder``.

    Raises:
        InspectorError: The process failed or ran too long.
    """
    folder.mkdir(parents=True)
    spec, out, log_path = (folder / n for n in ("spec.json", "out.json", "child.log"))
    spec.write_text(json.dumps({"config": config}))
    frames = settings.frames(rate)
    pace_s = frames / settings.cameras / settings.fps_per_camera if rate == "demo" else 0.0
    # INSPECTOR_* variables stay out: the window runs what the benchmark configured.
    env = {k: v for k, v in os.environ.items() if not k.startswith("INSPECTOR_")}
    t0 = time.monotonic()
    with log_path.open("wb") as child_log:
        child = subprocess.Popen(
            [sys.executable, "-I", str(SCRIPT), str(spec), str(out)],
            cwd=folder,
            env=env,
            stdout=child_log,
            stderr=child_log,
        )
        try:
            code: int | None = child.wait(settings.timeout_s + pace_s)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            code = None
    process_s = time.monotonic() - t0
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
    if code != 0 or not out.exists():
        why = "ran too long" if code is None else f"exited with {code}"
        raise InspectorError(f"bench: the {rate} window's daemon {why}; its log ends:\n{tail}")
    results = folder / "results.jsonl"
    lines = results.read_text().splitlines() if results.exists() else []
    return WindowRun(json.loads(out.read_text()), process_s, lines, tail)


def run_window(
    settings: Settings, prepared: Prepared, rate: RateName, retention: bool, folder: Path
) -> Window:
    """One window in a process of its own; its folder's retained files are removed after.

    Raises:
        InspectorError: The process failed or ran too long, or frames are missing.
    """
    config = window_config(settings, prepared, rate, retention, folder)
    ran = run_window_process(settings, config, rate, folder)
    if len(ran.lines) != settings.frames(rate):
        raise InspectorError(
            f"bench: the {rate} window delivered {len(ran.lines)} results for "
            f"{settings.frames(rate)} frames; its log ends:\n{ran.tail}"
        )
    window = window_figures(rate, retention, ran.lines, ran.out, ran.process_s)
    shutil.rmtree(folder / "retained", ignore_errors=True)  # the disk is not the benchmark's
    return window


def run_bench(
    settings: Settings, on_window: Callable[[int, int, Window], None] | None = None
) -> dict[str, Any]:
    """Prepare, run every window (per pair: each rate off then on), and summarise.

    Args:
        settings: What to run.
        on_window: Called after each window with its number, the total and its figures.
    """
    t0 = time.monotonic()
    prepared = prepare(settings)
    rates: tuple[RateName, ...] = ("demo", "saturation")
    plan = [(r, on) for _ in range(settings.pairs) for r in rates for on in (False, True)]
    windows: list[Window] = []
    for n, (rate, on) in enumerate(plan, 1):
        folder = settings.work / "windows" / f"{n:02d}-{rate}-{'on' if on else 'off'}"
        windows.append(run_window(settings, prepared, rate, on, folder))
        if on_window is not None:
            on_window(n, len(plan), windows[-1])
    summaries: dict[str, Any] = {}
    for rate in rates:
        figures = summarise(windows, rate)
        offered = settings.fps_per_camera * settings.cameras if rate == "demo" else None
        summaries[rate] = {
            "frames_per_window": settings.frames(rate),
            "fps_per_camera": settings.fps_per_camera if rate == "demo" else None,
            "offered_results_per_s": offered,
            # A machine slower than the demo's rate saturates at it: the cost is then the
            # saturation's, which the result must say.
            "kept_pace": None
            if offered is None
            else figures["median"]["off"]["results_per_s"] >= PACE_KEPT * offered,
            **figures,
        }
    return {"rates": summaries, "wall_s": time.monotonic() - t0}


__all__ = [
    "Prepared",
    "Settings",
    "camera_ids",
    "demo_line",
    "prepare",
    "run_bench",
    "run_window",
    "window_config",
]
