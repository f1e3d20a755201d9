from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.errors import ImageDecodeError, InspectorError
from inspector.imaging import (
    decode_image,
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


def _png(data: np.ndarray) -> bytes:
    return cv2.imencode(".png", data)[1].tobytes()


def _gray_alpha_png(gray: int, alpha: int, shape: tuple[int, int] = (4, 5)) -> bytes:
    """A PNG of colour type 4 (grey + alpha), which cv2.imencode cannot write."""
    h, w = shape
    pixel = bytes([gray, alpha])
    raw = b"".join(b"\0" + pixel * w for _ in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        return struct.pack(">I", len(body)) + kind + body + crc

    header = struct.pack(">IIBBBBB", w, h, 8, 4, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_decode_colour_keeps_bgr_order() -> None:
    image = np.zeros((6, 8, 3), np.uint8)
    image[..., 2] = 200  # red in BGR
    decoded = decode_image(_png(image))
    assert decoded.shape == (6, 8, 3) and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, image)
    assert decode_image(_jpeg()).shape == (48, 64, 3)


def test_decode_grayscale_becomes_three_equal_channels() -> None:
    decoded = decode_image(_png(np.full((5, 7), 9, np.uint8)))
    assert decoded.shape == (5, 7, 3)
    assert (decoded == 9).all()


def test_decode_drops_alpha() -> None:
    bgra = np.zeros((5, 7, 4), np.uint8)
    bgra[..., :3] = (10, 20, 30)
    bgra[..., 3] = 0  # fully transparent: the colour must still come through unpremultiplied
    decoded = decode_image(_png(bgra))
    assert decoded.shape == (5, 7, 3)
    assert (decoded == (10, 20, 30)).all()
    grey_alpha = decode_image(_gray_alpha_png(200, 10))
    assert grey_alpha.shape == (4, 5, 3) and (grey_alpha == 200).all()


def test_decode_scales_16_bit_to_8_bit() -> None:
    deep = np.array([[0, 257 * 100, 65535]], np.uint16)
    decoded = decode_image(_png(deep))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded[..., 0], [[0, 100, 255]])
    deep_bgra = np.full((3, 3, 4), 257 * 7, np.uint16)
    assert (decode_image(_png(deep_bgra)) == 7).all()


def test_decode_float_tiff_is_read_as_unit_range() -> None:
    data = cv2.imencode(".tiff", np.full((3, 3), 0.5, np.float32))[1].tobytes()
    assert (decode_image(data) == 128).all()


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty payload"),
        (b"hello, not an image", r"not a decodable image \(19 bytes, starts with b'hello, n'\)"),
    ],
)
def test_undecodable_payloads_raise_with_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(payload)


@pytest.mark.parametrize("keep", [20, 0.5, 0.9, -1])
def test_truncated_jpeg_raises(keep: float) -> None:
    data = _jpeg()
    cut = data[:keep] if isinstance(keep, int) else data[: int(len(data) * keep)]
    with pytest.raises(ImageDecodeError, match=r"truncated JPEG \(\d+ bytes, no end-of-image"):
        decode_image(cut)


def test_truncated_png_raises() -> None:
    data = _png(np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(ImageDecodeError, match="not a decodable image"):
        decode_image(data[: len(data) // 2])


def test_jpeg_with_padding_after_the_end_marker_decodes() -> None:
    assert decode_image(_jpeg() + b"\0" * 16).shape == (48, 64, 3)


def test_read_image_round_trips_non_ascii_paths(tmp_path: Path) -> None:
    image = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    path = tmp_path / "ünïcode 日本" / "bild.png"
    write_png(path, image)  # also creates the missing parent
    np.testing.assert_array_equal(read_image(path), image)


def test_read_image_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match=r"cannot read .*missing\.png"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageDecodeError, match="cannot read"):
        read_image(tmp_path)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageDecodeError, match=r"junk\.png: not a decodable image"):
        read_image(junk)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageDecodeError, match=r"empty\.jpg: empty payload"):
        read_image(empty)


def test_write_png_failures_raise_inspector_error(tmp_path: Path) -> None:
    with pytest.raises(InspectorError, match="cannot encode PNG"):
        write_png(tmp_path / "two.png", np.zeros((4, 4, 2), np.uint8))
    (tmp_path / "taken").mkdir()
    with pytest.raises(InspectorError, match="cannot write"):
        write_png(tmp_path / "taken", np.zeros((4, 4, 3), np.uint8))


def test_heatmap_overlay_blends_a_resized_jet_map() -> None:
    image = np.full((40, 60, 3), 100, np.uint8)
    heat = np.zeros((20, 30), np.float32)
    heat[:, 15:] = 1.0
    overlay = heatmap_overlay(image, heat)
    assert overlay.shape == image.shape and overlay.dtype == np.uint8
    cold, hot = overlay[20, 5].astype(int), overlay[20, 55].astype(int)
    assert cold[0] > cold[2]  # JET 0 is blue (BGR)
    assert hot[2] > hot[0]  # JET 1 is red
    np.testing.assert_array_equal(heatmap_overlay(image, heat, alpha=0.0), image)
    assert not np.array_equal(heatmap_overlay(image, heat, alpha=1.0)[20, 55], image[20, 55])


def test_heatmap_overlay_tolerates_nan_and_out_of_range() -> None:
    image = np.zeros((8, 8, 3), np.uint8)
    heat = np.array([[np.nan, -3.0], [0.5, 7.0]], np.float32)
    overlay = heatmap_overlay(image, heat, alpha=1.0)
    jet = cv2.applyColorMap(np.array([[0, 255]], np.uint8), cv2.COLORMAP_JET)
    np.testing.assert_array_equal(overlay[0, 0], jet[0, 0])  # NaN and -3 -> 0
    np.testing.assert_array_equal(overlay[7, 7], jet[0, 1])  # 7 -> 1


def test_draw_mask_outline_draws_the_border_only() -> None:
    image = np.full((40, 60, 3), 100, np.uint8)
    mask = np.zeros((40, 60), bool)
    mask[10:30, 20:40] = True
    outlined = draw_mask_outline(image, mask)
    assert (image == 100).all()  # input untouched
    np.testing.assert_array_equal(outlined[10, 25], (0, 0, 255))
    np.testing.assert_array_equal(outlined[20, 30], (100, 100, 100))  # interior
    np.testing.assert_array_equal(outlined[2, 2], (100, 100, 100))  # outside
    small = draw_mask_outline(image, mask[::2, ::2], color=(255, 0, 0))  # resized to fit
    np.testing.assert_array_equal(small[10, 25], (255, 0, 0))
    np.testing.assert_array_equal(draw_mask_outline(image, np.zeros((40, 60), bool)), image)


@pytest.mark.parametrize("dtype", [bool, np.uint8])
def test_mask_png_base64_round_trip(dtype: type) -> None:
    mask = np.zeros((20, 30), bool)
    mask[5:9, 3:17] = True
    mask[0, 0] = True
    data = encode_png_base64(mask.astype(dtype))
    png = cv2.imdecode(np.frombuffer(base64.b64decode(data), np.uint8), cv2.IMREAD_UNCHANGED)
    assert png is not None and png.shape == (20, 30) and set(np.unique(png)) == {0, 255}
    np.testing.assert_array_equal(png > 127, mask)
