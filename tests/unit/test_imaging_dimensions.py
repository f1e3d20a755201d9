"""Header sizes (image_dimensions) and the pixel limit of decode_image / read_image."""

from __future__ import annotations

import io
import pickle
import struct
import subprocess
import sys
import warnings
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, UnidentifiedImageError

from inspector import imaging
from inspector.errors import ImageDecodeError, ImageTooLargeError
from inspector.imaging import DEFAULT_MAX_PIXELS, decode_image, image_dimensions, read_image

#: Not square, so a swapped height and width shows.
H, W = 37, 53
_REPO = Path(__file__).resolve().parents[2]


def _cv(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, image, list(params))
    assert ok
    return bytes(buf.tobytes())


def _pil(fmt: str, mode: str = "RGB", **options: object) -> bytes:
    colours = np.random.default_rng(3).integers(0, 256, (H, W, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(colours).convert(mode).save(buf, fmt, **options)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    crc = struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return struct.pack(">I", len(body)) + kind + body + crc


def _png_header_only(height: int, width: int, body: bytes = b"garbage") -> bytes:
    """A PNG whose IHDR declares ``height x width`` (1-bit grey) and whose IDAT is ``body``."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")
    )


_RNG = np.random.default_rng(7)
_BGR = _RNG.integers(0, 256, (H, W, 3), np.uint8)
_BGRA = _RNG.integers(0, 256, (H, W, 4), np.uint8)
_GRAY = _RNG.integers(0, 256, (H, W), np.uint8)

#: Encoded images of H x W px that OpenCV decodes too: (name, bytes).
_DECODABLE: list[tuple[str, bytes]] = [
    ("jpeg", _cv(".jpg", _BGR)),
    ("jpeg-gray", _cv(".jpg", _GRAY)),
    ("png-gray8", _cv(".png", _GRAY)),
    ("png-bgr8", _cv(".png", _BGR)),
    ("png-bgra8", _cv(".png", _BGRA)),
    ("png-gray16", _cv(".png", _GRAY.astype(np.uint16) * 257)),
    ("png-bgra16", _cv(".png", _BGRA.astype(np.uint16) * 257)),
    ("png-gray-alpha", _pil("PNG", "LA")),
    ("png-1bit", _pil("PNG", "1")),
    ("png-palette", _pil("PNG", "P")),
    ("bmp", _cv(".bmp", _BGR)),
    ("bmp-gray", _cv(".bmp", _GRAY)),
    ("tiff-uint8", _cv(".tiff", _BGR)),
    ("tiff-uint16", _cv(".tiff", _BGR.astype(np.uint16) * 257)),
    ("tiff-float32", _cv(".tiff", _GRAY.astype(np.float32) / 255.0)),
    ("tiff-float32-bgr", _cv(".tiff", _BGR.astype(np.float32) / 255.0)),  # no Pillow mode
    ("bigtiff", _pil("TIFF", big_tiff=True)),
    ("webp-lossy", _cv(".webp", _BGR, cv2.IMWRITE_WEBP_QUALITY, 80)),
    ("webp-lossless", _cv(".webp", _BGR, cv2.IMWRITE_WEBP_QUALITY, 101)),
    ("webp-extended", _cv(".webp", _BGRA, cv2.IMWRITE_WEBP_QUALITY, 80)),
    ("ppm", _cv(".ppm", _BGR)),
    ("pgm", _cv(".pgm", _GRAY)),
    ("jpeg2000", _pil("JPEG2000")),
]
#: Formats Pillow reads whose OpenCV support varies by build (GIF needs OpenCV 4.11+).
_HEADER_ONLY: list[tuple[str, bytes]] = [
    ("gif", _pil("GIF")),
    ("tga", _pil("TGA")),
    ("pcx", _pil("PCX")),
    ("qoi", _pil("QOI")),
]
_ALL = _DECODABLE + _HEADER_ONLY


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 1-bit 12000 x 12000 PNG, all black: 18 KB on the wire, 432 MB decoded to BGR."""
    buf = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "data"), _ALL, ids=[name for name, _ in _ALL])
