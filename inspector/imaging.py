"""Image helpers shared by training, prediction and the daemon.

A leaf module: it imports nothing from inspector except :mod:`inspector.errors`, so every other
module may use it without import cycles. Images are OpenCV's BGR ``uint8`` ``(H, W, 3)``.

OpenCV decodes; Pillow only reads headers (:func:`image_dimensions`), because OpenCV has no
header-only API and a pixel limit must be checked before a decompression bomb is decoded.
"""

from __future__ import annotations

import base64
import io
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, TiffImagePlugin

from inspector.errors import ImageDecodeError, ImageTooLargeError, InspectorError

#: Default pixel limit (``sources[*].max_pixels``): 50 MP, above any industrial camera's frame.
#: A 32 KB 1-bit PNG can declare 12000 x 12000 px: 432 MB once decoded to BGR.
DEFAULT_MAX_PIXELS = 50_000_000

_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
#: Encoders may pad a few bytes after the end-of-image marker; more than this counts as cut off.
_JPEG_TAIL = 64

#: Little- and big-endian TIFF, then BigTIFF.
_TIFF_SIGNATURES = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
_TIFF_IMAGE_WIDTH = 256
_TIFF_IMAGE_LENGTH = 257

# warnings.catch_warnings swaps the process-wide filter list (Python 3.11 has no per-thread
# filters): two threads inside it at once can restore each other's "ignore" list and silence
# warnings for good. Decode threads and the Kafka poll thread all read headers, so they take
# turns; a header parse takes microseconds.
_PILLOW_LOCK = threading.Lock()


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """Read an encoded image's size from its header, without decoding any pixel.

    Pillow identifies the format (JPEG, PNG, BMP, TIFF, GIF, PPM, JPEG 2000, AVIF, ...) and
    parses only the header. WebP headers are parsed here (Pillow's plugin allocates the canvas
    on open), and so are the size tags of TIFFs whose samples Pillow has no mode for (3-channel
    float32). A multi-frame file gives its first frame's size (TIFF page 0, the APNG default
    image), which is the frame ``cv2.imdecode`` decodes; GIF gives its logical screen.

    Never raises and never warns, whatever the bytes: this runs on untrusted input before
    anything else looks at it.

    Args:
        data: The encoded file's bytes (any length, any content).

    Returns:
        ``(height, width)`` in pixels, or ``None`` when the format is not one Pillow identifies
        (OpenCV-only formats such as OpenEXR, Radiance HDR, colour PFM, PAM) or the header is
        malformed or cut off.
    """
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        # Pillow's WebP plugin creates libwebp's decoder on open, which allocates two RGBA
        # canvases: Image.open on a 38-byte WebP of 12000 x 12000 px reserves 1.1 GB.
        return _webp_dimensions(data)
    with _PILLOW_LOCK, warnings.catch_warnings():
        # Pillow warns on odd headers (TIFF tags past the end, broken APNG) and on images above
        # Image.MAX_IMAGE_PIXELS (89 MP); none of that matters here, and the size limit is
        # ours to apply. Image.MAX_IMAGE_PIXELS stays untouched: it is Pillow's global.
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
            size = _checked(width, height)
        except Image.DecompressionBombError:
            # Above 2 * MAX_IMAGE_PIXELS (179 MP) Image.open raises after the plugin has parsed
            # the header, and the message has the pixel count only.
            size = _dimensions_past_bomb_check(data)
        except Exception:  # plugins parsing arbitrary bytes raise anything (struct.error, ...)
            size = None
        if size is None and data[:4] in _TIFF_SIGNATURES:
            size = _tiff_dimensions(data)
    return size


def _checked(width: object, height: object) -> tuple[int, int] | None:
    """``(height, width)`` when both are positive ints, else ``None`` (a nonsense header)."""
    if isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0:
        return height, width
    return None


def _dimensions_past_bomb_check(data: bytes) -> tuple[int, int] | None:
    """Size of an image Image.open refused as a decompression bomb; caller holds the lock.

    Image.open is "find the plugin that accepts the first bytes, let it parse the header, then
    check the size": this runs the same registered plugins without the final check. Plugins
    that check the size while parsing (GIF frames past the screen, MPO, DCX) still refuse:
    ``None`` then, and a caller with a pixel limit refuses the image as unreadable, which is
    as safe.
    """
    Image.init()  # Image.open has registered every plugin by now; this is a no-op then
    prefix = data[:16]  # what Image.open hands to the plugins' accept functions
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        try:
            accepted = accept is None or accept(prefix)
            if isinstance(accepted, str) or not accepted:
                continue  # a str is Pillow's "would be this format but the codec is missing"
            with factory(io.BytesIO(data), "") as image:
                width, height = image.size
        except Exception:  # not this format after all, or refused while parsing: next plugin
            continue
        return _checked(width, height)
    return None


