"""Image helpers shared by training, prediction and the daemon (leaf module)."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import ImageDecodeError, InspectorError


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint16:
        image = (image / 257).round().astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to BGR uint8 ``(H, W, 3)``."""
    if not data:
        raise ImageDecodeError("empty payload")
    # libjpeg decodes a cut-off JPEG into a grey-filled image with only a warning; inspecting
    # half a frame would report a huge bogus defect, so a JPEG must end with its EOI marker
    # (some encoders pad a few bytes after it).
    if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
        raise ImageDecodeError(f"truncated JPEG ({len(data)} bytes, no end-of-image marker)")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"not a decodable image ({len(data)} bytes, starts with {data[:8]!r})"
        )
    return _to_bgr8(image)


def read_image(path: Path) -> np.ndarray:
    """Read an image file to BGR uint8 ``(H, W, 3)``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc}") from exc
    try:
        return decode_image(data)
    except ImageDecodeError as exc:
        raise ImageDecodeError(f"{path}: {exc}") from exc


def write_png(path: Path, image: np.ndarray) -> None:
    """Write a PNG, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise InspectorError(f"cannot encode PNG for {path}")
    path.write_bytes(buf.tobytes())


def heatmap_overlay(image_bgr: np.ndarray, amap01: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a 0..1 map as a JET heat map over the image."""
    h, w = image_bgr.shape[:2]
    heat = cv2.resize(amap01.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap((np.clip(heat, 0, 1) * 255).astype(np.uint8), cv2.COLORMAP_JET)
    return cv2.addWeighted(image_bgr, 1 - alpha, colour, alpha, 0)


def draw_mask_outline(
    image_bgr: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = (0, 0, 255)
) -> np.ndarray:
    """Draw the contours of a bool mask."""
    out = image_bgr.copy()
    contours, _ = cv2.findContours(
        mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE
    )
    cv2.drawContours(out, contours, -1, color, 1)
    return out


def encode_png_base64(mask: np.ndarray) -> str:
    """Bool/uint8 mask -> base64 PNG (0/255)."""
    ok, buf = cv2.imencode(".png", (mask > 0).astype(np.uint8) * 255)
    if not ok:
        raise InspectorError("cannot encode mask")
    return base64.b64encode(buf.tobytes()).decode("ascii")


def decode_png_base64(data: str) -> np.ndarray:
    """Inverse of :func:`encode_png_base64`: bool ``(H, W)``."""
    img = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise ImageDecodeError("mask is not a PNG")
    return img > 127
