"""Procedural dSprites renderer for offline use (../shared/DSPRITES.md section 3).

Geometry (fitted to real dSprites pixels, DSPRITES.md 3.1-3.4):

* 64x64 canvas, pixel (row r, col c) is on exactly when its centre (c+0.5, r+0.5)
  lies strictly inside the shape; no anti-aliasing. Shapes are shrunk by about 0.001 px
  so that centres lying exactly on an edge come out off, as in the real data.
* centre x_c = 16 + 32*posX, y_c = 16 + 32*posY (posY index 0 = top; ``pos_y_top``
  flips that single open convention, DSPRITES.md 3.6). Centres are not pixel-snapped.
* a canonical point (u right, v down) at scale s and angle t maps to
  x = x_c + s(u cos t + v sin t), y = y_c + s(-u sin t + v cos t): counter-clockwise
  on screen.
* square: side 19.2 px; ellipse: semi-axes 12.76 x 7.215 px, long axis horizontal;
  heart: u = 9.6 sin^3 t, v = -0.662 (13 cos t - 5 cos 2t - 2 cos 3t - cos 4t) - 1.44.

Fast path: for one (shape, scale, orientation) the outline relative to its centre is
fixed, so the renderer intersects it once with all 64 scanlines of every posY, then
shifts those crossings by every posX and turns each row's inside-intervals into a
64-bit word (pixel c = bit 63-c). The words' big-endian bytes are exactly
``numpy.packbits`` of the image rows, the storage format of the dataset file. A
per-image point-in-polygon renderer (:func:`render_image_reference`) is kept as the
independent oracle for tests and as the benchmark's naive baseline.
"""
from __future__ import annotations

import numpy as np

from disentangle.data.ground_truth import GroundTruth

RENDERER_VERSION = "dsprites-render-1"
IMAGE_SIZE = 64
PACKED_ROW_BYTES = IMAGE_SIZE // 8  # 8 bytes per packed row, 512 per image

SQUARE_HALF_SIDE = 9.6            # side 19.2 px = 0.30 of the canvas
ELLIPSE_SEMI_AXES = (12.76, 7.215)
HEART_SCALE = (0.600, 0.662)      # anisotropic scale of the classic heart curve
HEART_SHIFT = -1.44               # vertical shift (pixels, canonical frame)
SHRINK_PX = 1e-3                  # centres exactly on an edge are off in the real data

POLYGON_VERTICES = {"ellipse": 512, "heart": 512}
SHAPE_NAMES = ("square", "ellipse", "heart")  # classes 0, 1, 2 (values 1.0, 2.0, 3.0)


def canonical_outline(shape: str) -> np.ndarray:
    """Closed outline of a shape at scale 1, canonical frame (u right, v down), in
    pixels, shrunk by SHRINK_PX: (V, 2) float64, vertices in order."""
    if shape == "square":
        h = SQUARE_HALF_SIDE
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    elif shape == "ellipse":
        t = np.linspace(0, 2 * np.pi, POLYGON_VERTICES["ellipse"], endpoint=False)
        a, b = ELLIPSE_SEMI_AXES
        # vertices on a slightly larger ellipse so the polygon's edges (chords) lie on
        # the true ellipse on average rather than inside it
        k = 1.0 / np.cos(np.pi / len(t)) ** 0.5
        pts = np.stack([k * a * np.cos(t), k * b * np.sin(t)], axis=1)
    elif shape == "heart":
        t = np.linspace(0, 2 * np.pi, POLYGON_VERTICES["heart"], endpoint=False)
        su, sv = HEART_SCALE
        u = su * 16 * np.sin(t) ** 3
        v = -sv * (13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)) + HEART_SHIFT
        pts = np.stack([u, v], axis=1)
    else:
        raise ValueError(f"unknown shape {shape!r}; known: {SHAPE_NAMES}")
    # shrink towards the rotation centre by SHRINK_PX along each vertex direction
    norm = np.linalg.norm(pts, axis=1, keepdims=True)
    return pts * (1.0 - SHRINK_PX / np.maximum(norm, 1e-9))


