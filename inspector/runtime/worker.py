"""Model worker stage: preprocessing identical to training, batched inference on the fast path.

Frames of cameras with a region of interest or tiling (:mod:`inspector.runtime.regions`) go
through :meth:`ModelWorker.score_views`: their regions' tiles, at native resolution, run
through the same fast path as whole frames, at the same batch shape.
"""

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
from inspector.model.tiling import image_scores
from inspector.runtime.metrics import Metrics
from inspector.runtime.records import ScoredBatch
from inspector.runtime.regions import FrameView, region_pixels

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

    def score_views(
        self,
        images: Sequence[np.ndarray | torch.Tensor],
        views: Sequence[FrameView],
        map_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> ScoredBatch:
        """Like :meth:`score` for frames with a region of interest or tiling.

        Each frame's region is cropped (:func:`~inspector.runtime.regions.region_pixels`) and
        either cut into tiles at native resolution or, without tiling, resized to the model's
        input. The inputs of all frames run together, ``max_batch_size`` at a time: the fast
        path's batch shape (a CUDA graph pads the last chunk). A frame's tile maps are
        stitched as soon as its last tile is scored, so at most one frame's tile maps and the
        batch's stitched maps are held; its score is the maximum of its stitched map.

        Args:
            images: Frames as for :meth:`infer`.
            views: One per frame: its region and tiles.
            map_filter: As for :meth:`score`.

        Returns:
            Scores ``(N,)`` and, per frame, its raw map or ``None``: the stitched region
            ``(h, w)`` at native resolution when tiled, else ``(H, W)`` at the model size.

        Raises:
            RegionError: A frame's ROI does not fit in it (the router checks this first).
        """
        if not images:
            return ScoredBatch(torch.empty(0), [])
        t0 = time.perf_counter()
        size = self.image_size
        with torch.inference_mode():
            regions = [
                region_pixels(img, v, self.device) for img, v in zip(images, views, strict=True)
            ]
            # Frames without tiling: the region resized once, like a whole frame.
            resized = {
                f: preprocess(r.unsqueeze(0), size, self.preprocessing)
                for f, (r, v) in enumerate(zip(regions, views, strict=True))
                if v.grid is None
            }
            items = [(f, k) for f, v in enumerate(views) for k in range(v.inputs)]
            stitched: list[torch.Tensor] = []
            pending: list[torch.Tensor] = []
            for start in range(0, len(items), self.max_batch_size):
                chunk = items[start : start + self.max_batch_size]
                maps = self.fast(self._chunk_input(chunk, regions, views, resized)).anomaly_map
                for (f, k), tile_map in zip(chunk, maps, strict=True):
                    pending.append(tile_map)
                    if k == views[f].inputs - 1:  # the frame's last input: stitch it now
                        grid = views[f].grid
                        joined = torch.stack(pending)
                        stitched.append(joined[0, 0] if grid is None else grid.stitch(joined)[0, 0])
                        pending = []
            del regions, resized
            (scores,) = self._to_host(
                torch.stack([image_scores(m[None, None]) for m in stitched]).flatten()
            )
            chosen = map_filter or self.map_filter
            wanted = (
                chosen(scores) if chosen is not None else torch.ones(len(images), dtype=torch.bool)
            )
            maps_out: list[torch.Tensor | None] = [None] * len(images)
            for i in wanted.nonzero().flatten().tolist():
                (maps_out[i],) = self._to_host(stitched[i])
        self._record(time.perf_counter() - t0, len(images))
        return ScoredBatch(scores, maps_out)

    def _chunk_input(
        self,
        chunk: list[tuple[int, int]],
        regions: list[torch.Tensor],
        views: Sequence[FrameView],
        resized: dict[int, torch.Tensor],
    ) -> torch.Tensor:
        """Model input ``(n, 3, H, W)`` of ``chunk``'s ``(frame, input)`` pairs, in order.

        Tiles (uint8 views of their regions) are stacked and normalised in one go; resized
        regions were normalised already.
        """
        h, w = self.image_size
        batch = torch.empty((len(chunk), 3, h, w), device=self.device)
        tiles: list[torch.Tensor] = []
        at: list[int] = []
        for j, (f, k) in enumerate(chunk):
            grid = views[f].grid
            if grid is None:
                batch[j] = resized[f][0]
                continue
            y, x = grid.origins[k]
            tiles.append(regions[f][:, y : y + grid.tile, x : x + grid.tile])
            at.append(j)
        if tiles:
            batch[at] = preprocess(torch.stack(tiles), (h, w), self.preprocessing)
        return batch

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
