"""GenICam pixel formats to the pipeline's BGR uint8 frames, once, on the source's thread."""

from __future__ import annotations

import cv2
import numpy as np

from inspector.errors import ImageDecodeError

#: OpenCV conversion per Bayer format, named by the sensor's top-left 2 x 2 block as GenICam
#: names it (OpenCV's older BayerRG2BGR names a different corner: not those).
_BAYER = {
    "BayerRG8": cv2.COLOR_BayerRGGB2BGR,
    "BayerBG8": cv2.COLOR_BayerBGGR2BGR,
    "BayerGR8": cv2.COLOR_BayerGRBG2BGR,
    "BayerGB8": cv2.COLOR_BayerGBRG2BGR,
}
#: Bytes per pixel of the raw buffer.
BYTES_PER_PIXEL = {"Mono8": 1, "Mono16": 2, "RGB8": 3, **dict.fromkeys(_BAYER, 1)}


def to_bgr(data: bytes, width: int, height: int, pixel_format: str) -> np.ndarray:
    """One camera buffer as a BGR uint8 image ``(height, width, 3)``.

    Mono16 keeps its 8 most significant bits (a 10- or 12-bit sensor's data sits in the low
    bits of each 16-bit word only if the camera is set so; most align to the top).

    Raises:
        ImageDecodeError: An unsupported format, or a buffer of the wrong size.
    """
    depth = BYTES_PER_PIXEL.get(pixel_format)
    if depth is None:
        raise ImageDecodeError(
            f"pixel format {pixel_format} is not supported: set pixel_format to one of "
            f"{', '.join(sorted(BYTES_PER_PIXEL))}"
        )
    expected = width * height * depth
    if len(data) < expected:
        raise ImageDecodeError(
            f"{pixel_format} buffer of {len(data)} bytes for {width} x {height} (need {expected})"
        )
    if pixel_format == "Mono16":
        mono = np.frombuffer(data, "<u2", width * height).reshape(height, width)
        return np.asarray(cv2.cvtColor((mono >> 8).astype(np.uint8), cv2.COLOR_GRAY2BGR))
    raw = np.frombuffer(data, np.uint8, expected)
    if pixel_format == "Mono8":
        return np.asarray(cv2.cvtColor(raw.reshape(height, width), cv2.COLOR_GRAY2BGR))
    if pixel_format == "RGB8":
        return np.asarray(cv2.cvtColor(raw.reshape(height, width, 3), cv2.COLOR_RGB2BGR))
    return np.asarray(cv2.cvtColor(raw.reshape(height, width), _BAYER[pixel_format]))