def _placed_outline(shape: str, scale: float, angle: float) -> np.ndarray:
    """Outline offsets from the centre, in pixel axes (x right, y down)."""
    uv = canonical_outline(shape)
    c, s = np.cos(angle), np.sin(angle)
    x = scale * (uv[:, 0] * c + uv[:, 1] * s)
    y = scale * (-uv[:, 0] * s + uv[:, 1] * c)
    return np.stack([x, y], axis=1)


def centre_pixels(pos: np.ndarray) -> np.ndarray:
    """Continuous pixel coordinate of a sprite centre for position values in [0, 1]."""
    return 16.0 + 32.0 * np.asarray(pos, dtype=np.float64)


def _scanline_crossings(outline: np.ndarray, dy: np.ndarray, max_crossings: int) -> np.ndarray:
    """x offsets where each horizontal line y = dy crosses the closed outline, sorted,
    NaN-padded to ``max_crossings``: shape dy.shape + (max_crossings,)."""
    x1, y1 = outline[:, 0], outline[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    d = dy[..., None]
    crosses = (y1 > d) != (y2 > d)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = x1 + (d - y1) * (x2 - x1) / (y2 - y1)
    x = np.where(crosses, x, np.nan)
    x.sort(axis=-1)  # NaNs sort last
    n_cross = crosses.sum(axis=-1)
    if n_cross.max(initial=0) > max_crossings:
        raise AssertionError("outline crosses a scanline more often than expected")
    return x[..., :max_crossings]


# _LEFT_MASK[k] has the bits of pixels c >= k set (pixel c is bit 63 - c)
_LEFT_MASK = np.array([(1 << (64 - k)) - 1 if k < 64 else 0 for k in range(65)], dtype=np.uint64)


def _interval_words(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """uint64 row words with pixels [start, end) set."""
    return _LEFT_MASK[starts] & ~_LEFT_MASK[np.maximum(ends, starts)]


def render_block(shape: str, scale: float, angle: float, pos_x: np.ndarray,
                 pos_y: np.ndarray, pos_y_top: bool = True) -> np.ndarray:
    """Packed images of one (shape, scale, angle) at every (pos_x, pos_y) pair of the
    given position values, pos_y fastest: (len(pos_x) * len(pos_y), 512) uint8."""
    outline = _placed_outline(shape, scale, angle)
    pos_x = np.asarray(pos_x, dtype=np.float64)
    pos_y = np.asarray(pos_y, dtype=np.float64)
    yc = centre_pixels(pos_y if pos_y_top else 1.0 - pos_y)
    xc = centre_pixels(pos_x)
    rows = np.arange(IMAGE_SIZE) + 0.5
    dy = rows[None, :] - yc[:, None]                                    # (Ny, 64)
    max_cross = 2 if shape != "heart" else 6
    cross = _scanline_crossings(outline, dy, max_cross)                 # (Ny, 64, C)
    x = cross[None, :, :, :] + xc[:, None, None, None]                  # (Nx, Ny, 64, C)
    # pixel c is inside (x0, x1) iff x0 < c + 0.5 < x1
    x_fill = np.nan_to_num(x, nan=-1.0)
    starts = np.clip(np.floor(x_fill[..., 0::2] - 0.5).astype(np.int64) + 1, 0, 64)
    ends = np.clip(np.ceil(x_fill[..., 1::2] - 0.5).astype(np.int64), 0, 64)
    words = np.bitwise_or.reduce(_interval_words(starts, ends), axis=-1)  # (Nx, Ny, 64)
    packed = words.astype(">u8").view(np.uint8)                          # (Nx, Ny, 512)
    return packed.reshape(len(xc) * len(yc), IMAGE_SIZE * PACKED_ROW_BYTES)


def render_packed(ground_truth: GroundTruth, pos_y_top: bool = True, progress=None) -> np.ndarray:
    """Every image of a dSprites (sub-)grid, in index order, bit-packed:
    (num_images, 512) uint8. ``progress`` is called with the number of images done."""
    shape_v, scale_v, angle_v, x_v, y_v = ground_truth.factor_values
    if ground_truth.factor_names != ("shape", "scale", "orientation", "pos_x", "pos_y"):
        raise ValueError("render_packed needs a dSprites grid (shape, scale, orientation, pos_x, pos_y)")
    out = np.empty((ground_truth.num_images, IMAGE_SIZE * PACKED_ROW_BYTES), dtype=np.uint8)
    block = len(x_v) * len(y_v)
    i = 0
    for shape_value in shape_v:
        shape = SHAPE_NAMES[int(round(shape_value)) - 1]
        for scale in scale_v:
            for angle in angle_v:
                out[i:i + block] = render_block(shape, scale, angle, x_v, y_v, pos_y_top)
                i += block
                if progress is not None:
                    progress(block)
    return out


def unpack_images(packed: np.ndarray) -> np.ndarray:
    """(n, 512) packed -> (n, 64, 64) uint8 in {0, 1}."""
    packed = np.asarray(packed, dtype=np.uint8)
    return np.unpackbits(packed, axis=-1).reshape(packed.shape[:-1] + (IMAGE_SIZE, IMAGE_SIZE))


def unpack_to_float(rows):
    """(n, 512) packed uint8 torch tensor -> (n, 1, 64, 64) float32 {0, 1} images on the
    tensor's device (two integer ops and a cast; the same pixels as :func:`unpack_images`).
    Training batches and encoder batches are unpacked here, so only the packed bytes
    travel to an accelerator."""
    import torch
    shifts = torch.arange(7, -1, -1, dtype=torch.uint8, device=rows.device)  # packbits: MSB first
    bits = torch.bitwise_and(torch.bitwise_right_shift(rows.unsqueeze(-1), shifts), 1)
    return bits.reshape(rows.shape[0], 1, IMAGE_SIZE, IMAGE_SIZE).to(torch.float32)


def pack_images(images: np.ndarray) -> np.ndarray:
    """(n, 64, 64) {0,1} -> (n, 512) packed."""
    images = np.asarray(images)
    return np.packbits(images.reshape(images.shape[:-2] + (-1,)).astype(bool), axis=-1)


def render_images(ground_truth: GroundTruth, classes, pos_y_top: bool = True) -> np.ndarray:
    """Images for arbitrary factor-class rows of ``ground_truth``: (n, 64, 64) uint8."""
    values = ground_truth.values_of(np.atleast_2d(classes))
    packed = np.stack([
        render_block(SHAPE_NAMES[int(round(v[0])) - 1], v[1], v[2], v[3:4], v[4:5], pos_y_top)[0]
        for v in values])
    return unpack_images(packed)


def render_image_reference(shape: str, scale: float, angle: float, pos_x: float,
                           pos_y: float, pos_y_top: bool = True) -> np.ndarray:
    """One image by testing every pixel centre against the outline (even-odd rule).

    Deliberately naive and independent of the scanline path: the test oracle and the
    benchmark's per-image baseline."""
    outline = _placed_outline(shape, scale, angle)
    xc = float(centre_pixels(pos_x))
    yc = float(centre_pixels(pos_y if pos_y_top else 1.0 - pos_y))
    cols, rows = np.meshgrid(np.arange(IMAGE_SIZE) + 0.5, np.arange(IMAGE_SIZE) + 0.5)
    px, py = (cols - xc).ravel(), (rows - yc).ravel()
    inside = np.zeros(px.shape, dtype=bool)
    x1, y1 = outline[:, 0], outline[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
    for a, b, c, d in zip(x1, y1, x2, y2):
        straddles = (b > py) != (d > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = a + (py - b) * (c - a) / (d - b)
        inside ^= straddles & (px < x_at)
    return inside.reshape(IMAGE_SIZE, IMAGE_SIZE).astype(np.uint8)
