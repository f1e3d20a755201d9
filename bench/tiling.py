"""Throughput of the tiled path: high-resolution frames cut into tiles at native resolution.

The daemon's model worker (``ModelWorker.score_views``, the code ``inspector run`` uses for a
camera with ``cameras.<id>.tiling``) on synthetic frames, against the same worker on whole
frames resized to the model's input (``ModelWorker.score``) in the same run: tiles/s,
frames/s and milliseconds per frame, and what tiling costs per frame (the ratio). Seeded
random weights: speed does not depend on them. One JSON line per configuration on stdout; the
table goes to the generated ``bench/PERFORMANCE.md``.

    .venv/bin/python bench/tiling.py                                  # 2048x1536, 256 px tiles
    .venv/bin/python bench/tiling.py --frame 1024x768 --tile 128 --overlap 16 --frames 4
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from inspector.model import ReverseDistillation
from inspector.model.config import ArchitectureConfig
from inspector.model.device import resolve_device
from inspector.model.fastpath import RuntimeOptions
from inspector.runtime.metrics import Metrics
from inspector.runtime.recipes import CameraRecipe, TilingConfig
from inspector.runtime.regions import plan_view
from inspector.runtime.worker import ModelWorker
from inspector.tools.benchmark.record import add_record_arguments, markdown_table, write_section


def _size(text: str) -> tuple[int, int]:
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def main() -> None:
    """Time the tiled and the resized path on the same frames; print and record the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--frame", type=_size, default=(1536, 2048), help="WIDTHxHEIGHT")
    parser.add_argument("--tile", type=int, default=256, help="tile = model input (px)")
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=8, help="model inputs per pass")
    parser.add_argument("--frames", type=int, default=3, help="frames timed per path")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="auto")
    add_record_arguments(parser, __file__)
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = ReverseDistillation(
        ArchitectureConfig(backbone=args.backbone, image_size=(args.tile, args.tile))
    )
    worker = ModelWorker(
        model,
        device,
        Metrics(CollectorRegistry()),
        warmup_batches=1,
        max_batch_size=args.batch_size,
        runtime=RuntimeOptions(precision=args.precision),
    )
    worker.warm_up()
    height, width = args.frame
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(args.frames)]
    recipe = CameraRecipe(tiling=TilingConfig(tile=args.tile, overlap=args.overlap))
    view = plan_view(recipe, (height, width), (args.tile, args.tile))
    assert view is not None and view.grid is not None
    tiles = view.grid.count
    worker.score_views(frames[:1], [view])  # first call: allocator growth at the tiled shapes

    def timed(run: object) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for frame in frames:
            run(frame)  # type: ignore[operator]
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / len(frames)

    tiled_s = timed(lambda f: worker.score_views([f], [view]))
    resized_s = timed(lambda f: worker.score([f]))
    result = {
        "frame": f"{width}x{height}",
        "tile": args.tile,
        "overlap": args.overlap,
        "tiles_per_frame": tiles,
        "backbone": args.backbone,
        "device": str(device),
        "tiled_ms_per_frame": round(tiled_s * 1e3, 1),
        "tiled_frames_per_s": round(1 / tiled_s, 3),
        "tiles_per_s": round(tiles / tiled_s, 1),
        "resized_ms_per_frame": round(resized_s * 1e3, 1),
        "tiled_over_resized": round(tiled_s / resized_s, 1),
    }
    print(json.dumps(result))
    if not args.no_record:
        rows = [
            ["frame", "tiles", "tiles/s", "frames/s", "ms/frame", "ms/frame resized", "ratio"],
            [
                result["frame"],
                f"{tiles} x {args.tile} px (overlap {args.overlap})",
                f"{result['tiles_per_s']:.1f}",
                f"{result['tiled_frames_per_s']:.2f}",
                f"{result['tiled_ms_per_frame']:.0f}",
                f"{result['resized_ms_per_frame']:.0f}",
                f"{result['tiled_over_resized']:.1f}x",
            ],
        ]  # fmt: skip
        write_section(
            args.record,
            f"tiling-{args.backbone}-{width}x{height}-{args.tile}",
            f"Tiled path: {width}x{height} frames, {args.backbone}, {args.tile} px tiles",
            markdown_table(rows) + "\n\nOne frame per call, all its tiles batched "
            f"{args.batch_size} at a time; resized: the same frame resized to the model input.",
            command=["python", "bench/tiling.py", *sys.argv[1:]],
            device=device,
        )


if __name__ == "__main__":
    main()