def test_dimensions_from_the_header(name: str, data: bytes) -> None:
    assert image_dimensions(data) == (H, W)


def test_webp_samples_cover_every_first_chunk() -> None:
    chunks = {data[12:16] for name, data in _DECODABLE if name.startswith("webp")}
    assert chunks == {b"VP8 ", b"VP8L", b"VP8X"}


@pytest.mark.parametrize(("name", "data"), _DECODABLE, ids=[name for name, _ in _DECODABLE])
def test_header_size_is_what_opencv_decodes_and_the_limit_is_inclusive(
    name: str, data: bytes
) -> None:
    assert decode_image(data).shape == (H, W, 3)
    assert decode_image(data, max_pixels=H * W).shape == (H, W, 3)  # exactly at the limit
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(data, max_pixels=H * W - 1)
    assert (caught.value.height, caught.value.width, caught.value.max_pixels) == (
        H,
        W,
        H * W - 1,
    )
    assert str(caught.value) == (
        f"{H} x {W} px ({H * W} px) exceeds the pixel limit of {H * W - 1} px "
        "(sources[*].max_pixels)"
    )


def test_multi_page_tiff_gives_the_first_page_which_opencv_decodes() -> None:
    pages = [Image.new("RGB", (W, H)), Image.new("RGB", (W * 10, H * 10))]
    buf = io.BytesIO()
    pages[0].save(buf, "TIFF", save_all=True, append_images=pages[1:])
    data = buf.getvalue()
    assert image_dimensions(data) == (H, W)
    assert decode_image(data, max_pixels=H * W).shape == (H, W, 3)


def test_tiff_size_tags_are_read_when_pillow_cannot_open_the_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise UnidentifiedImageError("no mode for these samples")

    monkeypatch.setattr(Image, "open", refuse)
    tiffs = [data for name, data in _ALL if "tiff" in name]
    assert len(tiffs) == 5
    assert [image_dimensions(data) for data in tiffs] == [(H, W)] * len(tiffs)
    assert image_dimensions(_cv(".png", _BGR)) is None


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\0",
        b"hello, not an image",
        bytes(range(256)) * 4,
        b"\x89PNG\r\n\x1a\n",  # signature without IHDR
        b"\xff\xd8\xff\xe0",  # JPEG start without SOF
        b"RIFF\0\0\0\0WEBP",  # WebP without a chunk
        b"RIFF\0\0\0\0WEBPVP8 " + bytes(20),  # lossy chunk without the start code
        b"RIFF\0\0\0\0WEBPVP8L" + bytes(20),  # lossless chunk without the signature
        b"II*\0\x08\0\0\0",  # TIFF header pointing at a missing IFD
        b"BM" + bytes(10),
        _png_header_only(0, 10),  # zero height
    ],
)
def test_unreadable_headers_give_none(data: bytes) -> None:
    assert image_dimensions(data) is None


def test_opencv_only_formats_are_refused_under_a_limit() -> None:
    hdr = _cv(".hdr", _BGR.astype(np.float32) / 255.0)  # Radiance: OpenCV reads it, Pillow not
    assert decode_image(hdr).shape == (H, W, 3)
    assert image_dimensions(hdr) is None
    with pytest.raises(ImageDecodeError, match="not recognised") as caught:
        decode_image(hdr, max_pixels=DEFAULT_MAX_PIXELS)
    assert not isinstance(caught.value, ImageTooLargeError)
    assert "pixel limit cannot be checked before decoding" in str(caught.value)


def test_png_bomb_is_refused_with_its_size(bomb: bytes) -> None:
    assert len(bomb) < 100_000
    assert image_dimensions(bomb) == (12000, 12000)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(bomb, max_pixels=DEFAULT_MAX_PIXELS)
    error = caught.value
    assert isinstance(error, ImageDecodeError)  # callers catching decode errors catch it too
    assert (error.height, error.width, error.max_pixels) == (12000, 12000, DEFAULT_MAX_PIXELS)
    assert str(error) == (
        "12000 x 12000 px (144.0 MP) exceeds the pixel limit of 50.0 MP (sources[*].max_pixels)"
    )