def _tiff_dimensions(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from the first IFD of a TIFF Pillow has no mode for; caller locks.

    Pillow refuses to open TIFFs whose samples it cannot map to a mode (3-channel float32,
    float64, int32) although OpenCV decodes them: their ImageLength and ImageWidth tags are
    read with Pillow's tag parser instead.
    """
    bigtiff = data[2:4] in (b"+\0", b"\0+")
    try:
        ifd = TiffImagePlugin.ImageFileDirectory_v2(ifh=data[:16] if bigtiff else data[:8])
        fp = io.BytesIO(data)
        fp.seek(ifd.next)
        ifd.load(fp)
        return _checked(ifd.get(_TIFF_IMAGE_WIDTH), ifd.get(_TIFF_IMAGE_LENGTH))
    except Exception:  # a header cut short or a tag of the wrong type
        return None


def _webp_dimensions(data: bytes) -> tuple[int, int] | None:
    """``(height, width)`` from a WebP's first chunk (RIFF container, RFC 9649), else ``None``.

    ``VP8X`` (extended: alpha, animation, metadata) holds the canvas size, which libwebp and so
    OpenCV decode to; ``VP8 `` (lossy) and ``VP8L`` (lossless) hold the bitstream's size.
    """
    chunk, payload = data[12:16], data[20:30]
    if chunk == b"VP8X" and len(payload) >= 10:
        # flags (1 byte), reserved (3), canvas width - 1 (24-bit LE), canvas height - 1 (24-bit).
        width = int.from_bytes(payload[4:7], "little") + 1
        height = int.from_bytes(payload[7:10], "little") + 1
        return _checked(width, height)
    if chunk == b"VP8 " and len(payload) >= 10 and payload[3:6] == b"\x9d\x01\x2a":
        # frame tag (3 bytes), start code 9d 01 2a, then 14-bit width and height (2 bits scale).
        width = int.from_bytes(payload[6:8], "little") & 0x3FFF
        height = int.from_bytes(payload[8:10], "little") & 0x3FFF
        return _checked(width, height)
    if chunk == b"VP8L" and len(payload) >= 5 and payload[0] == 0x2F:
        # signature 0x2f, then width - 1 and height - 1 in 14 bits each (LSB first).
        bits = int.from_bytes(payload[1:5], "little")
        return _checked((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    return None


def _to_bgr8(image: np.ndarray) -> np.ndarray:
    """Any decoded depth and channel count -> BGR ``uint8`` ``(H, W, 3)``."""
    # In one pass to uint8 (OpenCV rounds as NumPy's round does): NumPy's division and round
    # made two float64 copies, 16 bytes per sample, 1.6 GB for a 50 MP 16-bit RGBA PNG.
    if image.dtype == np.uint16:
        # 65535 / 257 = 255 exactly: the full 16-bit range maps onto the full 8-bit range.
        image = cv2.convertScaleAbs(image, alpha=1.0 / 257.0)
    elif np.issubdtype(image.dtype, np.floating):
        # Float TIFF/EXR hold 0..1 by convention. In place: the decoded array is ours.
        np.nan_to_num(image, copy=False)
        np.clip(image, 0.0, 1.0, out=image)
        image = cv2.convertScaleAbs(image, alpha=255.0)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(image[:, :, :3])


def decode_image(data: bytes, max_pixels: int | None = None) -> np.ndarray:
    """Decode an encoded image (JPEG, PNG, BMP, TIFF, ...) to BGR.

    Grayscale becomes three equal channels, alpha is dropped, 16-bit is scaled to 8-bit
    (``v / 257``) and float images are read as 0..1. EXIF orientation is not applied, so a file
    yields the same pixels in training and in production.

    With ``max_pixels``, the size is read from the header first (:func:`image_dimensions`) and a
    larger image is refused before OpenCV allocates anything; a format whose header Pillow
    cannot read is refused too rather than decoded blind.

    Args:
        data: The encoded file's bytes.
        max_pixels: Largest ``height * width`` decoded; ``None``: no limit and no header read.

    Returns:
        The image, ``uint8`` ``(H, W, 3)`` in BGR order.

    Raises:
        ImageTooLargeError: The image has more than ``max_pixels`` pixels.
        ImageDecodeError: ``data`` is empty, a JPEG without its end-of-image marker (cut off in
            transit), not an image OpenCV can decode, or (with ``max_pixels``) an image whose
            header cannot be read.
    """
    if not data:
        raise ImageDecodeError("empty payload")
    check_jpeg_complete(data)
    if max_pixels is not None:
        size = image_dimensions(data)
        if size is None:
            raise ImageDecodeError(
                f"image format not recognised ({len(data)} bytes, starts with {data[:8]!r}), "
                "so the pixel limit cannot be checked before decoding"
            )
        if size[0] * size[1] > max_pixels:
            raise ImageTooLargeError(size[0], size[1], max_pixels)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.size == 0:
        raise ImageDecodeError(
            f"not a decodable image ({len(data)} bytes, starts with {data[:8]!r})"
        )
    # Pillow and OpenCV read headers separately; should they ever disagree (a polyglot file),
    # at least the oversized frame goes no further.
    height, width = image.shape[:2]
    if max_pixels is not None and height * width > max_pixels:
        raise ImageTooLargeError(height, width, max_pixels)
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


def read_image(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """Read an image file to BGR, like :func:`decode_image`.

    Reading the bytes in Python (not ``cv2.imread``) makes non-ASCII paths work everywhere.

    Args:
        path: The image file.
        max_pixels: Largest ``height * width`` decoded, checked from the header before
            decoding; ``None``: no limit.

    Returns:
        The image, ``uint8`` ``(H, W, 3)`` in BGR order.

    Raises:
        ImageTooLargeError: The image has more than ``max_pixels`` pixels; the message names
            the path.
        ImageDecodeError: The file cannot be read or decoded; the message names the path.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return decode_image(data, max_pixels)
    except ImageTooLargeError as exc:
        raise ImageTooLargeError(exc.height, exc.width, exc.max_pixels, str(path)) from exc
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
