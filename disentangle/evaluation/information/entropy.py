"""Exact H(X) of a dataset's images and its cache.

Identical images (orientation 0 and 2 pi, symmetric coincidences) are one outcome, so
H = -sum_k (c_k/N) log(c_k/N) over the distinct images' counts c_k, with p(x) uniform
over the N dataset indices.

Cache: one small JSON file per dataset content (``entropy-<content_sha256>.json``) in
``$DISENTANGLE_CACHE`` if set, else ``$XDG_CACHE_HOME/disentangle``, else
``~/.cache/disentangle``; written atomically; an unwritable cache only costs the
recomputation (about a second for the full dataset).
"""
from __future__ import annotations

import json
import math

import numpy as np

from disentangle.errors import UserError
from disentangle.evaluation.information.units import bits
from disentangle.io import CACHE_ENV_VAR, cache_dir  # noqa: F401  (re-exported; the cache folder's owner is io)

ENTROPY_CACHE_FORMAT = "disentangle-entropy-1"


def distinct_image_counts(packed: np.ndarray) -> np.ndarray:
    """How many times each distinct image occurs: int64 counts (sum = N), exact.

    ``packed``: one image per row as bytes, any row length (bit-packed binary images,
    uint8 pixels of 8-bit images, ...). See :func:`distinct_row_counts`."""
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    packed = packed.reshape(len(packed), -1)
    return distinct_row_counts(lambda s, e: packed[s:e], lambda idx: packed[idx], len(packed), packed.shape[1])


