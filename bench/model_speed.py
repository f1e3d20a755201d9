"""Model-only inference speed of our Reverse Distillation on this machine.

Prints one JSON object per configuration (images/s, latency percentiles); warm-up excluded.

    .venv/bin/python bench/model_speed.py --backbone resnet18 wide_resnet50_2 --image-size 256
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from inspector.config import ModelConfig
from inspector.model import ReverseDistillation


def run(backbone: str, size: int, batch: int, iters: int, warmup: int) -> dict[str, object]:
    torch.manual_seed(0)
    model = ReverseDistillation(ModelConfig(backbone=backbone, image_size=size)).eval()
    x = torch.randn(batch, 3, size, size)
    times = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    per_batch = np.array(times)
    return {
        "backbone": backbone,
        "image_size": size,
        "batch_size": batch,
        "precision": "fp32",
        "threads": torch.get_num_threads(),
        "images_per_s": round(batch * len(times) / float(per_batch.sum()), 3),
        "p50_ms": round(float(np.percentile(per_batch, 50)) * 1e3, 1),
        "p95_ms": round(float(np.percentile(per_batch, 95)) * 1e3, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backbone", nargs="+", default=["resnet18", "wide_resnet50_2"])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    for backbone in args.backbone:
        result = run(backbone, args.image_size, args.batch_size, args.iters, args.warmup)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
