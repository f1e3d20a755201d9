"""Regions of interest and tiling in the daemon: frame pixels in, full-frame defects out.

A camera's recipe (:class:`~inspector.runtime.recipes.CameraRecipe`) may crop a region of
interest (``roi``) and cut it into tiles at native resolution (``tiling``). For each frame of
such a camera the model router makes a :class:`FrameView`; the model worker inspects the
view's region (:func:`region_pixels`, tiles by :mod:`inspector.model.tiling`), and the
postprocessor segments the region's map and reports defects, mask and heat map in the
frame's own pixels (:func:`defects_to_frame`, :func:`mask_to_frame`, :func:`heat_to_frame`).
Frames of cameras without ``roi`` and ``tiling`` have no view and take the plain path.

A leaf shared by the stages (model worker, postprocess) and the router: it imports none of
them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from inspector.errors import ConfigError, RegionError
from inspector.messages import Defect
from inspector.model.preprocess import to_tensor_rgb
from inspector.model.tiling import Roi, TileGrid
from inspector.runtime.recipes import CameraRecipe


@dataclass(frozen=True)
class FrameView:
    """How one frame of a camera with ``roi`` or ``tiling`` is inspected.

    Attributes:
        frame_size: The frame's ``(height, width)``.
        roi: The region of the frame inspected; ``None``: the whole frame.
        grid: Its tiles; ``None``: the region is resized to the model's input (one input).
    """

    frame_size: tuple[int, int]
    roi: Roi | None
    grid: TileGrid | None

    @property
    def region_size(self) -> tuple[int, int]:
        """The inspected region's ``(height, width)`` in pixels."""
        return self.roi.size if self.roi is not None else self.frame_size

    @property
    def inputs(self) -> int:
        """Model inputs the frame makes: its tile count, or 1 when resized."""
        return self.grid.count if self.grid is not None else 1


def image_size_of(image: np.ndarray | torch.Tensor) -> tuple[int, int]:
    """``(height, width)`` of a BGR ``(h, w, 3)`` array or an RGB ``(3, h, w)`` tensor."""
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    return int(image.shape[0]), int(image.shape[1])


def check_tiling(
    camera_id: str, recipe: CameraRecipe, model_name: str, model_size: tuple[int, int]
) -> None:
    """Refuse a recipe whose tiles are not the model's input size.

    Tiles go to the model unresized: a 256 px tile on a 512 px model would be an input the
    model cannot take.

    Raises:
        ConfigError: The message names ``cameras.<camera_id>.tiling.tile`` and the size to use.
    """
    tiling = recipe.tiling
    if tiling is None:
        return
    h, w = model_size
    if h != w:
        raise ConfigError(
            f"cameras.{camera_id}.tiling: model {model_name!r} takes {h}x{w} inputs; tiles are "
            "square, so tiling needs a model with a square input: drop tiling or change model"
        )
    if tiling.tile != h:
        raise ConfigError(
            f"cameras.{camera_id}.tiling.tile is {tiling.tile} but model {model_name!r} takes "
            f"{h}x{w} inputs: set tile to {h} (tiles go to the model unresized)"
        )


def plan_view(
    recipe: CameraRecipe, frame_size: tuple[int, int], model_size: tuple[int, int]
) -> FrameView | None:
    """The view of one frame under ``recipe``; ``None`` when it has neither roi nor tiling.

    Raises:
        RegionError: The ROI does not fit in the frame (``roi_outside_frame``), or the region
            is smaller than a tile or the tile not the model's input (``tiling_mismatch``).
    """
    if recipe.roi is None and recipe.tiling is None:
        return None
    roi = recipe.roi.to_roi() if recipe.roi is not None else None
    if roi is not None:
        roi.check_fits(frame_size)
    grid = None
    tiling = recipe.tiling
    if tiling is not None:
        if (tiling.tile, tiling.tile) != tuple(model_size):
            raise RegionError(
                f"tiling.tile is {tiling.tile} but the model takes {model_size[0]}x"
                f"{model_size[1]} inputs: set the camera recipe's tile to the model's size"
            )
        region = roi.size if roi is not None else frame_size
        grid = TileGrid.for_region(region[0], region[1], tiling.tile, tiling.overlap)
    return FrameView(frame_size, roi, grid)


