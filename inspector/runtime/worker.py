"""Model worker stage: preprocessing identical to training, batched inference on the fast path.

Frames of cameras with a region of interest or tiling (:mod:`inspector.runtime.regions`) go
through :meth:`ModelWorker.score_views`: their regions' tiles, at native resolution, run
through the same fast path as whole frames, at the same batch shape. :class:`ViewScoring` does
it one model batch at a time, so the inference thread can run a light camera's batch between
the chunks of a heavy frame (:mod:`inspector.runtime.schedule`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

from inspector.model import ReverseDistillation
from inspector.model.engine import Engine
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
        model: The model (moved to ``device`` and set to eval here, run on the PyTorch fast
            path), or an engine that runs one (an exported graph: ``inspector.backends``).
        device: Where to run (an engine's own device wins).
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
        model: ReverseDistillation | Engine,
        device: torch.device,
        metrics: Metrics,
        *,
        warmup_batches: int = 2,
        max_batch_size: int = 8,
        runtime: RuntimeOptions | None = None,
        map_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
        preprocessing: Preprocessing = IMAGENET,
    ) -> None:
        self.fast: Engine
        if isinstance(model, ReverseDistillation):
            self.fast = FastModel(
                model, device, runtime or RuntimeOptions(), batch_size=max_batch_size
            )
        else:
            self.fast = model
        #: The PyTorch model, when it runs on the PyTorch fast path.
        self.model = self.fast.model if isinstance(self.fast, FastModel) else None
        self.device = self.fast.device
        self.metrics = metrics
        self.warmup_batches = warmup_batches
        self.max_batch_size = max_batch_size
        self.image_size = self.fast.image_size
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
        """Like :meth:`score` for frames with a region of interest or tiling, in one go.

        Runs a :meth:`view_scoring` to its end: see there.

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
        scoring = self.view_scoring(images, views, map_filter)
        while not scoring.step():
            pass
        return scoring.result()

    def view_scoring(
        self,
        images: Sequence[np.ndarray | torch.Tensor],
        views: Sequence[FrameView],
        map_filter: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> ViewScoring:
        """A resumable :meth:`score_views`: one model batch per :meth:`ViewScoring.step`.

        The inference thread runs other work between the steps (a light camera's batch
        between the chunks of a heavy tiled frame: :mod:`inspector.runtime.schedule`).

        Args:
            images: Frames as for :meth:`infer`.
            views: One per frame: its region and tiles.
            map_filter: As for :meth:`score`.
        """
        return ViewScoring(self, images, views, map_filter)

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


class ViewScoring:
    """Scoring of frames with a region of interest or tiling, one model batch at a time.

    Each frame's region is cropped (:func:`~inspector.runtime.regions.region_pixels`) and
    either cut into tiles at native resolution or, without tiling, resized to the model's
    input. The inputs of all frames run together, ``max_batch_size`` per :meth:`step`: the
    fast path's batch shape (a CUDA graph pads the last chunk). A frame's tile maps are
    stitched as soon as its last tile is scored, so at most one frame's tile maps and the
    stitched maps are held; its score is the maximum of its stitched map. Every chunk is
    scored on its own, so the result is the same whatever runs between the steps.

    Args:
        worker: Runs the model.
        images: BGR uint8 frames ``(h_i, w_i, 3)`` or RGB uint8 tensors ``(3, h_i, w_i)``.
        views: One per frame: its region and tiles.
        map_filter: As for :meth:`ModelWorker.score`.

    Attributes:
        seconds: Time spent in :meth:`step` so far (the frames' inference time; the time
            between steps went to other work).
    """

    def __init__(
        self,
        worker: ModelWorker,
        images: Sequence[np.ndarray | torch.Tensor],
        views: Sequence[FrameView],
        map_filter: Callable[[torch.Tensor], torch.Tensor] | None,
    ) -> None:
        self._worker = worker
        self._images = list(images)
        self._views = list(views)
        self._map_filter = map_filter
        self._items = [(f, k) for f, v in enumerate(self._views) for k in range(v.inputs)]
        self._next = 0  # the first (frame, input) pair not scored yet
        # Cropped on the first step, so a job waiting its turn holds no device memory.
        self._regions: list[torch.Tensor] | None = None
        self._resized: dict[int, torch.Tensor] = {}
        self._stitched: list[torch.Tensor] = []
        self._pending: list[torch.Tensor] = []
        self.seconds = 0.0

    @property
    def done(self) -> bool:
        """Every input is scored (:meth:`result` may be called)."""
        return self._next >= len(self._items)

    @property
    def steps_left(self) -> int:
        """Model batches still to run."""
        size = self._worker.max_batch_size
        return -(-(len(self._items) - self._next) // size)

    def step(self) -> bool:
        """Score the next ``max_batch_size`` inputs; ``True`` when every input is scored.

        Raises:
            RegionError: A frame's ROI does not fit in it (the router checks this first).
        """
        if self.done:
            return True
        t0 = time.perf_counter()
        worker = self._worker
        with torch.inference_mode():
            if self._regions is None:
                self._regions = self._crop()
            chunk = self._items[self._next : self._next + worker.max_batch_size]
            maps = worker.fast(self._chunk_input(chunk, self._regions)).anomaly_map
            for (f, k), tile_map in zip(chunk, maps, strict=True):
                self._pending.append(tile_map)
                if k == self._views[f].inputs - 1:  # the frame's last input: stitch it now
                    grid = self._views[f].grid
                    joined = torch.stack(self._pending)
                    self._stitched.append(
                        joined[0, 0] if grid is None else grid.stitch(joined)[0, 0]
                    )
                    self._pending = []
        self._next += len(chunk)
        if self.done:  # the regions are no longer needed; the stitched maps are
            self._regions, self._resized, self._images = None, {}, []
        self.seconds += time.perf_counter() - t0
        return self.done

    def result(self) -> ScoredBatch:
        """Scores ``(N,)`` and, per frame, its raw map or ``None`` (host, float32).

        A map is the stitched region ``(h, w)`` at native resolution when tiled, else
        ``(H, W)`` at the model size. Records the inference time (all steps together).

        Raises:
            RuntimeError: Inputs are left to score.
        """
        if not self.done:
            raise RuntimeError(f"{self.steps_left} model batch(es) left to run")
        worker = self._worker
        n = len(self._views)
        if n == 0:
            return ScoredBatch(torch.empty(0), [])
        t0 = time.perf_counter()
        with torch.inference_mode():
            stitched = self._stitched
            (scores,) = worker._to_host(
                torch.stack([image_scores(m[None, None]) for m in stitched]).flatten()
            )
            chosen = self._map_filter or worker.map_filter
            wanted = chosen(scores) if chosen is not None else torch.ones(n, dtype=torch.bool)
            maps_out: list[torch.Tensor | None] = [None] * n
            for i in wanted.nonzero().flatten().tolist():
                (maps_out[i],) = worker._to_host(stitched[i])
        self.seconds += time.perf_counter() - t0
        worker._record(self.seconds, n)
        return ScoredBatch(scores, maps_out)

    def _crop(self) -> list[torch.Tensor]:
        """Each frame's region on the device; the regions without tiling resized once."""
        worker = self._worker
        regions = [
            region_pixels(img, v, worker.device)
            for img, v in zip(self._images, self._views, strict=True)
        ]
        # Frames without tiling: the region resized once, like a whole frame.
        self._resized = {
            f: preprocess(r.unsqueeze(0), worker.image_size, worker.preprocessing)
            for f, (r, v) in enumerate(zip(regions, self._views, strict=True))
            if v.grid is None
        }
        return regions

    def _chunk_input(
        self, chunk: list[tuple[int, int]], regions: list[torch.Tensor]
    ) -> torch.Tensor:
        """Model input ``(n, 3, H, W)`` of ``chunk``'s ``(frame, input)`` pairs, in order.

        Tiles (uint8 views of their regions) are stacked and normalised in one go; resized
        regions were normalised already.
        """
        worker = self._worker
        h, w = worker.image_size
        batch = torch.empty((len(chunk), 3, h, w), device=worker.device)
        tiles: list[torch.Tensor] = []
        at: list[int] = []
        for j, (f, k) in enumerate(chunk):
            grid = self._views[f].grid
            if grid is None:
                batch[j] = self._resized[f][0]
                continue
            y, x = grid.origins[k]
            tiles.append(regions[f][:, y : y + grid.tile, x : x + grid.tile])
            at.append(j)
        if tiles:
            batch[at] = preprocess(torch.stack(tiles), (h, w), worker.preprocessing)
        return batch
