"""Tile grids and regions of interest (inspector.model.tiling): geometry, cut, stitch, ROI."""

from __future__ import annotations

import itertools

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from inspector.errors import InputSizeError, RegionError
from inspector.model.tiling import Roi, TileGrid, blend_window, image_scores, tile_origins


@settings(max_examples=200, deadline=None)
@given(
    length=st.integers(32, 5000),
    tile=st.sampled_from([32, 64, 256, 512]),
    overlap_share=st.floats(0, 0.9),
)
def test_tiles_cover_an_axis_exactly_flush_with_both_edges(
    length: int, tile: int, overlap_share: float
) -> None:
    overlap = int(tile * overlap_share)
    if length < tile:
        with pytest.raises(RegionError, match="smaller than one"):
            TileGrid.for_region(length, tile, tile, overlap)
        return
    starts = tile_origins(length, tile, overlap)
    assert starts[0] == 0 and starts[-1] == length - tile  # flush with both edges
    assert list(starts) == sorted(set(starts))  # no tile twice
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + tile] = True
    assert covered.all()
    # Neighbours share at least `overlap` pixels (the last pair may share more).
    assert all(1 <= b - a <= tile - overlap for a, b in itertools.pairwise(starts))


def test_a_grid_is_the_product_of_its_axes_with_a_fixed_count() -> None:
    grid = TileGrid.for_region(1536, 2048, tile=256, overlap=32)
    assert grid.ys == (0, 224, 448, 672, 896, 1120, 1280)
    assert grid.xs == (0, 224, 448, 672, 896, 1120, 1344, 1568, 1792)
    assert grid.count == 63 == len(grid.origins)
    assert grid.origins[0] == (0, 0) and grid.origins[8] == (0, 1792)  # row-major
    # Same region size, same grid: the batch shape of a camera's frames never changes.
    assert TileGrid.for_region(1536, 2048, 256, 32) == grid
    assert TileGrid.for_region(2048, 2048, 256, 32).count == 81


def test_a_region_smaller_than_a_tile_is_refused_with_what_to_do() -> None:
    with pytest.raises(RegionError, match=r"200x3000 px, smaller than one 256 px tile") as err:
        TileGrid.for_region(200, 3000, 256, 32)
    assert err.value.kind == "tiling_mismatch"
    with pytest.raises(ValueError, match="overlap"):
        TileGrid.for_region(512, 512, 256, 256)


def test_cut_gives_each_tile_at_native_resolution_in_order() -> None:
    grid = TileGrid.for_region(100, 150, tile=64, overlap=16)
    images = torch.arange(2 * 3 * 100 * 150, dtype=torch.float32).reshape(2, 3, 100, 150)
    tiles = grid.cut(images)
    assert tiles.shape == (2 * grid.count, 3, 64, 64)
    for n in range(2):
        for k, (y, x) in enumerate(grid.origins):
            assert torch.equal(tiles[n * grid.count + k], images[n, :, y : y + 64, x : x + 64])
    with pytest.raises(InputSizeError):
        grid.cut(images[:, :, :99])


def test_stitching_the_tiles_of_an_image_gives_the_image_back() -> None:
    # Every pixel is a weighted mean of copies of itself: any blend must reproduce the image.
    grid = TileGrid.for_region(300, 517, tile=64, overlap=24)
    image = torch.rand(2, 1, 300, 517)
    torch.testing.assert_close(grid.stitch(grid.cut(image)), image)


@pytest.mark.parametrize("overlap", [0, 1, 32, 200])
def test_a_constant_map_stitches_to_that_constant(overlap: int) -> None:
    grid = TileGrid.for_region(700, 1000, tile=256, overlap=overlap)
    stitched = grid.stitch(torch.full((3 * grid.count, 1, 256, 256), 0.737))
    assert stitched.shape == (3, 1, 700, 1000) and stitched.dtype == torch.float32
    torch.testing.assert_close(stitched, torch.full_like(stitched, 0.737), rtol=0, atol=1e-6)


