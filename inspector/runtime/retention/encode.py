"""Which frames are retained, and their files encoded from an inspection.

Runs on the retention writer thread, never on the pipeline's: encoding a frame-sized PNG takes
milliseconds to tens of milliseconds.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import cv2
import numpy as np
import torch

from inspector.errors import InspectorError
from inspector.imaging import draw_mask_outline, heatmap_overlay
from inspector.messages import ResultMessage
from inspector.runtime.records import Inspection
from inspector.runtime.retention.records import RetentionItem

#: Why a frame is retained: the ``kind`` label of ``inspector_retention_frames_total``.
RetainKind = Literal["flagged", "sampled"]
RETAIN_KINDS: tuple[RetainKind, ...] = ("flagged", "sampled")

_JPEG_QUALITY = 95
#: Little- and big-endian TIFF, then BigTIFF.
_TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")


def sample_point(frame_id: str) -> float:
    """Where a frame id falls in [0, 1): the first 64 bits of its SHA-256.

    Deterministic across runs and processes (unlike ``hash()``), so the same frames are
    sampled on every run and in tests.
    """
    digest = hashlib.sha256(frame_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def retain_kind(message: ResultMessage, good_sample_rate: float) -> RetainKind | None:
    """Whether a result's frame is retained: every flagged one, a sampled share of the rest."""
    if message.is_anomalous:
        return "flagged"
    if sample_point(message.frame_id) < good_sample_rate:
        return "sampled"
    return None


def sniff_suffix(data: bytes) -> str | None:
    """The file suffix of an encoded image from its magic bytes; ``None`` if not recognised."""
    if data[:3] == b"\xff\xd8\xff":
        return ".jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return ".png"
    if data[:2] == b"BM":
        return ".bmp"
    if data[:4] in _TIFF_SIGNATURES:
        return ".tif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return ".gif"
    return None


def frame_bgr(image: np.ndarray | torch.Tensor) -> np.ndarray:
    """A frame's pixels as BGR ``uint8`` ``(h, w, 3)`` on the host.

    Args:
        image: BGR ``(h, w, 3)`` (numpy) or RGB ``(3, h, w)`` (a tensor decoded on the GPU).
    """
    if isinstance(image, torch.Tensor):
        return np.ascontiguousarray(image.permute(1, 2, 0).flip(-1).cpu().numpy())
    return image


def encode(image: np.ndarray, suffix: Literal[".png", ".jpg"]) -> bytes:
    """Encode ``image`` (``uint8``, ``(h, w)`` or ``(h, w, 3)`` BGR) as PNG or JPEG.

    Raises:
        InspectorError: OpenCV cannot encode it.
    """
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if suffix == ".jpg" else []
    try:
        ok, buf = cv2.imencode(suffix, image, params)
    except cv2.error as exc:
        what = f"{suffix} ({image.dtype} {image.shape})"
        raise InspectorError(f"cannot encode {what}: {exc}") from exc
    if not ok:
        raise InspectorError(f"cannot encode {suffix} ({image.dtype} {image.shape})")
    return bytes(buf.tobytes())


def item_from_inspection(
    inspection: Inspection, image_format: Literal["png", "jpeg"]
) -> RetentionItem:
    """Everything retained of one finished frame, encoded.

    The frame is the Kafka payload as received when its format is recognised (the original
    bytes: no re-encoding loss), else the decoded pixels as ``image_format``. The overlay (heat
    map and mask outline, as the overlay sink draws them) exists for frames with a map, the
    mask PNG (0 / 255, frame size) for frames with a mask.

    Raises:
        InspectorError: A picture cannot be encoded.
    """
    message, frame = inspection.message, inspection.frame
    raw = frame.raw.value if frame.raw is not None else None
    suffix = sniff_suffix(raw) if raw else None
    pixels: np.ndarray | None = None
    if raw is not None and suffix is not None:
        frame_bytes = raw
    else:
        pixels = frame_bgr(frame.image)
        suffix = ".jpg" if image_format == "jpeg" else ".png"
        frame_bytes = encode(pixels, ".jpg" if image_format == "jpeg" else ".png")
    overlay = None
    if inspection.heatmap is not None:
        base = pixels if pixels is not None else frame_bgr(frame.image)
        picture = heatmap_overlay(base, inspection.heatmap)
        if inspection.mask is not None:
            picture = draw_mask_outline(picture, inspection.mask)
        # JPEG, not PNG: a heat map blended over a photograph compresses no better losslessly,
        # and PNG cost the writer thread ~3 ms a frame against ~0.3 ms (bench/retention.py's
        # saturation cost went over its 10 % target on that difference).
        overlay = encode(picture, ".jpg")
    mask = None
    if inspection.mask is not None:
        mask = encode((np.asarray(inspection.mask) > 0).astype(np.uint8) * np.uint8(255), ".png")
    return RetentionItem(
        frame_id=message.frame_id,
        camera_id=message.camera_id,
        score=message.score,
        threshold=message.threshold.image,
        is_anomalous=message.is_anomalous,
        model_name=message.model.name,
        captured_at=message.captured_at,
        processed_at=message.processed_at,
        frame=frame_bytes,
        frame_suffix=suffix,
        overlay=overlay,
        mask=mask,
        result=message.to_json().encode("utf-8"),
    )


__all__ = [
    "RETAIN_KINDS",
    "RetainKind",
    "encode",
    "frame_bgr",
    "item_from_inspection",
    "retain_kind",
    "sample_point",
    "sniff_suffix",
]
