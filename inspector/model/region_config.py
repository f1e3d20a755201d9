"""Where a camera's frames are inspected: region of interest and tiling, as configuration.

Shared by the daemon's recipes (``cameras.<id>.roi`` / ``.tiling``) and training (``inspector
train --roi ... --tile ...``), so the model is trained on exactly what the daemon shows it.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from inspector.model.config import Frozen
from inspector.model.tiling import Roi

#: Largest ROI coordinate or size, tile or overlap in pixels: beyond any camera's sensor.
MAX_SIDE = 1 << 20


class RoiConfig(Frozen):
    """A camera's region of interest (``cameras.<id>.roi``), in frame pixels.

    The rectangle ``[x, x + width) x [y, y + height)``, turned by ``angle`` degrees
    counter-clockwise (as seen on screen) about its centre. Only that region is inspected;
    defects are still reported in full-frame pixels. A frame the rectangle does not fit in
    becomes a dead letter ``roi_outside_frame``.

    Attributes:
        x: Left edge of the unrotated rectangle (negative only where the turned rectangle
            still starts inside the frame).
        y: Top edge (likewise).
        width: Width in pixels.
        height: Height in pixels.
        angle: Rotation in degrees (0: a plain crop; otherwise resampled bilinearly).
    """

    x: int = Field(ge=-MAX_SIDE, le=MAX_SIDE)
    y: int = Field(ge=-MAX_SIDE, le=MAX_SIDE)
    width: int = Field(gt=0, le=MAX_SIDE)
    height: int = Field(gt=0, le=MAX_SIDE)
    angle: float = Field(default=0.0, ge=-360, le=360)

    @model_validator(mode="after")
    def _inside_the_origin(self) -> RoiConfig:
        # The frame's size varies (checked per frame); its top-left corner does not.
        corners = self.to_roi().corners()
        if corners.min() < -1e-6:
            raise ValueError(
                f"the roi reaches left of or above the frame (corners at x >= "
                f"{corners[:, 0].min():.1f}, y >= {corners[:, 1].min():.1f}): move x and y"
            )
        return self

    def to_roi(self) -> Roi:
        """The ROI as :mod:`inspector.model.tiling` takes it."""
        return Roi(self.x, self.y, self.width, self.height, self.angle)


class TilingConfig(Frozen):
    """Cutting a camera's region into tiles at native resolution (``cameras.<id>.tiling``).

    Every tile goes to the model unresized, so ``tile`` must be the served model's input size
    (checked when the daemon starts and when a recipe is set). Each tiled frame's tiles run
    ``batcher.max_batch_size`` at a time, interleaved with other cameras' batches by deadline
    (``inspector.runtime.schedule``); the image score is the maximum of the stitched map.

    Attributes:
        tile: Tile side in pixels, a multiple of 32 (the model's input size).
        overlap: Pixels neighbouring tiles share at least, where their maps are blended.
    """

    tile: int = Field(default=256, gt=0, le=MAX_SIDE)
    overlap: int = Field(default=32, ge=0, le=MAX_SIDE)

    @field_validator("tile")
    @classmethod
    def _multiple_of_32(cls, value: int) -> int:
        if value % 32:
            raise ValueError(
                f"tile {value} is not a multiple of 32 (a model's input size is): use the "
                "served model's image size, e.g. 256"
            )
        return value

    @model_validator(mode="after")
    def _overlap_below_tile(self) -> TilingConfig:
        if self.overlap >= self.tile:
            raise ValueError(f"overlap {self.overlap} must be smaller than tile {self.tile}")
        return self
