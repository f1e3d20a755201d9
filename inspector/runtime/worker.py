"""Model worker stage: preprocessing identical to training, batched inference on the fast path."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from inspector.model import ReverseDistillation
from inspector.model.fastpath import FastModel, RuntimeOptions
from inspector.model.preprocess import IMAGENET, Preprocessing, preprocess, to_tensor_rgb
from inspector.model.records import InferenceBatch
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import ScoredBatch

log = logging.getLogger(__name__)


class ModelWorker:
    """Runs a loaded Reverse Distillation model on batches of frames.

    Args:
        model: The model (moved to ``device`` and set to eval here).
        device: Where to run.
        metrics: For ``inspector_stage_seconds{stage="inference"}`` (per frame) and
            ``inspector_inference_batch_seconds`` (per batch); warm-up is not recorded.
        warmup_batches: Dummy batches run by :meth:`warm_up` before the worker reports ready
            (first calls pay for allocator growth and kernel selection).
        max_batch_size: Batch size used for warm-up (and the CUDA-graph batch shape).
        runtime: Fast-path switches (precision, channels_last, compile, CUDA graphs).
        map_filter: Given raw scores ``(N,)`` on the host, which frames need their map
            (``(N,)`` bool); :meth:`score` brings back only those. ``None``: every map.
        preprocessing: The checkpoint's input transform (its normalisation statistics).
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
        map_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
        preprocessing: Preprocessing = IMAGENET,
    ) -> None:
        self.fast = FastModel(model, device, runtime or RuntimeOptions(), batch_size=max_batch_size)
        self.model = self.fast.model
        self.device = device
        self.metrics = metrics
        self.warmup_batches = warmup_batches
        self.max_batch_size = max_batch_size
        self.image_size = model.config.image_size
        self.map_filter = map_filter
        self.preprocessing = preprocessing
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
            self.score(dummy)
        self._ready = True
        log.info("model warmed up on %s in %.2f s", self.device, time.perf_counter() - t0)

    def infer(self, images: Sequence[np.ndarray | torch.Tensor]) -> InferenceBatch:
        """Preprocess and run a batch.

        Args:
            images: BGR uint8 frames ``(h_i, w_i, 3)`` or RGB uint8 tensors ``(3, h_i, w_i)``
                (any device), any sizes.

        Returns:
            Raw maps ``(N, 1, H, W)`` and scores ``(N,)`` on the CPU, float32.
        """
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.fast(self._preprocess(images))
            result = InferenceBatch(*self._to_host(out.anomaly_map, out.pred_score))
        self._record(time.perf_counter() - t0, len(images))
        return result

    def score(
        self,
        images: Sequence[np.ndarray | torch.Tensor],
        map_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> ScoredBatch:
        """Like :meth:`infer`, but only the maps that ``map_filter`` asks for leave the device.

        Args:
            images: Frames as for :meth:`infer`.
            map_filter: This batch's filter instead of the worker's (cameras whose recipe
                sets their own image threshold).

        Returns:
            Scores ``(N,)`` and, per frame, its map ``(H, W)`` or ``None``; host, float32.
        """
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = self.fast(self._preprocess(images))
            (scores,) = self._to_host(out.pred_score)
            maps: list[torch.Tensor | None] = [None] * len(images)
            wanted = torch.ones(len(images), dtype=torch.bool)
            chosen = map_filter or self.map_filter
            if chosen is not None:
                wanted = chosen(scores)
            index = wanted.nonzero().flatten()
            if len(index):
                (picked,) = self._to_host(out.anomaly_map[index.to(self.device), 0])
                for j, i in enumerate(index.tolist()):
                    maps[i] = picked[j]
        self._record(time.perf_counter() - t0, len(images))
        return ScoredBatch(scores, maps)

    def _record(self, seconds: float, frames: int) -> None:
        """A batch's time: once per batch, and once per frame as the time that frame spent.

        Warm-up batches (with compilation and first-call allocations, at every start and model
        reload) are not production traffic and are left out.
        """
        if not self._ready:
            return
        self.metrics.inference_batch_seconds.observe(seconds)
        stage = self.metrics.stage_seconds.labels(stage="inference")
        for _ in range(frames):
            stage.observe(seconds)

    def _to_host(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Float32 host copies; on CUDA pinned and asynchronous, with one synchronisation."""
        if self.device.type != "cuda":
            return [t.float() for t in tensors]
        copies = []
        for t in tensors:
            host = torch.empty(t.shape, dtype=torch.float32, pin_memory=True)
            host.copy_(t, non_blocking=True)
            copies.append(host)
        torch.cuda.current_stream(self.device).synchronize()
        return copies

    def _preprocess(self, images: Sequence[np.ndarray | torch.Tensor]) -> torch.Tensor:
        """Frames -> normalised model input ``(N, 3, H, W)`` on the device.

        Frames of one size (the usual case: one camera model per line) are resized as one
        batch; uint8 goes to the GPU (a quarter of the bytes of float32) through pinned memory.
        Frames already decoded on the GPU (RGB tensors) stay there.
        """
        tensors = [img if isinstance(img, torch.Tensor) else to_tensor_rgb(img) for img in images]
        cuda = self.device.type == "cuda"
        if all(t.shape == tensors[0].shape for t in tensors):
            if cuda and all(t.device.type == "cpu" for t in tensors):
                batch = torch.stack(tensors).pin_memory().to(self.device, non_blocking=True)
            else:
                batch = torch.stack([t.to(self.device, non_blocking=cuda) for t in tensors])
            return preprocess(batch, self.image_size, self.preprocessing)
        return torch.cat(
            [
                preprocess(
                    t.unsqueeze(0).to(self.device, non_blocking=cuda),
                    self.image_size,
                    self.preprocessing,
                )
                for t in tensors
            ]
        )
