"""Model worker stage: preprocessing identical to training, batched inference on the fast path."""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from inspector.metrics import Metrics
from inspector.model import ReverseDistillation
from inspector.model.preprocess import preprocess, to_tensor_rgb
from inspector.model.runtime import FastModel, RuntimeOptions
from inspector.records import InferenceBatch

log = logging.getLogger(__name__)


class ModelWorker:
    """Runs a loaded Reverse Distillation model on batches of frames.

    Args:
        model: The model (moved to ``device`` and set to eval here).
        device: Where to run.
        metrics: For ``inspector_stage_seconds{stage="inference"}``.
        warmup_batches: Dummy batches run by :meth:`warm_up` before the worker reports ready
            (first calls pay for allocator growth and kernel selection).
        max_batch_size: Batch size used for warm-up (and the CUDA-graph batch shape).
        runtime: Fast-path switches (precision, channels_last, compile, CUDA graphs).
    """

    def __init__(
        self,
        model: ReverseDistillation,
        device: torch.device,
        metrics: Metrics,
        *,
        warmup_batches: int = 2,
        max_batch_size: int = 8,
        runtime: RuntimeOptions | None = None,
    ) -> None:
        self.fast = FastModel(model, device, runtime or RuntimeOptions(), batch_size=max_batch_size)
        self.model = self.fast.model
        self.device = device
        self.metrics = metrics
        self.warmup_batches = warmup_batches
        self.max_batch_size = max_batch_size
        self.image_size = model.config.image_size
        self._ready = False

    @property
    def ready(self) -> bool:
        """``True`` once warmed up."""
        return self._ready

    def warm_up(self) -> None:
        """Run dummy batches at full batch size so the first real frames are not slow."""
        t0 = time.perf_counter()
        h, w = self.image_size
        dummy = [np.zeros((h, w, 3), np.uint8)] * self.max_batch_size
        for _ in range(self.warmup_batches):
            self.infer(dummy)
        self._ready = True
        log.info("model warmed up on %s in %.2f s", self.device, time.perf_counter() - t0)

    def infer(self, images: list[np.ndarray]) -> InferenceBatch:
        """Preprocess and run a batch.

        Args:
            images: BGR uint8 frames ``(h_i, w_i, 3)``, any sizes.

        Returns:
            Raw maps ``(N, 1, H, W)`` and scores ``(N,)`` on the CPU, float32.
        """
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.fast(self._preprocess(images))
            if self.device.type == "cuda":
                # One pinned, asynchronous copy per tensor, then a single synchronisation.
                maps = torch.empty(out.anomaly_map.shape, pin_memory=True)
                scores = torch.empty(out.pred_score.shape, pin_memory=True)
                maps.copy_(out.anomaly_map, non_blocking=True)
                scores.copy_(out.pred_score, non_blocking=True)
                torch.cuda.current_stream(self.device).synchronize()
                result = InferenceBatch(maps, scores)
            else:
                result = InferenceBatch(out.anomaly_map, out.pred_score)
        self.metrics.stage_seconds.labels(stage="inference").observe(time.perf_counter() - t0)
        return result

    def _preprocess(self, images: list[np.ndarray]) -> torch.Tensor:
        """Frames -> normalised model input ``(N, 3, H, W)`` on the device.

        Frames of one size (the usual case: one camera model per line) are resized as one
        batch; uint8 goes to the GPU (a quarter of the bytes of float32) through pinned memory.
        """
        tensors = [to_tensor_rgb(img) for img in images]
        cuda = self.device.type == "cuda"
        if all(t.shape == tensors[0].shape for t in tensors):
            batch = torch.stack(tensors)
            if cuda:
                batch = batch.pin_memory().to(self.device, non_blocking=True)
            return preprocess(batch, self.image_size)
        return torch.cat(
            [
                preprocess(t.unsqueeze(0).to(self.device, non_blocking=cuda), self.image_size)
                for t in tensors
            ]
        )
