"""Set-up of the demo line: options, the cached model, topics and the daemon's configuration."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from inspector.errors import InspectorError
from inspector.ml.config import TrainConfig
from inspector.model.config import ArchitectureConfig
from inspector.model.fastpath import in_passing_thread
from inspector.model.region_config import TilingConfig
from inspector.model.tiling import tile_origins
from inspector.runtime.config import InspectorConfig, explicit_config
from inspector.runtime.recipes import ANY_CAMERA
from inspector.tools.broker import EMBEDDED_FETCH_MAX_WAIT_MS, free_port
from inspector.tools.demo.view import LineTally

#: Topic names on the embedded broker; on a broker of the user's, each run gets fresh ones.
TOPICS = {
    "frames": "inspector.frames",
    "results": "inspector.results",
    "dlq": "inspector.frames.dlq",
}
#: With --frames N, give up when nothing arrived for this long.
STALL_TIMEOUT_S = 180.0
#: The demo line's verdict deadline from capture: a part must be judged within a second to be
#: rejected; results after it are flagged late and the live view turns red. The same with the
#: high-resolution camera on: its frame's tiles (~2 s of a 2-core CPU) run a chunk at a time,
#: and the regular cameras' batches, due sooner, run between the chunks
#: (:mod:`inspector.runtime.schedule`).
DEMO_DEADLINE_MS = 1000
#: The line's false-alarm budget: thresholds are placed for it on held-out good parts (the
#: quantile of their scores). The default 0.5 % puts the threshold at the highest of the demo's
#: 27 held-out scores, an outlier, and misses defects that score just above every good part.
DEMO_FALSE_ALARM_RATE = 0.02

#: The high-resolution camera: frames far larger than the model's input, inspected in tiles at
#: native resolution, so that defects of 15-30 px are not shrunk away by a resize.
HIRES_CAMERA = "line1-hires"
HIRES_WIDTH, HIRES_HEIGHT = 1024, 768
#: Tiles of the model's input size (128 px), overlapping so that no defect sits only on a seam.
HIRES_TILING = TilingConfig(tile=128, overlap=16)
#: One frame every 5 s. Its 63 tiles take ~2 s of a busy 2-core CPU, which the regular cameras
#: need too: at one frame every 2 s the CPU could not keep up at all.
HIRES_PERIOD_S = 5.0
#: From capture to verdict: the tiles of one frame (~2 s) plus the regular batches, due sooner,
#: that run between its chunks.
HIRES_DEADLINE_MS = 5000
#: With --frames N, one frame in this many comes from the high-resolution camera.
HIRES_SHARE = 25
#: Training epochs of its model: an epoch is 10 frames x 63 tiles (630 model inputs, 10 times
#: the regular model's), ~90 s on a busy 2-core CPU; 2 epochs keep the first run to ~3 min and
#: already flag 9 of its 10 defective test frames.
HIRES_EPOCHS = 2
#: Good frames held out to place its threshold (0.35 of 16: 6 frames).
HIRES_VAL_FRACTION = 0.35

#: Retained frames (the operator console's review and labels) go to this folder of the run
#: directory; like the overlays and results, it holds this run's only: frame ids start again
#: at 0 every run, and a retained id is never written again.
RETAINED_DIR = "retained"
#: Every flagged frame is retained, and this share of the good ones (a few a minute at the
#: demo's rate): enough for the console's review to show what the model passes.
DEMO_GOOD_SAMPLE_RATE = 0.01
#: The retention folder's bound: the demo's flagged frames (2 a second at 20 % defective parts,
#: ~70 KB each with overlay and mask, and a high-resolution one of ~1 MB every half minute or
#: so) fill it in about 45 minutes; then the oldest unlabelled frames go first.
DEMO_RETENTION_MAX_BYTES = 512 * 1024**2


class DemoError(InspectorError):
    """The demo could not run to the end (the message says which part failed)."""


@dataclass(frozen=True)
class DemoOptions:
    """What ``inspector demo`` runs; the defaults are the embedded default line.

    Attributes:
        workdir: Where the line, model, logs, results and overlays go (reused between runs).
        frames: Stop after this many frames are accounted for (``None``: until Ctrl+C); one
            in :data:`HIRES_SHARE` (at least one) comes from the high-resolution camera.
        fps: Frames per second over the regular cameras (0: as fast as possible, the
            high-resolution camera too, which otherwise sends one every :data:`HIRES_PERIOD_S`).
        cameras: Simulated cameras.
        defect_rate: Fraction of parts that are defective.
        bad_every: Every n-th frame is corrupt, to show dead letters (0: never).
        epochs: Training epochs for the demo model.
        image_size: Model input size.
        frame_size: Size of the simulated camera frames.
        port: HTTP port of the daemon (a free one if taken).
        device: Where training and inference run.
        checkpoint: Use this model instead of training the demo one.
        bootstrap_servers: Use this Kafka instead of the embedded broker (fresh topics
            ``inspector.tools.demo-<run id>.*`` and a fresh consumer group per run, so earlier data
            on that broker neither shows up nor gets processed).
        live: Live terminal view (``None``: when stdout is a terminal).
        seed: Seed of the line, the model and the part sequence.
        hires: Also run the high-resolution camera (:data:`HIRES_CAMERA`), inspected in tiles
            by a model of its own.
    """

    workdir: Path = Path("runs/demo")
    frames: int | None = None
    fps: float = 10.0
    cameras: int = 2
    defect_rate: float = 0.2
    bad_every: int = 25
    epochs: int = 60
    image_size: int = 128
    frame_size: int = 256
    port: int = 9108
    device: str = "auto"
    checkpoint: Path | None = None
    bootstrap_servers: str | None = None
    live: bool | None = None
    seed: int = 0
    hires: bool = True


@dataclass(frozen=True)
class DemoSummary:
    """What the demo saw, for the closing message and for tests."""

    sent: int
    tally: LineTally
    metrics_url: str
    overlays: Path
    results_file: Path


def port_or_free(port: int) -> int:
    """``port`` if it can be bound on loopback now, else (or for 0) a free one."""
    if port == 0:
        return free_port()
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return free_port()
    return port


def demo_model(opts: DemoOptions, data: Path, console: Console) -> Path:
    """The model the demo runs: the given checkpoint, the cached one, or one trained now."""
    if opts.checkpoint is not None:
        return opts.checkpoint
    path = opts.workdir / f"model-resnet18-{opts.image_size}px-{opts.epochs}ep.safetensors"
    if path.is_file():
        console.print(f"model: {path} (cached)")
        return path
    from inspector.ml.trainer import train

    console.print(f"training the demo model once (cached as {path}) ...")
    # On a thread that ends with the training: its OpenMP team must not outlive it and slow
    # the daemon's model (in_passing_thread).
    in_passing_thread(
        lambda: train(
            data,
            path,
            model_config=ArchitectureConfig(
                backbone="resnet18", image_size=(opts.image_size, opts.image_size)
            ),
            train_config=TrainConfig(
                weights="none",
                epochs=opts.epochs,
                batch_size=8,
                patience=0,
                val_fraction=0.3,
                target_false_alarm_rate=DEMO_FALSE_ALARM_RATE,
                device=opts.device,  # type: ignore[arg-type]
                seed=opts.seed,
            ),
            name="demo-line",
        )
    )
    return path


def hires_tiles() -> int:
    """Tiles per frame of the high-resolution camera (63 for 1024 x 768 in 128 px tiles)."""
    tile, overlap = HIRES_TILING.tile, HIRES_TILING.overlap
    return len(tile_origins(HIRES_WIDTH, tile, overlap)) * len(
        tile_origins(HIRES_HEIGHT, tile, overlap)
    )


def hires_description() -> str:
    """What the view says about the high-resolution camera, e.g. ``1024x768, 63 tiles/frame``."""
    return f"{HIRES_WIDTH}x{HIRES_HEIGHT}, {hires_tiles()} tiles/frame"


def hires_model_path(opts: DemoOptions) -> Path:
    """Where the high-resolution camera's model is cached: named after what it was trained on."""
    tiling = f"{HIRES_TILING.tile}px-overlap{HIRES_TILING.overlap}"
    name = f"model-hires-tiled-{HIRES_WIDTH}x{HIRES_HEIGHT}-{tiling}-{HIRES_EPOCHS}ep"
    return opts.workdir / f"{name}.safetensors"