def distinct_row_counts(read_range, read_rows, n: int, row_bytes: int, step: int = 65536) -> np.ndarray:
    """How many times each distinct byte row occurs, exact, reading rows in chunks.

    ``read_range(s, e)``: uint8 rows s..e-1 as (e - s, row_bytes); ``read_rows(idx)``:
    the rows at sorted indices. Rows are bucketed by two 64-bit multiplicative hashes of
    their 8-byte words (zero-padded to a multiple of 8 bytes), then every pair of rows
    sharing a hash is compared byte for byte; only if two *different* images collided
    (never seen; probability ~N^2 / 2^128) does it fall back to sorting the raw rows.
    Only the hashes of all N rows are held at once, so a large dataset streams.
    """
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    pad = -row_bytes % 8
    width = (row_bytes + pad) // 8
    # fixed odd multipliers: the hash (and so the result) never depends on a seed
    mult = np.random.default_rng(20181210).integers(0, 2**63, size=(2, width),
                                                    dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    h = np.empty((2, n), dtype=np.uint64)
    for s in range(0, n, step):
        rows = np.ascontiguousarray(read_range(s, min(s + step, n)), dtype=np.uint8).reshape(-1, row_bytes)
        if pad:
            rows = np.concatenate([rows, np.zeros((len(rows), pad), np.uint8)], axis=1)
        w = rows.view(np.uint64)
        h[0, s:s + step] = (w * mult[0]).sum(axis=1, dtype=np.uint64)   # wraps mod 2^64
        h[1, s:s + step] = (w * mult[1]).sum(axis=1, dtype=np.uint64)
    order = np.lexsort((h[1], h[0]))
    hs = h[:, order]
    same_hash = (hs[0, 1:] == hs[0, :-1]) & (hs[1, 1:] == hs[1, :-1])
    pairs = np.nonzero(same_hash)[0]
    if len(pairs):
        first, second = order[pairs], order[pairs + 1]
        wanted = np.unique(np.concatenate([first, second]))
        rows = np.ascontiguousarray(read_rows(wanted), dtype=np.uint8).reshape(len(wanted), row_bytes)
        if not np.array_equal(rows[np.searchsorted(wanted, first)], rows[np.searchsorted(wanted, second)]):
            return _sorted_row_counts(read_range, n, row_bytes)
    starts = np.concatenate([[0], np.nonzero(~same_hash)[0] + 1])
    return np.diff(np.concatenate([starts, [n]])).astype(np.int64)


def _sorted_row_counts(read_range, n: int, row_bytes: int) -> np.ndarray:
    rows = np.ascontiguousarray(read_range(0, n), dtype=np.uint8).reshape(n, row_bytes)
    _, counts = np.unique(rows.view(np.dtype((np.void, row_bytes))).ravel(), return_counts=True)
    return counts.astype(np.int64)


def pixel_kind(images: np.ndarray) -> str:
    """"binary" (every pixel 0 or 1), "8-bit" (every pixel on the k/255 grid) or
    "continuous", for float images in [0, 1]."""
    x = np.asarray(images, dtype=np.float64)
    if np.all((x == 0) | (x == 1)):
        return "binary"
    levels = x * 255.0
    return "8-bit" if np.all(np.abs(levels - np.rint(levels)) < 1e-3) else "continuous"


class _OffGrid(Exception):
    """Raised while reading 8-bit rows when a pixel is off the k/255 grid."""


def _read(data, s, e, step=4096):
    return np.concatenate([np.asarray(data.images(np.arange(a, min(a + step, e)))) for a in range(s, e, step)])


def _level_rows(data, kind: list):
    """Readers of a dataset's images as uint8 rows of levels round(255 x); ``kind`` (a
    one-element list) collects the pixel kind of every row read; off the grid: _OffGrid."""
    def to_levels(x):
        k = pixel_kind(x)
        if k == "continuous":
            raise _OffGrid
        if k == "8-bit":
            kind[0] = "8-bit"
        return np.rint(np.asarray(x, dtype=np.float64) * 255.0).astype(np.uint8).reshape(len(x), -1)
    return (lambda s, e: to_levels(_read(data, s, e))), (lambda idx: to_levels(data.images(np.asarray(idx))))


def _float_rows(data):
    """Readers of a dataset's images as the bytes of their float32 pixels."""
    def as_bytes(x):
        x = np.ascontiguousarray(x, dtype=np.float32)
        return x.reshape(len(x), -1).view(np.uint8)
    return (lambda s, e: as_bytes(_read(data, s, e))), (lambda idx: as_bytes(data.images(np.asarray(idx))))


def image_counts(data) -> tuple[np.ndarray, str]:
    """(counts of the distinct images, pixel kind) of a dataset: from ``data.packed``
    (bit-packed binary images, dSprites) when it has it, from the stored uint8 rows of an
    8-bit set (``data.read_uint8``), else from ``data.images``."""
    if getattr(data, "packed", None) is not None:
        return distinct_image_counts(data.packed), "binary"
    n = int(data.num_images)
    if n == 0:
        return np.zeros(0, dtype=np.int64), "binary"
    if callable(getattr(data, "read_uint8", None)):
        return _uint8_counts(data, n)
    pixels = int(np.asarray(data.images(np.arange(1)))[0].size)
    kind = ["binary"]
    try:
        return distinct_row_counts(*_level_rows(data, kind), n, pixels), kind[0]
    except _OffGrid:
        return distinct_row_counts(*_float_rows(data), n, 4 * pixels), "continuous"


def _uint8_counts(data, n: int) -> tuple[np.ndarray, str]:
    """Counts from an 8-bit set's stored uint8 rows (``read_uint8``: streamed from disk,
    no float copy); pixel kind "binary" when every level is 0 or 255, else "8-bit"."""
    kind = ["binary"]

    def rows(idx):
        x = np.asarray(data.read_uint8(idx), dtype=np.uint8).reshape(len(idx), -1)
        if kind[0] == "binary" and np.any((x != 0) & (x != 255)):
            kind[0] = "8-bit"
        return x
    row_bytes = int(np.asarray(data.read_uint8(np.arange(1))).size)
    counts = distinct_row_counts(lambda s, e: rows(np.arange(s, e)), rows, n, row_bytes, step=4096)
    return counts, kind[0]


def entropy_from_counts(counts: np.ndarray) -> float:
    """-sum (c/N) log(c/N) in nats, for outcome counts c (N = sum c)."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    n = c.sum()
    return float(math.log(n) - (c * np.log(c)).sum() / n)


def dataset_entropy(data, cache: bool = True) -> dict:
    """H(X) of the dataset's images (uniform over indices, identical images merged).

    Returns entropy_nats, entropy_bits, num_images, num_distinct, multiplicities
    ({count: number of distinct images seen that often}), pixels ("binary", "8-bit" or
    "continuous": what every pixel of the dataset is, which decides whether a
    likelihood's D is a proper discrete NLL of it), cached (whether it came from the
    cache file). Cached per dataset content (see the module docstring).

    ``data``: ``num_images`` and either ``packed`` (bit-packed binary images, one row
    each) or ``images(indices)`` (float images in [0, 1] of any shape, or uint8 levels);
    ``provenance["content_sha256"]`` enables the cache.
    """
    from disentangle.io import write_json_atomic
    sha = (getattr(data, "provenance", None) or {}).get("content_sha256")
    path = cache_dir() / f"entropy-{sha}.json" if (cache and sha) else None
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if (saved.get("format") == ENTROPY_CACHE_FORMAT and saved.get("content_sha256") == sha
                    and saved.get("num_images") == int(data.num_images)):
                # caches from before the pixel kind held only bit-packed (binary) datasets
                pixels = saved.get("pixels", "binary" if getattr(data, "packed", None) is not None else None)
                from disentangle.models.likelihoods import PIXEL_KINDS   # torch: only when a cache is read
                if pixels not in PIXEL_KINDS:
                    raise KeyError("pixels")
                return {**{k: saved[k] for k in ("entropy_nats", "entropy_bits", "num_images",
                                                  "num_distinct")}, "pixels": pixels,
                        "multiplicities": {int(k): v for k, v in saved["multiplicities"].items()},
                        "cached": True}
        except (OSError, ValueError, KeyError, TypeError):
            pass   # unreadable cache: recompute and overwrite
    counts, pixels = image_counts(data)
    h = entropy_from_counts(counts)
    mult_values, mult_counts = np.unique(counts, return_counts=True)
    result = {"entropy_nats": h, "entropy_bits": bits(h), "num_images": int(counts.sum()),
              "num_distinct": int(len(counts)),
              "multiplicities": {int(k): int(v) for k, v in zip(mult_values, mult_counts)},
              "pixels": pixels}
    if path is not None:
        try:
            write_json_atomic(path, {"format": ENTROPY_CACHE_FORMAT, "content_sha256": sha,
                                     "path": str(getattr(data, "path", "")), **result,
                                     "multiplicities": {str(k): v for k, v in result["multiplicities"].items()}})
        except (OSError, UserError):   # WriteError: a read-only or full cache directory
            pass   # costs only the recomputation
    return {**result, "cached": False}

