from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.errors import ImageDecodeError
from inspector.imaging import (
    decode_image,
    decode_png_base64,
    draw_mask_outline,
    encode_png_base64,
    heatmap_overlay,
    read_image,
    write_png,
)


def _jpeg() -> bytes:
    image = np.zeros((48, 64, 3), np.uint8)
    image[10:30, 20:40] = (0, 128, 255)
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_decode_colour_gray_alpha_and_16_bit() -> None:
    assert decode_image(_jpeg()).shape == (48, 64, 3)
    gray = cv2.imencode(".png", np.full((5, 7), 9, np.uint8))[1].tobytes()
    assert decode_image(gray).shape == (5, 7, 3)
    rgba = cv2.imencode(".png", np.full((5, 7, 4), 9, np.uint8))[1].tobytes()
    assert decode_image(rgba).shape == (5, 7, 3)
    deep = cv2.imencode(".png", np.full((5, 7), 65535, np.uint16))[1].tobytes()
    decoded = decode_image(deep)
    assert decoded.dtype == np.uint8 and int(decoded.max()) == 255


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"", "empty payload"), (b"hello, not an image", "not a decodable image")],
)
def test_undecodable_payloads_raise_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(payload)


@pytest.mark.parametrize("keep", [20, 0.5, 0.9])
def test_truncated_jpeg_raises(keep: float) -> None:
    data = _jpeg()
    cut = data[: int(keep if keep > 1 else len(data) * keep)]
    with pytest.raises(ImageDecodeError, match=r"truncated JPEG|not a decodable"):
        decode_image(cut)


def test_jpeg_with_padding_after_the_end_marker_decodes() -> None:
    assert decode_image(_jpeg() + b"\0" * 16).shape == (48, 64, 3)


def test_read_image_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"missing\.png"):
        read_image(tmp_path / "missing.png")
    bad = tmp_path / "ünïcode.png"
    write_png(bad, np.zeros((4, 4, 3), np.uint8))
    assert read_image(bad).shape == (4, 4, 3)


def test_mask_png_base64_round_trip_and_overlays() -> None:
    mask = np.zeros((20, 30), bool)
    mask[5:9, 3:17] = True
    np.testing.assert_array_equal(decode_png_base64(encode_png_base64(mask)), mask)
    image = np.full((40, 60, 3), 100, np.uint8)
    heat = np.zeros((20, 30), np.float32)
    heat[5:9, 3:17] = 1.0
    overlay = heatmap_overlay(image, heat)
    assert overlay.shape == image.shape and not np.array_equal(overlay, image)
    outlined = draw_mask_outline(image, cv2.resize(mask.astype(np.uint8), (60, 40)) > 0)
    assert (outlined != image).any(axis=2).sum() > 0