def region_pixels(
    image: np.ndarray | torch.Tensor, view: FrameView, device: torch.device
) -> torch.Tensor:
    """The view's region of a frame as RGB uint8 ``(3, h, w)`` on ``device``, upright.

    A BGR array is cropped to the pixels the ROI reads before it is converted and moved, so
    a 20 MP frame with a small ROI costs only the ROI's bytes.

    Args:
        image: BGR uint8 ``(H, W, 3)`` or RGB uint8 tensor ``(3, H, W)`` (any device).
        view: The frame's view.
        device: Where the region goes.

    Raises:
        RegionError: The ROI does not fit in the frame.
    """
    roi = view.roi
    tensor = isinstance(image, torch.Tensor)
    if roi is None:
        near = image if isinstance(image, torch.Tensor) else to_tensor_rgb(image)
    else:
        size = image_size_of(image)
        roi.check_fits(size)
        x0, y0, x1, y1 = roi.bounds(size)
        roi = roi.shifted(-x0, -y0)
        if isinstance(image, torch.Tensor):
            near = image[:, y0:y1, x0:x1]
        else:
            near = to_tensor_rgb(image[y0:y1, x0:x1])
    near = near.to(device, non_blocking=tensor and device.type == "cuda")
    return near if roi is None else roi.extract(near)


def defects_to_frame(defects: list[Defect], view: FrameView) -> list[Defect]:
    """Defects found in the view's region, in full-frame pixels.

    Boxes are shifted (rotated ROI: the frame box enclosing the turned box), centroids mapped
    exactly; areas and scores are unchanged (a rotation keeps areas).
    """
    roi = view.roi
    if roi is None:
        return defects
    centroids = roi.to_frame(np.array([d.centroid for d in defects], np.float64).reshape(-1, 2))
    return [
        d.model_copy(
            update={
                "bbox": roi.box_to_frame(d.bbox, view.frame_size),
                "centroid": (float(c[0]), float(c[1])),
            }
        )
        for d, c in zip(defects, centroids, strict=True)
    ]


def mask_to_frame(mask: np.ndarray, view: FrameView) -> np.ndarray:
    """A defect mask of the region ``(h, w)`` bool as a mask of the whole frame ``(H, W)``."""
    roi = view.roi
    if roi is None:
        return mask
    fh, fw = view.frame_size
    if not roi.rotated:
        full = np.zeros((fh, fw), dtype=bool)
        full[roi.y : roi.y + roi.height, roi.x : roi.x + roi.width] = mask
        return full
    placed = cv2.warpAffine(
        mask.astype(np.uint8), roi.matrix(), (fw, fh), flags=cv2.INTER_NEAREST, borderValue=0
    )
    out: np.ndarray = placed > 0
    return out


def heat_to_frame(heat: np.ndarray, view: FrameView) -> np.ndarray:
    """A normalised map of the region (any resolution) as a map covering the whole frame.

    Overlays stretch a heat map over the frame, so a region's map is placed where the region
    is (0 elsewhere), at the map's own pixel density: a stitched map stays at frame
    resolution, a resized region's map is not blown up to the frame's size.

    Args:
        heat: ``(h, w)`` float32 in 0..1, covering the region.
        view: The frame's view.

    Returns:
        ``(H', W')`` float32 with ``H' / W'`` the frame's aspect ratio.
    """
    roi = view.roi
    if roi is None:
        return heat
    rh, rw = roi.size
    scale = min(1.0, heat.shape[0] / rh, heat.shape[1] / rw)
    fh, fw = view.frame_size
    out_w, out_h = max(1, round(fw * scale)), max(1, round(fh * scale))
    # Map pixel -> region pixel (pixel centres), region -> frame, frame -> output pixel.
    to_region = np.array(
        [
            [rw / heat.shape[1], 0.0, 0.5 * rw / heat.shape[1] - 0.5],
            [0.0, rh / heat.shape[0], 0.5 * rh / heat.shape[0] - 0.5],
            [0.0, 0.0, 1.0],
        ]
    )
    to_output = np.array([[scale, 0.0, 0.5 * scale - 0.5], [0.0, scale, 0.5 * scale - 0.5]])
    to_frame = np.vstack([roi.matrix(), [0.0, 0.0, 1.0]])
    matrix = to_output @ to_frame @ to_region
    placed: np.ndarray = cv2.warpAffine(
        heat.astype(np.float32, copy=False),
        matrix,
        (out_w, out_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    return placed