def test_png_bomb_is_never_handed_to_opencv(bomb: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    def imdecode(*args: object) -> None:
        raise AssertionError("cv2.imdecode called")

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    with pytest.raises(ImageTooLargeError):
        decode_image(bomb, max_pixels=DEFAULT_MAX_PIXELS)
    # Header of a bomb, garbage for pixels: refused as too large, so nothing was decoded.
    with pytest.raises(ImageTooLargeError, match="12000 x 12000 px"):
        decode_image(_png_header_only(12000, 12000), max_pixels=DEFAULT_MAX_PIXELS)


@pytest.mark.component  # decodes in a memory-limited subprocess
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is KiB on Linux only")
def test_png_bomb_costs_no_memory(bomb: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    script = (
        "import resource, sys\n"
        "from pathlib import Path\n"
        "from inspector.errors import ImageTooLargeError\n"
        "from inspector.imaging import DEFAULT_MAX_PIXELS, decode_image\n"
        "data = Path(sys.argv[1]).read_bytes()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    decode_image(data, DEFAULT_MAX_PIXELS)\n"
        "except ImageTooLargeError:\n"
        "    pass\n"
        "else:\n"
        "    sys.exit('decoded')\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script, str(path)],
        capture_output=True,
        text=True,
        cwd=_REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    # Decoding would take 144 MB (grey) plus 432 MB (BGR); the header costs a few pages.
    assert int(done.stdout) < 32 * 1024


def test_sizes_past_pillows_own_bomb_error_are_still_read() -> None:
    # Above 2 * Image.MAX_IMAGE_PIXELS (179 MP) Image.open raises instead of answering.
    assert Image.MAX_IMAGE_PIXELS is not None
    assert 2 * Image.MAX_IMAGE_PIXELS < 10_000 * 20_000
    assert image_dimensions(_png_header_only(10_000, 20_000)) == (10_000, 20_000)
    vp8x = (
        b"RIFF\0\0\0\0WEBPVP8X"
        + struct.pack("<I", 10)
        + bytes(4)
        + (20_000 - 1).to_bytes(3, "little")
        + (10_000 - 1).to_bytes(3, "little")
    )
    assert image_dimensions(vp8x) == (10_000, 20_000)
    with pytest.raises(ImageTooLargeError, match="10000 x 20000 px"):
        decode_image(vp8x, max_pixels=DEFAULT_MAX_PIXELS)


@pytest.mark.parametrize(("name", "data"), _ALL, ids=[name for name, _ in _ALL])
def test_every_format_is_read_past_pillows_bomb_error(
    name: str, data: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tiny Pillow limit sends every sample down the DecompressionBombError path.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)
    assert image_dimensions(data) == (H, W)


def test_pillows_limit_is_left_alone_and_nothing_warns(bomb: bytes) -> None:
    limit = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert image_dimensions(bomb) == (12000, 12000)  # 144 MP: Pillow's warning range
        assert image_dimensions(_png_header_only(10_000, 20_000)) == (10_000, 20_000)
        assert image_dimensions(b"\x89PNG\r\n\x1a\n" + bytes(40)) is None
    assert caught == []
    assert limit == Image.MAX_IMAGE_PIXELS


def test_concurrent_calls_leave_the_warning_filters_alone(bomb: bytes) -> None:
    # Unserialised catch_warnings in 8 threads left the filters changed in 1 run of 5.
    before = list(warnings.filters)
    with ThreadPoolExecutor(8) as pool:
        for _ in range(10):
            sizes = list(pool.map(image_dimensions, [bomb, _DECODABLE[0][1]] * 200))
            assert sizes == [(12000, 12000), (H, W)] * 200
            assert warnings.filters == before


def test_decoded_size_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    # Should Pillow and OpenCV ever read a file differently, OpenCV's size is checked as well.
    small: Callable[[bytes], tuple[int, int]] = lambda data: (1, 1)  # noqa: E731
    monkeypatch.setattr(imaging, "image_dimensions", small)
    with pytest.raises(ImageTooLargeError) as caught:
        decode_image(_cv(".png", _BGR), max_pixels=100)
    assert (caught.value.height, caught.value.width) == (H, W)


def test_no_limit_means_no_header_read(monkeypatch: pytest.MonkeyPatch) -> None:
    def unused(data: bytes) -> None:
        raise AssertionError("image_dimensions called")

    monkeypatch.setattr(imaging, "image_dimensions", unused)
    assert decode_image(_cv(".png", _BGR)).shape == (H, W, 3)


def test_read_image_applies_the_limit_and_names_the_path(bomb: bytes, tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb)
    with pytest.raises(ImageTooLargeError) as caught:
        read_image(path, max_pixels=DEFAULT_MAX_PIXELS)
    assert (caught.value.height, caught.value.width) == (12000, 12000)
    assert caught.value.max_pixels == DEFAULT_MAX_PIXELS
    assert str(caught.value).startswith(f"{path}: 12000 x 12000 px (144.0 MP) exceeds")
    fine = tmp_path / "fine.png"
    fine.write_bytes(_cv(".png", _BGR))
    assert read_image(fine, max_pixels=H * W).shape == (H, W, 3)
    hdr = tmp_path / "radiance.hdr"
    hdr.write_bytes(_cv(".hdr", _BGR.astype(np.float32)))
    with pytest.raises(ImageDecodeError, match=r"radiance\.hdr: image format not recognised"):
        read_image(hdr, max_pixels=DEFAULT_MAX_PIXELS)


def test_too_large_error_pickles_and_rounds_honestly() -> None:
    error = ImageTooLargeError(12000, 12000, DEFAULT_MAX_PIXELS, "cam/1.png")
    copy = pickle.loads(pickle.dumps(error))
    assert isinstance(copy, ImageTooLargeError)
    assert str(copy) == str(error)
    assert (copy.height, copy.width, copy.max_pixels, copy.where) == (
        12000,
        12000,
        DEFAULT_MAX_PIXELS,
        "cam/1.png",
    )
    # One pixel over 50 MP reads 50.0 MP either way: then the message gives exact counts.
    assert "(50000001 px) exceeds the pixel limit of 50000000 px" in str(
        ImageTooLargeError(1, 50_000_001, DEFAULT_MAX_PIXELS)
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_dimensions_never_raise_on_arbitrary_bytes(data: bytes) -> None:
    _assert_valid(image_dimensions(data))


_MAGICS = [data[:16] for _, data in _ALL] + [
    b"RIFF\0\0\0\0WEBPVP8X",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"RIFF\0\0\0\0WEBPVP8L",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(_MAGICS), st.binary(max_size=512))
def test_dimensions_never_raise_on_known_signatures_with_random_tails(
    magic: bytes, tail: bytes
) -> None:
    _assert_valid(image_dimensions(magic + tail))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_dimensions_never_raise_on_cut_or_damaged_images(data: st.DataObject) -> None:
    _, image = data.draw(st.sampled_from(_ALL), label="sample")
    cut = data.draw(st.integers(0, len(image)), label="cut")
    damaged = bytearray(image[:cut])
    for _ in range(data.draw(st.integers(0, 3), label="flips")):
        if damaged:
            at = data.draw(st.integers(0, min(len(damaged), 256) - 1), label="at")
            damaged[at] = data.draw(st.integers(0, 255), label="byte")
    _assert_valid(image_dimensions(bytes(damaged)))


def _assert_valid(size: tuple[int, int] | None) -> None:
    if size is not None:
        height, width = size
        assert isinstance(height, int) and isinstance(width, int)
        assert height > 0 and width > 0