def test_stitch_is_the_weighted_mean_of_a_hand_placed_reference() -> None:
    grid = TileGrid.for_region(150, 200, tile=64, overlap=16)
    torch.manual_seed(0)
    maps = torch.rand(2 * grid.count, 1, 64, 64)
    # By hand: ramps of 16 px at each end of a tile, weights of tiles summed per pixel.
    ramp = np.minimum(np.minimum(np.arange(64) + 0.5, 64 - np.arange(64) - 0.5) / 16, 1.0)
    weight = np.outer(ramp, ramp)
    expected = np.zeros((2, 150, 200))
    total = np.zeros((150, 200))
    for k, (y, x) in enumerate(grid.origins):
        for n in range(2):
            expected[n, y : y + 64, x : x + 64] += weight * maps[n * grid.count + k, 0].numpy()
        total[y : y + 64, x : x + 64] += weight
    expected /= total
    stitched = grid.stitch(maps)
    np.testing.assert_allclose(stitched[:, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    # The image score is the stitched map's maximum.
    torch.testing.assert_close(image_scores(stitched), stitched.amax(dim=(1, 2, 3)))
    with pytest.raises(InputSizeError):
        grid.stitch(maps[:-1])


def test_blend_weights_ramp_over_the_overlap_and_never_vanish() -> None:
    w = blend_window(64, 16)
    assert w.min() > 0 and w[16:48].eq(1).all()
    assert torch.equal(w, w.flip(0))
    assert blend_window(64, 0).eq(1).all()


# --- regions of interest --------------------------------------------------------------------


def test_an_unrotated_roi_is_a_crop_and_an_offset() -> None:
    frame = torch.arange(3 * 40 * 60).reshape(3, 40, 60)
    roi = Roi(x=10, y=5, width=30, height=20)
    assert torch.equal(roi.extract(frame), frame[:, 5:25, 10:40])
    np.testing.assert_array_equal(roi.to_frame(np.array([[0, 0], [29, 19]])), [[10, 5], [39, 24]])
    assert roi.box_to_frame((3, 4, 5, 6), (40, 60)) == (13, 9, 5, 6)
    assert roi.bounds((40, 60)) == (10, 5, 40, 25)


@pytest.mark.parametrize("angle", [90.0, 30.0, -17.5, 180.0])
def test_a_rotated_roi_extracts_what_was_drawn_there_upright(angle: float) -> None:
    rng = np.random.default_rng(0)
    upright = cv2.GaussianBlur(rng.uniform(0, 255, (60, 100)).astype(np.float32), (0, 0), 3)
    roi = Roi(120, 80, 100, 60, angle)
    # Drawn into the frame with OpenCV through the ROI's own matrix; extracted with torch.
    frame = cv2.warpAffine(upright, roi.matrix(), (400, 300), flags=cv2.INTER_LINEAR)
    extracted = roi.extract(torch.from_numpy(frame)[None])[0].numpy()
    assert extracted.shape == (60, 100)
    # Two bilinear resamplings (drawing, extracting) of a smooth image; borders excluded.
    np.testing.assert_allclose(extracted[3:-3, 3:-3], upright[3:-3, 3:-3], atol=1.5)
    as_uint8 = roi.extract(torch.from_numpy(frame.round().astype(np.uint8))[None])
    assert as_uint8.dtype == torch.uint8 and as_uint8.shape == (1, 60, 100)


def test_rotated_roi_coordinates_map_back_to_the_frame() -> None:
    # 90 degrees counter-clockwise on screen: the ROI's x axis points up the frame.
    roi = Roi(x=100, y=50, width=40, height=20, angle=90)
    np.testing.assert_allclose(roi.corners(), [[110, 80], [110, 40], [130, 40], [130, 80]])
    # ROI pixel (0, 0) is the bottom-left pixel of the turned rectangle.
    np.testing.assert_allclose(
        roi.to_frame(np.array([[0.0, 0.0], [39.0, 0.0]])), [[110, 79], [110, 40]]
    )
    # A box along the ROI's top edge is a column along the rectangle's left side.
    assert roi.box_to_frame((0, 0, 10, 2), (200, 300)) == (110, 70, 2, 10)
    # At an angle the frame box encloses the turned box (and is clipped to the frame).
    tilted = Roi(x=100, y=50, width=40, height=20, angle=30)
    x, y, w, h = tilted.box_to_frame((10, 5, 6, 6), (200, 300))
    corners = tilted.to_frame(np.array([[10, 5], [16, 5], [16, 11], [10, 11]]) - 0.5) + 0.5
    assert x <= corners[:, 0].min() and x + w >= corners[:, 0].max()
    assert y <= corners[:, 1].min() and y + h >= corners[:, 1].max()
    assert w <= 10 and h <= 10  # not more than the rounding around a 6 px box at 30 degrees


def test_an_roi_reaching_outside_the_frame_is_refused() -> None:
    frame = torch.zeros(3, 100, 200)
    with pytest.raises(RegionError, match=r"outside the 100x200 px frame") as err:
        Roi(150, 10, 60, 20).extract(frame)
    assert err.value.kind == "roi_outside_frame"
    # Turned by 90 degrees, a 90 px wide ROI is 90 px tall: more than this frame has.
    with pytest.raises(RegionError):
        Roi(50, 40, 90, 20, angle=90).check_fits((80, 200))
    Roi(50, 40, 90, 20).check_fits((80, 200))  # unturned it fits
    with pytest.raises(ValueError, match="positive size"):
        Roi(0, 0, 0, 10)