def demo_hires_model(opts: DemoOptions, data: Path, console: Console) -> Path:
    """The high-resolution camera's model: the cached one, or one trained now on tiles.

    Trained on the good frames' tiles at native resolution, as the daemon cuts them, and
    calibrated on held-out frames' stitched maps (:mod:`inspector.ml.regions`).
    """
    tile = HIRES_TILING.tile
    path = hires_model_path(opts)
    if path.is_file():
        console.print(f"high-resolution model: {path} (cached)")
        return path
    from inspector.ml.trainer import train

    console.print(
        f"training the high-resolution camera's model once on {hires_tiles()} tiles per frame "
        f"(cached as {path}) ..."
    )
    # On a thread that ends with the training, as for the regular model (in_passing_thread).
    in_passing_thread(
        lambda: train(
            data,
            path,
            model_config=ArchitectureConfig(backbone="resnet18", image_size=(tile, tile)),
            train_config=TrainConfig(
                weights="none",
                tiling=HIRES_TILING,
                epochs=HIRES_EPOCHS,
                batch_size=16,
                patience=0,
                val_fraction=HIRES_VAL_FRACTION,
                device=opts.device,  # type: ignore[arg-type]
                seed=opts.seed,
            ),
            name="demo-line-hires",
        )
    )
    return path


