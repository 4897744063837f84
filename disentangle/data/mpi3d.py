"""MPI3D toy, realistic and real (Gondal et al. 2019; rr-learning/disentanglement_dataset).

Each source is an npz with ``images`` (1,036,800, 64, 64, 3) uint8, and no labels: the
README defines the factors by ``reshape([6, 6, 2, 3, 3, 40, 40, 64, 64, 3])``: object_color
6, object_shape 6, object_size 2, camera_height 3, background_color 3, horizontal_axis 40,
vertical_axis 40, last fastest. disentanglement_lib (``data/ground_truth/mpi3d.py``)
hard-codes the sizes of the first release ([4, 4, 2, 3, 3, 40, 40], 460,800 images) for
toy and realistic, so on today's files it pairs images with the wrong factors; we follow
the files. The npz is streamed (12.7 GB decoded), never loaded whole.
"""
from __future__ import annotations

import zipfile

import numpy as np

from disentangle.data.datasets import DatasetError
from disentangle.data.image_file import ImageFile, write_image_file
from disentangle.data.ground_truth import GroundTruth
from disentangle.data.sources import SourceFile

FACTOR_NAMES = ("object_color", "object_shape", "object_size", "camera_height", "background_color",
                "horizontal_axis", "vertical_axis")
FACTOR_SIZES = (6, 6, 2, 3, 3, 40, 40)
_BASE_URL = "https://storage.googleapis.com/disentanglement_dataset/Final_Dataset/"
_BLOCK = 4096


def convert_npz(path, out, name: str, attrs: dict, factor_sizes=FACTOR_SIZES, progress=None):
    """Stream ``images`` of an MPI3D npz into the toolkit's file. ``factor_sizes``: the
    grid of the file (a reduced one for tests and subsets)."""
    from disentangle.data.dsprites import DataError, _npz_member_reader
    gt = GroundTruth(FACTOR_NAMES, tuple(np.arange(s, dtype=float) for s in factor_sizes))
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DatasetError(f"{path}: not a readable npz file ({exc}); nothing was written") from None
    with zf:
        try:
            fh, shape, dtype = _npz_member_reader(zf, "images", path)
        except DataError as exc:
            raise DatasetError(f"{exc}; nothing was written") from None
        if tuple(shape) != (gt.num_images, 64, 64, 3) or dtype != np.uint8:
            raise DatasetError(f"{path}: images has shape {tuple(shape)} {dtype}, expected "
                               f"({gt.num_images}, 64, 64, 3) uint8 (sizes {list(factor_sizes)}); nothing was written")

        def blocks():
            with fh:
                for i in range(0, gt.num_images, _BLOCK):
                    n = min(_BLOCK, gt.num_images - i)
                    buf = fh.read(n * 64 * 64 * 3)
                    if len(buf) != n * 64 * 64 * 3:
                        raise DatasetError(f"{path}: images is truncated; nothing was written")
                    yield np.frombuffer(buf, np.uint8).reshape(n, 64, 64, 3)

        try:
            return write_image_file(out, name, gt, 3, blocks(), attrs, progress=progress)
        except (zipfile.BadZipFile, EOFError) as exc:
            raise DatasetError(f"{path}: corrupt npz ({exc}); nothing was written") from None


class _MPI3D(ImageFile):
    channels = 3
    factor_sizes = FACTOR_SIZES

    @classmethod
    def convert(cls, paths, out, attrs, progress=None):
        (path,) = paths
        return convert_npz(path, out, cls.name, attrs, cls.factor_sizes, progress=progress)


class MPI3DToy(_MPI3D):
    name = "mpi3d-toy"
    default_file = "mpi3d-toy.h5"
    # md5 of the 2019 file (disent); the files moved in 2025 and may not match: --md5/--sha256
    sources = (SourceFile("mpi3d_toy.npz", _BASE_URL + "mpi3d_toy.npz", md5="55889cb7c7dfc655d6e0277beee88868"),)


class MPI3DRealistic(_MPI3D):
    name = "mpi3d-realistic"
    default_file = "mpi3d-realistic.h5"
    sources = (SourceFile("mpi3d_realistic.npz", _BASE_URL + "mpi3d_realistic.npz",
                          md5="59a6225b88b635365f70c91b3e52f70f"),)


class MPI3DReal(_MPI3D):
    name = "mpi3d-real"
    default_file = "mpi3d-real.h5"
    sources = (SourceFile("mpi3d_real.npz", _BASE_URL + "mpi3d_real.npz", md5="0f33f609918fb5c97996692f91129802"),)
