"""Synthetic industrial surfaces and defects with pixel-exact masks.

Good images vary like production shots; defects change only the pixels under their mask, so
the mask is exactly the defect.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np
import numpy.typing as npt

from inspector.errors import ConfigError

Rng = np.random.Generator
Float = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
Int = npt.NDArray[np.int32]
Bool = npt.NDArray[np.bool_]
Colours = Sequence[tuple[int, int, int]]

CATEGORIES: tuple[str, ...] = ("metal", "fabric", "wood", "tile")
DEFECT_KINDS: tuple[str, ...] = ("scratch", "crack", "spot", "missing", "stain")
MIN_IMAGE_SIZE = 32
# A bit above the 0.3 % floor, so a defect still covers a few pixels after a 2x downscale.
MIN_DEFECT_FRACTION = 0.004


def _f32(a: npt.ArrayLike) -> Float:
    return np.asarray(a, np.float32)


def _smooth_noise(rng: Rng, h: int, w: int, cells: int) -> Float:
    """Smooth zero-mean noise: a coarse random grid upsampled bicubically."""
    coarse = rng.standard_normal((cells + 1, cells + 1)).astype(np.float32)
    return _f32(cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC))


def _fine_noise(rng: Rng, size: int) -> Float:
    """Per-pixel grain, slightly blurred like surface roughness (not sensor noise)."""
    return _f32(cv2.GaussianBlur(rng.standard_normal((size, size)), (0, 0), 0.7))


def _profile(rng: Rng, t: Float, step: float) -> Float:
    """1-D noise along ``t`` with features ``step`` pixels apart (streaks, fibres)."""
    lo = float(t.min())
    n = int((float(t.max()) - lo) / step) + 3
    return _f32(np.interp((t - lo) / step, np.arange(n), rng.standard_normal(n)))


def _coords(rng: Rng, size: int, rot: float, scale: float = 0.1) -> tuple[Float, Float]:
    """Pattern coordinates rotated, scaled and shifted at random, so each image is a new crop."""
    ang = math.radians(rng.uniform(-rot, rot))
    k = rng.uniform(1.0 - scale, 1.0 + scale)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) - np.float32(size / 2)
    c, s = math.cos(ang) / k, math.sin(ang) / k
    return _f32(x * c - y * s + rng.uniform(0, 500)), _f32(x * s + y * c + rng.uniform(0, 500))


def _colourize(g: Float, dark: Sequence[float], light: Sequence[float]) -> Float:
    lo = np.asarray(dark, np.float32)
    return _f32(lo + g[..., None] * (np.asarray(light, np.float32) - lo))


def _metal(rng: Rng, size: int) -> Float:
    u, v = _coords(rng, size, 4.0)
    streaks = 0.55 * _profile(rng, v, 0.8) + 0.35 * _profile(rng, v, 3) + 0.3 * _profile(rng, v, 14)
    # Brushing marks fade in and out along their length instead of running forever.
    fade = 0.65 + 0.35 * np.tanh(1.5 * _smooth_noise(rng, size, size, 5))
    g = 0.55 + 0.09 * streaks * fade + 0.005 * _profile(rng, u, 9)
    g = g + 0.03 * _smooth_noise(rng, size, size, 3)
    return _colourize(g, (70, 70, 66), (235, 232, 225))


def _fabric(rng: Rng, size: int) -> Float:
    u, v = _coords(rng, size, 3.0, 0.05)
    cell = max(3.0, size / 20.0) * rng.uniform(0.95, 1.05)
    # Threads are not laid perfectly straight: a smooth displacement bends the weave a little.
    u = u + 0.2 * cell * _smooth_noise(rng, size, size, 4)
    v = v + 0.2 * cell * _smooth_noise(rng, size, size, 4)
    iu, iv = np.floor(u / cell), np.floor(v / cell)
    across_u, across_v = np.sin(np.pi * (u / cell - iu)), np.sin(np.pi * (v / cell - iv))
    warp_on_top = (iu + iv) % 2 == 0
    shade = np.where(
        warp_on_top, across_u * (0.55 + 0.45 * across_v), across_v * (0.55 + 0.45 * across_u)
    )
    lut = 1.0 + 0.08 * rng.uniform(-1.0, 1.0, (2, 512))  # each thread has its own tone
    warp = np.outer(lut[0][iu.astype(np.int64) % 512], (165, 112, 72))
    weft = np.outer(lut[1][iv.astype(np.int64) % 512], (188, 190, 194))
    colour = np.where(warp_on_top.reshape(-1, 1), warp, weft).reshape(size, size, 3)
    g = 0.5 + 0.5 * shade + 0.05 * _fine_noise(rng, size)
    return _f32(colour * g[..., None])


def _wood(rng: Rng, size: int) -> Float:
    u, v = _coords(rng, size, 6.0, 0.15)
    period = size / rng.uniform(6.0, 10.0)
    warp = 0.5 * _smooth_noise(rng, size, size, 2) + 0.08 * _smooth_noise(rng, size, size, 6)
    warp = _f32(warp * period)
    # Grain bends gently around a knot far outside the image.
    r = (v + warp + (u - u.mean()) ** 2 * (rng.uniform(-0.6, 0.6) / size)) / period
    ring = r - np.floor(r)  # dark late wood builds up towards the end of each growth ring
    fibre = _profile(rng, v + 0.5 * warp, 0.9)
    g = 0.8 - 0.5 * ring**3 + 0.035 * fibre + 0.04 * _smooth_noise(rng, size, size, 6)
    return _colourize(g, (30, 62, 110), (120, 175, 222))


def _tile(rng: Rng, size: int) -> Float:
    u, v = _coords(rng, size, 2.0, 0.05)
    pitch = size / rng.uniform(3.0, 4.0)
    grout = max(1.5, pitch * 0.07)
    iu, iv = np.floor(u / pitch), np.floor(v / pitch)
    du, dv = u - iu * pitch, v - iv * pitch
    edge = np.minimum(np.minimum(du, pitch - du), np.minimum(dv, pitch - dv)) - grout / 2
    in_tile = np.clip(edge + 0.5, 0.0, 1.0)[..., None]  # one-pixel antialiased border
    bevel = np.sqrt(np.clip(edge / (1.5 * grout), 0.0, 1.0))
    tone = 1.0 + 0.05 * rng.uniform(-1.0, 1.0, (32, 32))[iu.astype(int) % 32, iv.astype(int) % 32]
    glaze = tone * (0.85 + 0.15 * bevel) + 0.025 * _smooth_noise(rng, size, size, 8)
    surface = _colourize(glaze + 0.015 * _fine_noise(rng, size), (0, 0, 0), (188, 184, 176))
    mortar = _colourize(1.0 + 0.1 * _fine_noise(rng, size), (0, 0, 0), (92, 98, 104))
    return _f32(mortar * (1.0 - in_tile) + surface * in_tile)


_RENDER: dict[str, Callable[[Rng, int], Float]] = dict(
    zip(CATEGORIES, (_metal, _fabric, _wood, _tile), strict=True)
)
# Lighting gradient strength per category: brushed metal reflects much more than cloth.
_LIGHT = {"metal": 0.14, "fabric": 0.05, "wood": 0.06, "tile": 0.07}


def _lighting(rng: Rng, size: int, strength: float) -> Float:
    y, x = np.mgrid[-1.0 : 1.0 : size * 1j, -1.0 : 1.0 : size * 1j]
    a, (hx, hy) = rng.uniform(0.0, 2.0 * math.pi), rng.uniform(-0.8, 0.8, 2)
    light = 1.0 + strength * (x * math.cos(a) + y * math.sin(a))
    return _f32(light + 1.2 * strength * np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / 0.6))


def render_good(rng: np.random.Generator, size: int, category: str = "metal") -> U8:
    """Render one defect-free surface image.

    Args:
        rng: Source of randomness; the same generator state gives the same image.
        size: Height and width in pixels (at least 32).
        category: One of :data:`CATEGORIES`.

    Returns:
        ``(size, size, 3)`` uint8 BGR image.

    Raises:
        ConfigError: Unknown category or size below 32.
    """
    check_choice("category", category, CATEGORIES)
    if size < MIN_IMAGE_SIZE:
        raise ConfigError(f"image size must be at least {MIN_IMAGE_SIZE} px, got {size}")
    img = _RENDER[category](rng, size) * _lighting(rng, size, _LIGHT[category])[..., None]
    mean = float(img.mean())
    img = (img - mean) * rng.uniform(0.9, 1.1) + mean + rng.uniform(-10.0, 10.0)
    img += rng.standard_normal(img.shape, dtype=np.float32) * rng.uniform(1.0, 2.5)
    return np.asarray(np.clip(np.rint(img), 0, 255), np.uint8)


_SPOT_COLOURS = ((30, 32, 36), (35, 75, 150), (232, 234, 230), (80, 125, 70), (45, 40, 115))
_STAIN_TINTS = ((45, 95, 165), (160, 85, 35), (55, 105, 70), (30, 65, 175), (110, 40, 120))


def _finish_shape(mask: U8) -> Float:
    """Grow a shape that came out too small (clipped at a border) and return its depth map."""
    if not mask.any():
        mask[mask.shape[0] // 2, mask.shape[1] // 2] = 255
    while cv2.countNonZero(mask) < math.ceil(MIN_DEFECT_FRACTION * mask.size):
        mask[:] = cv2.dilate(mask, np.ones((3, 3), np.uint8))
    return _f32(cv2.distanceTransform(mask, cv2.DIST_L2, 3))


def _polygon(rng: Rng, centre: Float, r0: float, n: int, jag: float) -> Int:
    """Irregular closed outline: an ellipse with random low harmonics and per-vertex jitter."""
    th = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    harmonics = rng.uniform(0.0, 0.15, (3, 1)) * np.cos(
        np.arange(2, 5)[:, None] * th + rng.uniform(0.0, 2.0 * math.pi, (3, 1))
    )
    r = (1.0 + harmonics.sum(axis=0)) * r0 * (1.0 + jag * rng.uniform(-1.0, 1.0, n))
    rot, aspect = rng.uniform(0.0, math.pi), rng.uniform(0.6, 1.0)
    x, y = r * np.cos(th), aspect * r * np.sin(th)
    pts = np.stack([x * math.cos(rot) - y * math.sin(rot), x * math.sin(rot) + y * math.cos(rot)])
    return np.rint(pts.T + centre).astype(np.int32)


def _pick_colour(rng: Rng, img: Float, inside: Bool, palette: Colours) -> Float:
    """A palette colour far from the surface under the defect, so it is plainly visible."""
    cols = _f32(palette)[rng.permutation(len(palette))]
    dist = np.linalg.norm(cols - img[inside].mean(axis=0), axis=1)
    ok = np.flatnonzero(dist >= 100.0)
    return _f32(cols[ok[0] if ok.size else int(np.argmax(dist))])


def _scratch(rng: Rng, img: Float, mask: U8) -> tuple[Float, Float]:
    (h, w), s = mask.shape, min(mask.shape)
    theta, length = rng.uniform(0.0, math.pi), rng.uniform(0.35, 0.7) * s
    d = np.array([math.cos(theta), math.sin(theta)])
    t = np.linspace(-0.5, 0.5, 48)[:, None]
    bow = rng.uniform(-0.2, 0.2) * length * np.array([-d[1], d[0]])  # curve sideways
    pts = rng.uniform(0.2, 0.8, 2) * (w, h) + t * length * d + (1 - 4 * t**2) * bow
    thick = max(1, round(s * rng.uniform(0.012, 0.02)))
    cv2.polylines(mask, [np.rint(pts).astype(np.int32)], False, 255, thick)
    _finish_shape(mask)
    inside = mask > 0
    # Bright or dark at random, but flipped when too close to the surface it lies on.
    mean, levels = float(img[inside].mean()), [rng.uniform(225, 255), rng.uniform(10, 40)]
    first, second = levels if rng.random() < 0.5 else levels[::-1]
    level = first if abs(first - mean) >= 80 else second
    return _f32(inside * rng.uniform(0.8, 0.95)), np.full_like(img, level)


def _crack(rng: Rng, img: Float, mask: U8) -> tuple[Float, Float]:
    (h, w), s = mask.shape, min(mask.shape)

    def walk(start: Float, heading: float, length: float, thick: int) -> Float:
        steps = max(4, int(length / (0.025 * s)))
        ang = heading + rng.normal(0.0, 0.45, steps)  # zig-zag around the main direction
        delta = (length / steps) * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        pts = _f32(np.vstack([start, start + np.cumsum(delta, axis=0)]))
        cv2.polylines(mask, [np.rint(pts).astype(np.int32)], False, 255, thick)
        return pts

    theta = rng.uniform(0.0, 2.0 * math.pi)
    thick = max(1, round(s * rng.uniform(0.012, 0.018)))
    main = walk(_f32(rng.uniform(0.2, 0.8, 2) * (w, h)), theta, rng.uniform(0.35, 0.6) * s, thick)
    for _ in range(int(rng.integers(1, 4))):  # side branches, thinner than the main crack
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
        fork = main[int(rng.integers(1, len(main) - 1))]
        walk(fork, theta + side, rng.uniform(0.1, 0.25) * s, max(1, thick - 1))
    _finish_shape(mask)
    return _f32((mask > 0) * rng.uniform(0.85, 0.95)), _f32(img * rng.uniform(0.05, 0.2))


def _spot(rng: Rng, img: Float, mask: U8) -> tuple[Float, Float]:
    r0 = min(mask.shape) * rng.uniform(0.045, 0.09)
    centre = _f32(rng.uniform(0.15, 0.85, 2) * mask.shape[::-1])
    cv2.fillPoly(mask, [_polygon(rng, centre, r0, 72, 0.03)], 255)
    dist, inside = _finish_shape(mask), mask > 0
    # Soft edge inside the mask only: the outermost mask pixels still change by ~40 %.
    alpha = np.clip(0.4 + 0.6 * dist / (0.4 * r0), 0.0, 1.0) * rng.uniform(0.85, 1.0) * inside
    colour = _pick_colour(rng, img, inside, _SPOT_COLOURS)
    return _f32(alpha), _f32(colour + 0.25 * (img - img[inside].mean(axis=0)))  # faint texture


def _missing(rng: Rng, img: Float, mask: U8) -> tuple[Float, Float]:
    r0 = min(mask.shape) * rng.uniform(0.05, 0.1)
    centre = _f32(rng.uniform(0.1, 0.9, 2) * mask.shape[::-1])
    cv2.fillPoly(mask, [_polygon(rng, centre, r0, int(rng.integers(9, 16)), 0.3)], 255)
    dist = _finish_shape(mask)
    hole = rng.uniform(12.0, 35.0) + rng.uniform(-4.0, 4.0, 3)
    hole = hole + rng.standard_normal(img.shape) * 2.0
    # The broken edge catches light: a thin lighter rim just inside the outline.
    rim = 0.5 * img + 0.5 * rng.uniform(170.0, 220.0)
    target = np.where((dist <= max(1.0, 0.12 * r0))[..., None], rim, hole)
    return _f32(mask > 0), _f32(target)


def _stain(rng: Rng, img: Float, mask: U8) -> tuple[Float, Float]:
    (h, w), radius = mask.shape, min(mask.shape) * rng.uniform(0.08, 0.15)
    cx, cy = rng.uniform(0.15, 0.85, 2) * (w, h)
    rot, aspect = rng.uniform(0.0, math.pi), rng.uniform(0.6, 1.0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    xr = ((x - cx) * math.cos(rot) + (y - cy) * math.sin(rot)) / radius
    yr = (-(x - cx) * math.sin(rot) + (y - cy) * math.cos(rot)) / (aspect * radius)
    cells = max(4, round(min(h, w) / (0.5 * radius)))
    mask[1.0 - (xr**2 + yr**2) + 0.5 * _smooth_noise(rng, h, w, cells) > 0] = 255
    dist, inside = _finish_shape(mask), mask > 0
    ring = np.clip(1.0 - dist / (0.25 * radius), 0.0, 1.0)  # dried stains are darker at the rim
    alpha = rng.uniform(0.6, 0.85) * (0.7 + 0.3 * ring) * inside
    tint = _pick_colour(rng, img, inside, _STAIN_TINTS)
    lum = img.mean(axis=2, keepdims=True)  # translucent: the texture stays visible through it
    return _f32(alpha), _f32(tint * lum / max(float(lum[inside].mean()), 1.0))


_DEFECTS: dict[str, Callable[[Rng, Float, U8], tuple[Float, Float]]] = dict(
    zip(DEFECT_KINDS, (_scratch, _crack, _spot, _missing, _stain), strict=True)
)


def add_defect(rng: np.random.Generator, image: U8, kind: str) -> tuple[U8, U8]:
    """Paint one defect onto a copy of ``image``.

    Only pixels inside the returned mask change, so the mask covers the visible defect exactly.

    Args:
        rng: Source of randomness for position, size, orientation and colour.
        image: ``(H, W, 3)`` uint8 BGR image, both sides at least 32 pixels; not modified.
        kind: One of :data:`DEFECT_KINDS`.

    Returns:
        ``(defective image, mask)``: a new ``(H, W, 3)`` uint8 BGR image and an ``(H, W)``
        uint8 mask, 255 on the defect and 0 elsewhere, covering at least 0.4 % of the image.

    Raises:
        ConfigError: Unknown kind, or an image that is not ``(H, W, 3)`` uint8 of size >= 32.
    """
    check_choice("defect kind", kind, DEFECT_KINDS)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfigError(f"add_defect needs an (H, W, 3) uint8 image, got {image.shape}")
    if min(image.shape[:2]) < MIN_IMAGE_SIZE:
        raise ConfigError(f"add_defect needs images of at least {MIN_IMAGE_SIZE} px per side")
    img = image.astype(np.float32)
    mask = np.zeros(image.shape[:2], np.uint8)
    alpha, target = _DEFECTS[kind](rng, img, mask)
    blended = np.clip(np.rint(img + alpha[..., None] * (target - img)), 0, 255)
    out = np.where((mask > 0)[..., None], blended, img)  # nothing outside the mask changes
    return out.astype(np.uint8), np.where(mask > 0, 255, 0).astype(np.uint8)


def check_choice(what: str, value: str, valid: Sequence[str]) -> None:
    """Raise :class:`ConfigError` naming the valid choices when ``value`` is not one."""
    if value not in valid:
        raise ConfigError(f"unknown {what} {value!r}; valid choices: {', '.join(valid)}")
