"""smallNORB (LeCun et al. 2004; disentanglement_lib ``data/ground_truth/norb.py``).

Source: the six gzipped files of norb-v1.0-small (cs.nyu.edu/~ylclab/data/norb-v1.0-small):
``smallnorb-5x46789x9x18x6x2x96x96-training-{dat,cat,info}.mat.gz`` and
``smallnorb-5x01235x9x18x6x2x96x96-testing-{...}``. Each is a NORB binary matrix:
int32 little-endian magic (0x1E3D4C55 ubyte, 0x1E3D4C54 int32, 0x1E3D4C51 float32,
0x1E3D4C53 float64), int32 ndim, then max(3, ndim) int32 dimensions (unused ones are 1),
then the data. ``dat`` is (24300, 2, 96, 96) ubyte (two cameras), ``cat`` (24300,) int32
category, ``info`` (24300, 4) int32: instance, elevation, azimuth (0, 2, ..., 34), lighting.

As disentanglement_lib: train and test concatenated, the left camera (index 0) only,
96 -> 64 with Pillow's Lanczos filter (its ``ANTIALIAS`` constant, removed in Pillow 10,
was an alias of ``LANCZOS``); scored factors category 5, elevation 9, azimuth 18,
lighting 6; instance (10 per category) a nuisance drawn per observation. Stored in grid
order (category, elevation, azimuth, lighting, instance), instance fastest.
disentanglement_lib reads ubyte as int8; the format says unsigned (we read uint8).
"""
from __future__ import annotations

import gzip
import zlib

import numpy as np

from disentangle.data.datasets import DatasetError
from disentangle.data.image_file import ImageFile, write_image_file
from disentangle.data.ground_truth import GroundTruth, Nuisance
from disentangle.data.sources import SourceFile

MAGIC_DTYPES = {0x1E3D4C55: np.uint8, 0x1E3D4C54: np.dtype("<i4"), 0x1E3D4C51: np.dtype("<f4"),
                0x1E3D4C53: np.dtype("<f8")}
CHUNKS = ("smallnorb-5x46789x9x18x6x2x96x96-training", "smallnorb-5x01235x9x18x6x2x96x96-testing")
FACTOR_NAMES = ("category", "elevation", "azimuth", "lighting")
_URL = "https://cs.nyu.edu/~ylclab/data/norb-v1.0-small/"
_BLOCK = 1000


def read_header(fh, label: str) -> tuple[np.dtype, tuple[int, ...]]:
    head = fh.read(8)
    if len(head) != 8:
        raise DatasetError(f"{label}: not a NORB binary matrix (file too short); nothing was written")
    magic, ndim = np.frombuffer(head, "<i4")
    if int(magic) not in MAGIC_DTYPES or not 0 < ndim < 16:
        raise DatasetError(f"{label}: not a NORB binary matrix (magic {int(magic):#x}); nothing was written")
    dims = np.frombuffer(fh.read(4 * max(3, int(ndim))), "<i4")
    return np.dtype(MAGIC_DTYPES[int(magic)]), tuple(int(d) for d in dims[:int(ndim)])


def read_matrix(path, expect_dtype, expect_tail: tuple) -> np.ndarray:
    """A whole (small) NORB matrix: cat and info files."""
    try:
        with gzip.open(path, "rb") as fh:
            dtype, dims = read_header(fh, str(path))
            if dtype != np.dtype(expect_dtype) or dims[1:] != expect_tail:
                raise DatasetError(f"{path}: matrix {dtype} {dims}, expected {np.dtype(expect_dtype)} "
                                   f"(N, {', '.join(map(str, expect_tail))}); nothing was written")
            n = int(np.prod(dims))
            buf = fh.read(n * dtype.itemsize)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: unreadable gzip file ({exc}); nothing was written") from None
    if len(buf) != n * dtype.itemsize:
        raise DatasetError(f"{path}: truncated ({len(buf)} of {n * dtype.itemsize} data bytes); nothing was written")
    return np.frombuffer(buf, dtype).reshape(dims)