def demo_config(
    opts: DemoOptions,
    bootstrap: str,
    checkpoint: Path,
    port: int,
    run_id: str | None = None,
    hires_checkpoint: Path | None = None,
    admin_token: str | None = None,
) -> InspectorConfig:
    """The daemon configuration the demo runs: Kafka in, Kafka + JSONL + overlays out.

    Retention is on (:data:`RETAINED_DIR` in the run directory), so the operator console at
    the daemon's port has flagged frames to show and review.

    Args:
        opts: Demo options.
        bootstrap: The broker.
        checkpoint: The model.
        port: HTTP port.
        run_id: Fresh topic and group names for this run (on a broker of the user's).
        hires_checkpoint: The high-resolution camera's tiled model (``None``: no such camera).
        admin_token: ``http.admin_token``: labels in the console (``None``: read-only).
    """
    cameras: dict[str, object] = {ANY_CAMERA: {"deadline_ms": DEMO_DEADLINE_MS}}
    models: dict[str, str] = {}
    if hires_checkpoint is not None:
        models["hires"] = str(hires_checkpoint)
        cameras[HIRES_CAMERA] = {
            "model": "hires",
            "tiling": HIRES_TILING.model_dump(),
            "deadline_ms": HIRES_DEADLINE_MS,
        }
    names = dict(TOPICS)
    group = "inspector-demo"
    if run_id is not None:
        names = {k: f"inspector.tools.demo-{run_id}.{k}" for k in TOPICS}
        group = f"inspector-demo-{run_id}"
    return explicit_config(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "frames_topic": names["frames"],
                "results_topic": names["results"],
                "dlq_topic": names["dlq"],
                "group_id": group,
                # Tansu joins groups in about half the session timeout (see test-broker.md).
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
            },
            "sources": [
                {"type": "kafka", "decode_threads": 2}
                | ({"fetch_max_wait_ms": EMBEDDED_FETCH_MAX_WAIT_MS} if run_id is None else {})
            ],
            "batcher": {"max_batch_size": 8, "max_wait_ms": 50},
            "model": {"checkpoint": str(checkpoint), "device": opts.device, "warmup_batches": 1},
            "sinks": {
                "jsonl": {"path": str(opts.workdir / "results.jsonl")},
                "overlays": {"directory": str(opts.workdir / "overlays"), "max_files": 500},
            },
            "retention": {
                "enabled": True,
                "path": str(opts.workdir / RETAINED_DIR),
                "good_sample_rate": DEMO_GOOD_SAMPLE_RATE,
                "max_bytes": DEMO_RETENTION_MAX_BYTES,
            },
            "http": {"host": "127.0.0.1", "port": port, "admin_token": admin_token},
            "daemon": {"drain_timeout_s": 15},
            "models": models,
            "cameras": cameras,
        }
    )
