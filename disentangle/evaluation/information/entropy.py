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
import os
from pathlib import Path

import numpy as np

from disentangle.evaluation.information.units import bits

ENTROPY_CACHE_FORMAT = "disentangle-entropy-1"
CACHE_ENV_VAR = "DISENTANGLE_CACHE"


def distinct_image_counts(packed: np.ndarray) -> np.ndarray:
    """How many times each distinct image occurs: int64 counts (sum = N), exact.

    Rows are bucketed by two 64-bit multiplicative hashes of their 64 uint64 words, then
    every pair of rows sharing a hash is compared byte for byte; only if two *different*
    images collided (never seen; probability ~N^2 / 2^128) does it fall back to sorting
    the raw 512-byte rows.
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    n = len(packed)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if packed.shape[1] % 8:
        raise ValueError("packed rows must be a multiple of 8 bytes")
    words = packed.view(np.uint64)
    # fixed odd multipliers: the hash (and so the result) never depends on a seed
    mult = np.random.default_rng(20181210).integers(0, 2**63, size=(2, words.shape[1]),
                                                    dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    h = np.empty((2, n), dtype=np.uint64)
    step = 65536
    for s in range(0, n, step):
        w = words[s:s + step]
        h[0, s:s + step] = (w * mult[0]).sum(axis=1, dtype=np.uint64)   # wraps mod 2^64
        h[1, s:s + step] = (w * mult[1]).sum(axis=1, dtype=np.uint64)
    order = np.lexsort((h[1], h[0]))
    hs = h[:, order]
    same_hash = (hs[0, 1:] == hs[0, :-1]) & (hs[1, 1:] == hs[1, :-1])
    pairs = np.nonzero(same_hash)[0]
    if len(pairs) and not np.array_equal(packed[order[pairs]], packed[order[pairs + 1]]):
        _, counts = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(),
                              return_counts=True)
        return counts.astype(np.int64)
    starts = np.concatenate([[0], np.nonzero(~same_hash)[0] + 1])
    return np.diff(np.concatenate([starts, [n]])).astype(np.int64)


def entropy_from_counts(counts: np.ndarray) -> float:
    """-sum (c/N) log(c/N) in nats, for outcome counts c (N = sum c)."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    n = c.sum()
    return float(math.log(n) - (c * np.log(c)).sum() / n)


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "disentangle"


def dataset_entropy(data, cache: bool = True) -> dict:
    """H(X) of the dataset's images (uniform over indices, identical images merged).

    Returns entropy_nats, entropy_bits, num_images, num_distinct, multiplicities
    ({count: number of distinct images seen that often}), cached (whether it came from
    the cache file). Cached per dataset content (see the module docstring).
    """
    from disentangle.io import write_json_atomic
    sha = (getattr(data, "provenance", None) or {}).get("content_sha256")
    path = cache_dir() / f"entropy-{sha}.json" if (cache and sha) else None
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if (saved.get("format") == ENTROPY_CACHE_FORMAT and saved.get("content_sha256") == sha
                    and saved.get("num_images") == int(data.num_images)):
                return {**{k: saved[k] for k in ("entropy_nats", "entropy_bits", "num_images",
                                                  "num_distinct")},
                        "multiplicities": {int(k): v for k, v in saved["multiplicities"].items()},
                        "cached": True}
        except (OSError, ValueError, KeyError, TypeError):
            pass   # unreadable cache: recompute and overwrite
    counts = distinct_image_counts(data.packed)
    h = entropy_from_counts(counts)
    mult_values, mult_counts = np.unique(counts, return_counts=True)
    result = {"entropy_nats": h, "entropy_bits": bits(h), "num_images": int(counts.sum()),
              "num_distinct": int(len(counts)),
              "multiplicities": {int(k): int(v) for k, v in zip(mult_values, mult_counts)}}
    if path is not None:
        try:
            write_json_atomic(path, {"format": ENTROPY_CACHE_FORMAT, "content_sha256": sha,
                                     "path": str(getattr(data, "path", "")), **result,
                                     "multiplicities": {str(k): v for k, v in result["multiplicities"].items()}})
        except OSError:
            pass   # a read-only cache costs only the recomputation
    return {**result, "cached": False}

