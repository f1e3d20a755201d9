"""Tiling and regions of interest: inspecting frames far larger than the model's input.

A line camera's frame has 2-20 megapixels; resized to the model's 256 px, a defect a few
pixels wide shrinks below one pixel and the model never sees it. Instead, a frame's region of
interest (:class:`Roi`; the whole frame without one) is cut into model-sized tiles at native
resolution (:meth:`TileGrid.cut`), every tile is scored, and the tiles' anomaly maps are
stitched back into one map of the region (:meth:`TileGrid.stitch`), overlaps blended. The
image score is the maximum of the stitched map (:func:`image_scores`).

Pure torch and numpy, no I/O: the daemon and training cut the same grid, so a model trained
on tiles is served the tiles it was trained on.

Conventions:

- tile ``k`` of image ``n`` is row ``n * T + k`` of a cut batch (``T`` = :attr:`TileGrid.count`),
  tiles in row-major order of their origins (:attr:`TileGrid.origins`);
- pixel coordinates are ``(x, y)`` with integers at pixel centres (OpenCV's convention);
  boxes ``(x, y, width, height)`` cover ``[x, x + width) x [y, y + height)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from inspector.dead_letters import ErrorType
from inspector.errors import InputSizeError, RegionError

#: Slack for corners that land on a frame edge up to float rounding (a rotated ROI).
_EPS = 1e-6


def tile_origins(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    """Tile starts along one axis: every ``tile - overlap`` pixels, the last flush with the end.

    The last tile may overlap its neighbour by more than ``overlap``; the count depends only on
    ``length``, so every frame of one size has the same number of tiles (a fixed batch shape).
    """
    stride = tile - overlap
    n = 1 + max(0, math.ceil((length - tile) / stride))
    return tuple(min(i * stride, length - tile) for i in range(n))


def blend_window(tile: int, overlap: int) -> torch.Tensor:
    """1-D blending weights of one tile, ``(tile,)`` float32, all positive.

    Linear ramps over the ``overlap`` pixels at each end, 1 in between (all 1 without overlap):
    a tile's border, where its map suffers most from the convolutions' padding, yields to its
    neighbour's interior. Never zero, so pixels only one tile covers (the region's border)
    keep that tile's value after normalisation.
    """
    centres = torch.arange(tile, dtype=torch.float64) + 0.5
    if overlap == 0:
        return torch.ones(tile)
    return (torch.minimum(centres, tile - centres) / overlap).clamp(max=1.0).float()


@dataclass(frozen=True)
class TileGrid:
    """Square tiles covering a region exactly; make one with :meth:`for_region`.

    Attributes:
        height: Region height in pixels.
        width: Region width in pixels.
        tile: Tile side in pixels (the model's input size).
        overlap: Pixels shared by neighbouring tiles at least (and the blending ramp).
        ys: Tile rows' top edges.
        xs: Tile columns' left edges.
    """

    height: int
    width: int
    tile: int
    overlap: int
    ys: tuple[int, ...]
    xs: tuple[int, ...]

    @classmethod
    def for_region(cls, height: int, width: int, tile: int = 256, overlap: int = 32) -> TileGrid:
        """The grid of a ``height`` x ``width`` region.

        A region smaller than one tile is refused rather than padded: padding would show the
        model borders it never saw in training and flag them.

        Raises:
            ValueError: ``tile`` is not positive or ``overlap`` is not in ``[0, tile)``.
            RegionError: The region is smaller than one tile.
        """
        if tile <= 0 or not 0 <= overlap < tile:
            raise ValueError(
                f"tile {tile} with overlap {overlap}: need tile > 0, 0 <= overlap < tile"
            )
        if height < tile or width < tile:
            raise RegionError(
                f"the region is {height}x{width} px, smaller than one {tile} px tile: use a larger "
                "roi, or no tiling (the region is then resized to the model's input)",
                kind=ErrorType.TILING_MISMATCH,
            )
        return cls(
            height,
            width,
            tile,
            overlap,
            tile_origins(height, tile, overlap),
            tile_origins(width, tile, overlap),
        )

    @property
    def count(self) -> int:
        """Tiles per image, ``T``."""
        return len(self.ys) * len(self.xs)

    @property
    def origins(self) -> tuple[tuple[int, int], ...]:
        """Each tile's top-left ``(y, x)``, row-major: tile ``k`` of an image is ``origins[k]``."""
        return tuple((y, x) for y in self.ys for x in self.xs)

    def cut(self, images: torch.Tensor) -> torch.Tensor:
        """Tiles of a batch of regions at native resolution, no resizing.

        Args:
            images: ``(N, C, H, W)``, any dtype and device, ``(H, W)`` the grid's region.

        Returns:
            ``(N * T, C, tile, tile)``: image ``n``'s tiles are rows ``n * T`` to
            ``(n + 1) * T - 1`` (a copy).

        Raises:
            InputSizeError: ``images`` is not ``(N, C, height, width)``.
        """
        if images.ndim != 4 or tuple(images.shape[-2:]) != (self.height, self.width):
            raise InputSizeError(
                f"cannot cut {tuple(images.shape)} into tiles of a {self.height}x{self.width} "
                "region: expected (N, C, height, width)"
            )
        t = self.tile
        tiles = torch.stack([images[:, :, y : y + t, x : x + t] for y, x in self.origins], dim=1)
        return tiles.reshape(-1, images.shape[1], t, t)

    def stitch(self, maps: torch.Tensor) -> torch.Tensor:
        """The tiles' maps blended back into one map per region.

        Each pixel is the weighted mean of the tiles covering it, weights
        :func:`blend_window` (outer product), normalised per pixel: a constant map stitches to
        that constant, and a pixel only one tile covers keeps that tile's value.

        Args:
            maps: ``(N * T, 1, tile, tile)`` in :meth:`cut`'s order, any float dtype.

        Returns:
            ``(N, 1, height, width)`` float32, on ``maps``' device.

        Raises:
            InputSizeError: ``maps`` is not ``(N * T, 1, tile, tile)``.
        """
        t, count = self.tile, self.count
        if maps.ndim != 4 or tuple(maps.shape[1:]) != (1, t, t) or maps.shape[0] % count:
            raise InputSizeError(
                f"cannot stitch {tuple(maps.shape)}: expected (N * {count}, 1, {t}, {t})"
            )
        per_image = maps.float().reshape(-1, count, 1, t, t)
        w = blend_window(t, self.overlap).to(maps.device)
        weights = w[:, None] * w[None, :]
        out = torch.zeros((per_image.shape[0], 1, self.height, self.width), device=maps.device)
        for k, (y, x) in enumerate(self.origins):
            out[:, :, y : y + t, x : x + t].addcmul_(per_image[:, k], weights)
        # The grid is a product of rows and columns, so each pixel's total weight is the
        # product of one row sum and one column sum: no (H, W) weight image is needed.
        out /= self._axis_weights(self.ys, self.height, w)[:, None]
        out /= self._axis_weights(self.xs, self.width, w)
        return out

    def _axis_weights(self, starts: tuple[int, ...], length: int, w: torch.Tensor) -> torch.Tensor:
        total = torch.zeros(length, device=w.device)
        for s in starts:
            total[s : s + self.tile] += w
        return total


def image_scores(stitched: torch.Tensor) -> torch.Tensor:
    """Image scores of stitched maps: the maximum of each, ``(N, 1, H, W)`` -> ``(N,)``.

    The same rule as an untiled image's score (the maximum of its map); every blending weight
    is positive, so no part of any tile is left out of it.
    """
    return torch.amax(stitched, dim=(-3, -2, -1))


def _rotation(angle: float) -> tuple[float, float]:
    """``(cos, sin)`` of ``angle`` degrees, exact at multiples of 90 (integer boxes stay so)."""
    quarter = angle / 90.0
    if quarter == round(quarter):
        return ((1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (0.0, -1.0))[round(quarter) % 4]
    a = math.radians(angle)
    return math.cos(a), math.sin(a)


@dataclass(frozen=True)
class Roi:
    """A region of interest: a rectangle of the frame, optionally rotated about its centre.

    Without rotation the ROI is the frame's pixels ``[x, x + width) x [y, y + height)`` and
    its coordinates are the frame's shifted by ``(x, y)``. With ``angle``, that rectangle is
    turned about its centre by ``angle`` degrees counter-clockwise as seen on screen (OpenCV's
    ``getRotationMatrix2D`` convention), and :meth:`extract` gives its content upright
    (bilinear): a part lying askew on the belt comes out straight.

    Attributes:
        x: Left edge of the (unrotated) rectangle, frame pixels.
        y: Top edge.
        width: Width in pixels (the extracted region's width).
        height: Height in pixels.
        angle: Rotation in degrees, counter-clockwise on screen; 0 = a plain crop.
    """

    x: int
    y: int
    width: int
    height: int
    angle: float = 0.0

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"an roi needs a positive size, got {self.width}x{self.height}")

    @property
    def size(self) -> tuple[int, int]:
        """The extracted region's ``(height, width)``."""
        return self.height, self.width

    @property
    def rotated(self) -> bool:
        """Whether extraction resamples (any angle but a multiple of 360)."""
        return self.angle % 360 != 0

    def matrix(self) -> np.ndarray:
        """ROI pixel ``(u, v)`` -> frame pixel ``(x, y)``: ``(2, 3)`` float64 affine.

        Pixel-centre coordinates on both sides, so it is what ``cv2.warpAffine`` takes to draw
        an ROI-sized image (a mask, a heat map) into the frame. Without rotation it is the
        shift by ``(x, y)``.
        """
        c, s = _rotation(self.angle)
        rotation = np.array([[c, s], [-s, c]])
        half = np.array([(self.width - 1) / 2, (self.height - 1) / 2])
        shift = np.array([self.x, self.y]) + half - rotation @ half
        return np.hstack([rotation, shift[:, None]])

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """ROI pixel coordinates ``(K, 2)`` as ``(x, y)`` -> frame pixel coordinates ``(K, 2)``."""
        m = self.matrix()
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        out: np.ndarray = pts @ m[:, :2].T + m[:, 2]
        return out

    def corners(self) -> np.ndarray:
        """The rectangle's corners in the frame, ``(4, 2)`` ``(x, y)`` edge coordinates.

        Clockwise on screen from the ROI's own top-left corner.
        """
        edges = np.array(
            [[0, 0], [self.width, 0], [self.width, self.height], [0, self.height]], np.float64
        )
        # Edges are pixel centres shifted by half a pixel, in both coordinate systems.
        return self.to_frame(edges - 0.5) + 0.5

    def box_to_frame(
        self, box: tuple[int, int, int, int], frame_size: tuple[int, int]
    ) -> tuple[int, int, int, int]:
        """An ROI box ``(x, y, width, height)`` as the frame box that encloses it.

        Without rotation the box is shifted; with it, the rotated box's axis-aligned bounding
        box (so a little larger). Clipped to the frame ``(height, width)``.
        """
        bx, by, bw, bh = box
        corners = np.array([[bx, by], [bx + bw, by], [bx + bw, by + bh], [bx, by + bh]], np.float64)
        frame = self.to_frame(corners - 0.5) + 0.5
        fh, fw = frame_size
        x0 = max(0, math.floor(frame[:, 0].min() + _EPS))
        y0 = max(0, math.floor(frame[:, 1].min() + _EPS))
        x1 = min(fw, math.ceil(frame[:, 0].max() - _EPS))
        y1 = min(fh, math.ceil(frame[:, 1].max() - _EPS))
        return x0, y0, max(0, x1 - x0), max(0, y1 - y0)

    def check_fits(self, frame_size: tuple[int, int]) -> None:
        """Raise unless the whole rectangle lies inside a frame of ``(height, width)``.

        Raises:
            RegionError: Some of it is outside (``kind`` ``roi_outside_frame``).
        """
        fh, fw = frame_size
        c = self.corners()
        if c.min() < -_EPS or c[:, 0].max() > fw + _EPS or c[:, 1].max() > fh + _EPS:
            raise RegionError(
                f"roi (x {self.x}, y {self.y}, {self.width}x{self.height} px, angle "
                f"{self.angle:g}) reaches outside the {fh}x{fw} px frame (corners x "
                f"{c[:, 0].min():.0f}..{c[:, 0].max():.0f}, y {c[:, 1].min():.0f}.."
                f"{c[:, 1].max():.0f}): fix the camera recipe's roi",
                kind=ErrorType.ROI_OUTSIDE_FRAME,
            )

    def bounds(self, frame_size: tuple[int, int]) -> tuple[int, int, int, int]:
        """The frame pixels :meth:`extract` reads, ``(x0, y0, x1, y1)`` (exclusive ends).

        Crop a frame to these before moving or converting it, then extract with
        ``roi.shifted(-x0, -y0)``: only the ROI's surroundings are copied.
        """
        if not self.rotated:
            return self.x, self.y, self.x + self.width, self.y + self.height
        fh, fw = frame_size
        c = self.corners()
        # One pixel more on each side: bilinear sampling near an edge reads the neighbour.
        x0 = max(0, math.floor(c[:, 0].min()) - 1)
        y0 = max(0, math.floor(c[:, 1].min()) - 1)
        return x0, y0, min(fw, math.ceil(c[:, 0].max()) + 1), min(fh, math.ceil(c[:, 1].max()) + 1)

    def shifted(self, dx: int, dy: int) -> Roi:
        """The same rectangle in a frame whose origin moved by ``(-dx, -dy)``."""
        return Roi(self.x + dx, self.y + dy, self.width, self.height, self.angle)

    def extract(self, images: torch.Tensor) -> torch.Tensor:
        """The ROI's pixels, upright.

        Args:
            images: ``(C, H, W)`` or ``(N, C, H, W)``, any device; uint8 or float.

        Returns:
            ``(C, height, width)`` or ``(N, C, height, width)``, same dtype and device: a view
            without rotation, else bilinearly resampled (uint8 rounded).

        Raises:
            RegionError: The ROI reaches outside the images.
        """
        frame = (int(images.shape[-2]), int(images.shape[-1]))
        self.check_fits(frame)
        if not self.rotated:
            return images[..., self.y : self.y + self.height, self.x : self.x + self.width]
        x0, y0, x1, y1 = self.bounds(frame)
        source = images[..., y0:y1, x0:x1]
        batch = source if source.ndim == 4 else source.unsqueeze(0)
        m = self.shifted(-x0, -y0).matrix()
        sw, sh = x1 - x0, y1 - y0
        # grid_sample's coordinates (align_corners=False): -1 and 1 are the outer pixel edges,
        # so pixel centre p is (2 p + 1) / size - 1; folded into the affine map.
        gx = [float(g) for g in 2 * m[0] / sw + np.array([0.0, 0.0, 1 / sw - 1])]
        gy = [float(g) for g in 2 * m[1] / sh + np.array([0.0, 0.0, 1 / sh - 1])]
        u = torch.arange(self.width, device=images.device, dtype=torch.float32)[None, :]
        v = torch.arange(self.height, device=images.device, dtype=torch.float32)[:, None]
        grid = torch.stack([gx[0] * u + gx[1] * v + gx[2], gy[0] * u + gy[1] * v + gy[2]], dim=-1)
        sampled = F.grid_sample(
            batch.float(),
            grid.unsqueeze(0).expand(batch.shape[0], -1, -1, -1),
            mode="bilinear",
            padding_mode="border",
            align_corners=False,
        )
        if images.dtype == torch.uint8:
            sampled = sampled.round_().clamp_(0, 255).to(torch.uint8)
        else:
            sampled = sampled.to(images.dtype)
        return sampled if source.ndim == 4 else sampled[0]


__all__ = ["Roi", "TileGrid", "blend_window", "image_scores", "tile_origins"]