def resize_left_camera(path, n: int, progress=None) -> np.ndarray:
    """Stream a dat file: the left camera of each pair, 96 -> 64 Lanczos, uint8 (n, 64, 64)."""
    from PIL import Image
    out = np.empty((n, 64, 64), np.uint8)
    try:
        with gzip.open(path, "rb") as fh:
            dtype, dims = read_header(fh, str(path))
            if dtype != np.uint8 or len(dims) != 4 or dims[0] != n or dims[1] != 2 or dims[2] != dims[3]:
                raise DatasetError(f"{path}: matrix {dtype} {dims}, expected uint8 ({n}, 2, H, H); nothing was written")
            side = dims[2]
            for i in range(0, n, _BLOCK):
                m = min(_BLOCK, n - i)
                buf = fh.read(m * 2 * side * side)
                if len(buf) != m * 2 * side * side:
                    raise DatasetError(f"{path}: truncated; nothing was written")
                pairs = np.frombuffer(buf, np.uint8).reshape(m, 2, side, side)
                for j in range(m):
                    out[i + j] = np.asarray(Image.fromarray(pairs[j, 0]).resize((64, 64), Image.LANCZOS))
                if progress is not None:
                    progress(m)
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: unreadable gzip file ({exc}); nothing was written") from None
    return out


def source_files() -> tuple[SourceFile, ...]:
    return tuple(SourceFile(f"{c}-{part}.mat.gz", _URL + f"{c}-{part}.mat.gz") for c in CHUNKS
                 for part in ("dat", "cat", "info"))


class SmallNORB(ImageFile):
    name = "smallnorb"
    channels = 1
    default_file = "smallnorb.h5"
    # no published checksum: the format, the counts and the grid are verified, the sha256 recorded
    sources = source_files()

    @classmethod
    def convert(cls, paths, out, attrs, progress=None):
        by_name = {s.name: p for s, p in zip(cls.sources, paths)}
        feats, images = [], []
        for c in CHUNKS:
            cat = read_matrix(by_name[f"{c}-cat.mat.gz"], "<i4", ())
            info = read_matrix(by_name[f"{c}-info.mat.gz"], "<i4", (4,))
            if len(info) != len(cat):
                raise DatasetError(f"{c}: cat has {len(cat)} rows, info {len(info)}; nothing was written")
            feats.append(np.column_stack([cat, info]))   # category, instance, elevation, azimuth, lighting
            images.append((by_name[f"{c}-dat.mat.gz"], len(cat)))
        feats = np.concatenate(feats)
        values = [np.unique(feats[:, k]) for k in range(5)]
        classes = np.stack([np.searchsorted(values[k], feats[:, k]) for k in range(5)], axis=1)
        sizes = [len(v) for v in values]
        gt = GroundTruth(FACTOR_NAMES, (values[0], values[2], values[3], values[4]),
                         nuisance=(Nuisance("instance", "uniform over the category's instances", sizes[1]),))
        target = gt.index_of(classes[:, [0, 2, 3, 4]], nuisance_classes=classes[:, [1]])
        if len(feats) != gt.num_images or np.unique(target).size != gt.num_images:
            raise DatasetError(f"smallnorb: the cat/info rows ({len(feats)}) do not cover the factor grid "
                               f"{'x'.join(map(str, sizes))} exactly once; nothing was written")
        pixels = np.empty((gt.num_images, 64, 64, 1), np.uint8)
        done = 0
        for path, n in images:
            pixels[target[done:done + n], :, :, 0] = resize_left_camera(path, n, progress)
            done += n
        blocks = (pixels[i:i + 4096] for i in range(0, gt.num_images, 4096))
        return write_image_file(out, cls.name, gt, 1, blocks, attrs)
