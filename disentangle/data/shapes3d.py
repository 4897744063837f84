"""Shapes3D (Burgess & Kim 2018; disentanglement_lib ``data/ground_truth/shapes3d.py``).

Source: ``3dshapes.h5`` (DeepMind, storage.googleapis.com/3d-shapes): ``images``
(480,000, 64, 64, 3) uint8 and ``labels`` (480,000, 6) float64 factor values; factors
floor_hue 10, wall_hue 10, object_hue 10, scale 8, shape 4, orientation 15, last factor
fastest. disentanglement_lib reads an older npz of the same arrays; the images are the same.
The converter recovers the grid from the labels (so it also takes a sub-grid file) and
refuses rows out of grid order.
"""
from __future__ import annotations

import numpy as np

from disentangle.data.datasets import DatasetError
from disentangle.data.image_file import ImageFile, write_image_file
from disentangle.data.ground_truth import GroundTruth
from disentangle.data.sources import SourceFile

FACTOR_NAMES = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")
_BLOCK = 4096


def grid_from_labels(labels: np.ndarray, names, label: str) -> GroundTruth:
    """The factor grid whose values are the distinct label values of each column, after
    checking that the rows enumerate it in index order (last factor fastest)."""
    values = [np.unique(labels[:, k]) for k in range(labels.shape[1])]
    gt = GroundTruth(tuple(names), tuple(values))
    if gt.num_images != len(labels):
        raise DatasetError(f"{label}: labels are not a complete factor grid ({len(labels)} rows, "
                           f"{'x'.join(str(len(v)) for v in values)} combinations)")
    classes = np.stack([np.searchsorted(values[k], labels[:, k]) for k in range(len(values))], axis=1)
    if not np.array_equal(gt.index_of(classes), np.arange(len(labels))):
        raise DatasetError(f"{label}: label rows are not in factor-grid order (last factor fastest)")
    return gt


class Shapes3D(ImageFile):
    name = "shapes3d"
    channels = 3
    default_file = "shapes3d.h5"
    sources = (SourceFile("3dshapes.h5", "https://storage.googleapis.com/3d-shapes/3dshapes.h5",
                          size=267_573_662,
                          sha256="0a0f6ed98baff276a50f3a081a7434d788da63cb135a98189b2a5b5769be1785"),)

    @classmethod
    def convert(cls, paths, out, attrs, progress=None):
        import h5py
        (path,) = paths
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise DatasetError(f"{path}: not an HDF5 file ({exc}); nothing was written") from None
        with f:
            for key in ("images", "labels"):
                if key not in f:
                    raise DatasetError(f"{path}: missing key {key!r} (has {sorted(f.keys())}); nothing was written")
            images, labels = f["images"], f["labels"]
            if images.ndim != 4 or images.shape[1:] != (64, 64, 3) or images.dtype != np.uint8:
                raise DatasetError(f"{path}: images has shape {images.shape} {images.dtype}, expected "
                                   f"(N, 64, 64, 3) uint8; nothing was written")
            if labels.shape != (images.shape[0], 6):
                raise DatasetError(f"{path}: labels has shape {labels.shape}, expected ({images.shape[0]}, 6); "
                                   f"nothing was written")
            gt = grid_from_labels(np.asarray(labels[...], dtype=np.float64), FACTOR_NAMES, str(path))
            blocks = (images[i:i + _BLOCK] for i in range(0, gt.num_images, _BLOCK))
            return write_image_file(out, cls.name, gt, 3, blocks, attrs, progress=progress)
