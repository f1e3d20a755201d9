"""Image helpers shared by training, prediction and the daemon.

A leaf module: it imports nothing from inspector except :mod:`inspector.errors`, so every other
module may use it without import cycles. Images are OpenCV's BGR ``uint8`` ``(H, W, 3)``.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import ImageDecodeError, InspectorError

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
#: Encoders may pad a few bytes after the end-of-image marker; more than this counts as cut off.
_JPEG_TAIL = 64


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any decoded depth and channel count -> BGR ``uint8`` ``(H, W, 3)``."""
    if image.dtype == np.uint16:
        # 65535 / 257 = 255 exactly: the full 16-bit range maps onto the full 8-bit range.
        image = (image / 257.0).round().astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        # Float TIFF/EXR hold 0..1 by convention.
        image = (np.nan_to_num(np.clip(image, 0.0, 1.0)) * 255.0).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image[:, :, :3])


def decode_image(data: bytes) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, BMP, TIFF, ...) to BGR.

    Grayscale becomes three equal channels, alpha is dropped, 16-bit is scaled to 8-bit
    (``v / 257``) and float images are read as 0..1. EXIF orientation is not applied, so a file
    yields the same pixels in training and in production.

    Args:
        data: The encoded file's bytes.

    Returns:
        The image, ``uint8`` ``(H, W, 3)`` in BGR order.

    Raises:
        ImageDecodeError: ``data`` is empty, a JPEG without its end-of-image marker (cut off in
            transit), or not an image OpenCV can decode.
    """
    if not data:
        raise ImageDecodeError("empty payload")
    check_jpeg_complete(data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"not a decodable image ({len(data)} bytes, starts with {data[:8]!r})"
        )
    return _to_bgr8(image)


def check_jpeg_complete(data: bytes) -> None:
    """Refuse a JPEG cut off in transit, whichever decoder is to read it.

    OpenCV 4.x decodes a cut-off JPEG into a grey-filled picture with only a log line (5.x
    returns None) and GPU decoders may fill the missing rows too; inspecting half a frame
    would report a huge bogus defect, so a JPEG must end with its EOI marker.

    Raises:
        ImageDecodeError: ``data`` starts like a JPEG and has no end-of-image marker.
    """
    if data[:2] == _JPEG_SOI and _JPEG_EOI not in data[-_JPEG_TAIL:]:
        raise ImageDecodeError(f"truncated JPEG ({len(data)} bytes, no end-of-image marker)")


def read_image(path: Path) -> np.ndarray:
    """Read an image file to BGR, like :func:`decode_image`.

    Reading the bytes in Python (not ``cv2.imread``) makes non-ASCII paths work everywhere.

    Args:
        path: The image file.

    Returns:
        The image, ``uint8`` ``(H, W, 3)`` in BGR order.

    Raises:
        ImageDecodeError: The file cannot be read or decoded; the message names the path.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{path}: {exc}") from exc


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an image as PNG, creating parent folders.

    Args:
        path: Destination file.
        image: ``uint8`` or ``uint16``, ``(H, W)``, ``(H, W, 3)`` BGR or ``(H, W, 4)`` BGRA.

    Raises:
        InspectorError: The image cannot be encoded or the file cannot be written.
    """
    try:
        ok, buf = cv2.imencode(".png", image)
    except cv2.error as exc:
        raise InspectorError(
            f"cannot encode PNG for {path} (array {image.dtype} {image.shape}): {exc}"
        ) from exc
    if not ok:
        raise InspectorError(f"cannot encode PNG for {path} (array {image.dtype} {image.shape})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buf.tobytes())
    except OSError as exc:
        raise InspectorError(f"cannot write {path}: {exc.strerror or exc}") from exc


def heatmap_overlay(image_bgr: np.ndarray, amap01: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend an anomaly map as a JET heat map (blue 0, red 1) over an image.

    Args:
        image_bgr: ``uint8`` ``(H, W, 3)``.
        amap01: Map ``(h, w)`` in 0..1 at any resolution; resized bilinearly to ``(H, W)``.
            Values outside 0..1 are clipped, NaN counts as 0.
        alpha: Weight of the heat map (0 = image only, 1 = heat map only).

    Returns:
        The blend, ``uint8`` ``(H, W, 3)`` BGR.
    """
    h, w = image_bgr.shape[:2]
    heat = cv2.resize(
        np.nan_to_num(amap01.astype(np.float32)), (w, h), interpolation=cv2.INTER_LINEAR
    )
    colour = cv2.applyColorMap(
        (np.clip(heat, 0.0, 1.0) * 255.0).round().astype(np.uint8), cv2.COLORMAP_JET
    )
    a = min(max(float(alpha), 0.0), 1.0)
    blended: np.ndarray = cv2.addWeighted(image_bgr, 1.0 - a, colour, a, 0.0)
    return blended


def draw_mask_outline(
    image_bgr: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 0, 255)
) -> np.ndarray:
    """Draw the outer contours of a mask onto a copy of an image.

    Args:
        image_bgr: ``uint8`` ``(H, W, 3)``.
        mask: ``(h, w)`` bool or 0/non-zero; resized (nearest neighbour) to ``(H, W)`` if needed.
        color: BGR colour of the outline (default red).

    Returns:
        A new ``uint8`` ``(H, W, 3)`` image; the input is left untouched.
    """
    out = image_bgr.copy()
    h, w = out.shape[:2]
    binary: np.ndarray = (np.asarray(mask) > 0).astype(np.uint8)
    if binary.shape != (h, w):
        binary = cv2.resize(binary, (w, h), interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    # Thicker lines on large images so the outline survives downscaled viewing.
    thickness = max(1, round(max(h, w) / 400))
    cv2.drawContours(out, contours, -1, color, thickness)
    return out


def encode_png_base64(mask: np.ndarray) -> str:
    """Encode a mask as a single-channel PNG (0 / 255) in base64.

    Args:
        mask: ``(H, W)`` bool or 0/non-zero.

    Returns:
        ASCII base64 of the PNG file.

    Raises:
        InspectorError: The mask cannot be encoded (for example, it is empty).
    """
    mask = np.asarray(mask)
    if mask.dtype == np.bool_:
        binary = mask.view(np.uint8) * np.uint8(255)  # one pass (frame-sized masks are MBs)
    else:
        binary = (mask > 0).astype(np.uint8) * 255
    try:
        ok, buf = cv2.imencode(".png", binary)
    except cv2.error as exc:
        raise InspectorError(f"cannot encode mask of shape {binary.shape}: {exc}") from exc
    if not ok:
        raise InspectorError(f"cannot encode mask of shape {binary.shape}")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def decode_png_base64(data: str) -> np.ndarray:
    """Inverse of :func:`encode_png_base64`.

    Args:
        data: base64 of a PNG (any image format OpenCV reads works).

    Returns:
        The mask, bool ``(H, W)`` (pixels above 127 are set).

    Raises:
        ImageDecodeError: ``data`` is not base64 or not an image.
    """
    try:
        raw = base64.b64decode(data)
    except (binascii.Error, ValueError) as exc:
        raise ImageDecodeError(f"mask is not valid base64: {exc}") from exc
    img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE) if raw else None
    if img is None:
        raise ImageDecodeError(f"mask is not a PNG ({len(raw)} bytes)")
    decoded: np.ndarray = img > 127
    return decoded
