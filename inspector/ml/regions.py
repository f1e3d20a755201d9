"""Training on what the daemon shows the model: a camera's region of interest, cut into tiles.

A camera with ``cameras.<id>.roi`` and ``.tiling`` sends the model tiles of its region at
native resolution (:mod:`inspector.runtime.regions`). ``inspector train --roi ... --tile ...``
trains on the same tiles of the good images (same crop, rotation, grid and overlap) and
calibrates on the same thing the daemon thresholds: held-out frames' stitched maps and their
maxima, not single tiles' (a frame of 63 tiles has 63 chances of a high tile; a threshold
fitted to single tiles would flag far more good frames than the target rate).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from inspector.errors import DatasetError, ImageDecodeError
from inspector.imaging import read_image
from inspector.ml.data import LabelledImage, read_mask
from inspector.model import ReverseDistillation
from inspector.model.preprocess import IMAGENET, Preprocessing, normalise, to_tensor_rgb
from inspector.model.region_config import RoiConfig, TilingConfig
from inspector.model.tiling import TileGrid, image_scores

log = logging.getLogger(__name__)


@dataclass
class RegionImages:
    """Frames reduced to the model's inputs: tiles of their regions, or resized regions.

    Attributes:
        inputs: Uint8 RGB model inputs ``(N * T, 3, S, S)``, frame ``n``'s at rows
            ``n*T .. n*T + T - 1`` (``T`` = 1 without tiling).
        per_frame: ``T``.
        grid: The tile grid of every frame's region (``None`` without tiling).
        region_size: ``(h, w)`` of the regions (what stitched maps cover).
        items: The ``N`` frames that loaded, in order.
        masks: Ground-truth masks of the regions ``(N, h, w)`` bool (without tiling, at the
            model size), if loaded.
        skipped: ``(path, reason)`` of each file that could not be read.
    """

    inputs: torch.Tensor
    per_frame: int
    grid: TileGrid | None
    region_size: tuple[int, int]
    items: list[LabelledImage]
    masks: torch.Tensor | None = None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        """Number of frames."""
        return len(self.items)

    def frame_inputs(self, frames: list[int]) -> torch.Tensor:
        """The inputs of ``frames`` (indices), ``(len(frames) * T, 3, S, S)`` uint8."""
        rows = [f * self.per_frame + k for f in frames for k in range(self.per_frame)]
        return self.inputs[rows]


def _region(image: torch.Tensor, roi: RoiConfig | None) -> torch.Tensor:
    return image if roi is None else roi.to_roi().extract(image)


def load_regions(
    items: list[LabelledImage],
    size: tuple[int, int],
    roi: RoiConfig | None,
    tiling: TilingConfig | None,
    *,
    with_masks: bool = False,
) -> RegionImages:
    """Decode ``items`` and cut each into the model's inputs as the daemon does.

    Args:
        items: Frames (full camera resolution).
        size: The model's input ``(S, S)``; with tiling, ``tiling.tile`` must equal it.
        roi: Region of interest (``None``: the whole frame).
        tiling: Tile grid (``None``: the region resized to ``size``).
        with_masks: Also load ground-truth masks, cropped like the frames.

    Raises:
        DatasetError: Tiles differ from the model size, frames differ in size (a grid is per
            camera resolution), the ROI does not fit, or a region is smaller than a tile.
    """
    if tiling is not None and (tiling.tile, tiling.tile) != tuple(size):
        raise DatasetError(
            f"tile {tiling.tile} px differs from the model's input {size[0]}x{size[1]}: tiles "
            f"go to the model unresized, so pass --image-size {tiling.tile}"
        )
    inputs: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    kept: list[LabelledImage] = []
    skipped: list[tuple[Path, str]] = []
    grid: TileGrid | None = None
    frame_size: tuple[int, int] | None = None
    region_size: tuple[int, int] = tuple(size)  # type: ignore[assignment]
    for item in items:
        try:
            frame = to_tensor_rgb(read_image(item.path))
        except ImageDecodeError as exc:
            log.warning("skipping unreadable image %s: %s", item.path, exc)
            skipped.append((item.path, str(exc)))
            continue
        this = (int(frame.shape[-2]), int(frame.shape[-1]))
        if frame_size is None:
            frame_size = this
        elif this != frame_size:
            raise DatasetError(
                f"{item.path} is {this[1]}x{this[0]} but earlier frames are "
                f"{frame_size[1]}x{frame_size[0]}: with --roi/--tile every frame must come "
                "from the same camera resolution"
            )
        try:
            region = _region(frame, roi)
        except Exception as exc:
            raise DatasetError(f"{item.path}: {exc}") from exc
        region_size = (int(region.shape[-2]), int(region.shape[-1]))
        if tiling is None:
            x = region.unsqueeze(0).float() / 255.0
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            inputs.append((x * 255.0).round().clamp(0, 255).to(torch.uint8))
        else:
            if grid is None:
                try:
                    grid = TileGrid.for_region(*region_size, tiling.tile, tiling.overlap)
                except Exception as exc:
                    raise DatasetError(f"{item.path}: {exc}") from exc
            inputs.append(grid.cut(region.unsqueeze(0)))
        if with_masks:
            mask = read_mask(item.mask_path, this)
            cropped = _region(mask[None].to(torch.uint8) * 255, roi)[0] > 127
            if tiling is None:
                cropped = (
                    F.interpolate(cropped[None, None].float(), size=size, mode="nearest")[0, 0]
                    > 0.5
                )
            masks.append(cropped)
        kept.append(item)
    if not kept:
        raise DatasetError(f"none of the {len(items)} images could be read")
    if tiling is None:
        region_size = tuple(size)  # type: ignore[assignment]
    return RegionImages(
        inputs=torch.cat(inputs),
        per_frame=1 if grid is None else grid.count,
        grid=grid,
        region_size=region_size,
        items=kept,
        masks=torch.stack(masks) if with_masks else None,
        skipped=skipped,
    )


def as_float(inputs: torch.Tensor) -> torch.Tensor:
    """Uint8 model inputs as float32 RGB in 0..1 (what training and scoring normalise)."""
    return inputs.float().div_(255.0) if inputs.dtype == torch.uint8 else inputs


def score_regions(
    model: ReverseDistillation,
    regions: RegionImages,
    frames: list[int],
    *,
    batch_size: int,
    device: torch.device,
    preprocessing: Preprocessing = IMAGENET,
) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's image score and map as the daemon computes them (tiles stitched, max).

    Args:
        model: Model in eval mode.
        regions: Loaded frames.
        frames: Which frames (indices into ``regions``).
        batch_size: Model inputs per forward pass.
        device: Where to run.
        preprocessing: The checkpoint's normalisation.

    Returns:
        Scores ``(F,)`` and maps ``(F, h, w)`` (the stitched regions; at the model size without
        tiling), numpy float32.
    """
    model.eval()
    scores: list[np.ndarray] = []
    maps: list[np.ndarray] = []
    with torch.inference_mode():
        for f in frames:
            x = regions.frame_inputs([f])
            parts = [
                model(normalise(as_float(x[i : i + batch_size]).to(device), preprocessing))
                .anomaly_map.float()
                .cpu()
                for i in range(0, len(x), batch_size)
            ]
            tile_maps = torch.cat(parts)
            stitched = tile_maps if regions.grid is None else regions.grid.stitch(tile_maps)
            scores.append(image_scores(stitched).numpy())
            maps.append(stitched[0, 0].numpy())
    h, w = regions.region_size
    if not scores:
        return np.empty(0, np.float32), np.empty((0, h, w), np.float32)
    return np.concatenate(scores), np.stack(maps)
