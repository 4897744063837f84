"""Cars3D (Reed et al. 2015; disentanglement_lib ``data/ground_truth/cars3d.py``).

Source: ``nips2015-analogy-data.tar.gz`` (scottreed.info), md5
4e866a7919c1beedf53964e6f7a23686; the cars are ``data/cars/*.mat`` (183 files), each a
MATLAB file with key ``im`` (128, 128, 3, 24, 4) uint8: azimuth 24, elevation 4.
Factors as disentanglement_lib: elevation 4, azimuth 24, object 183 (object fastest);
each image ``thumbnail((64, 64))`` with Lanczos. disentanglement_lib numbers the objects
in ``ListDirectory`` order, which depends on the file system; we use sorted file names.
The tar is streamed; the 17,568 converted images (216 MB) are assembled in memory.
"""
from __future__ import annotations

import io
import tarfile
import zlib

import numpy as np

from disentangle.data.datasets import DatasetError
from disentangle.data.image_file import ImageFile, write_image_file
from disentangle.data.ground_truth import GroundTruth
from disentangle.data.sources import SourceFile

FACTOR_NAMES = ("elevation", "azimuth", "object")
MEMBER_DIR = "data/cars/"


def mesh_images(mat_bytes: bytes, label: str) -> np.ndarray:
    """A car's 96 views, thumbnailed: (4, 24, 64, 64, 3) uint8 indexed [elevation, azimuth]."""
    import scipy.io
    from PIL import Image
    try:
        im = scipy.io.loadmat(io.BytesIO(mat_bytes))["im"]
    except KeyError:
        raise DatasetError(f"{label}: no key 'im'; nothing was written") from None
    except (ValueError, TypeError, OSError) as exc:
        raise DatasetError(f"{label}: not a MATLAB file ({exc}); nothing was written") from None
    if im.ndim != 5 or im.shape[2:] != (3, 24, 4) or im.dtype != np.uint8:
        raise DatasetError(f"{label}: im has shape {im.shape} {im.dtype}, expected (H, W, 3, 24, 4) uint8; "
                           f"nothing was written")
    out = np.empty((4, 24, 64, 64, 3), np.uint8)
    for e in range(4):
        for a in range(24):
            pic = Image.fromarray(np.ascontiguousarray(im[:, :, :, a, e]))
            pic.thumbnail((64, 64), Image.LANCZOS)
            arr = np.asarray(pic)
            if arr.shape != (64, 64, 3):
                raise DatasetError(f"{label}: a {im.shape[0]}x{im.shape[1]} view thumbnails to {arr.shape[:2]}, "
                                   f"not 64x64; nothing was written")
            out[e, a] = arr
    return out


class Cars3D(ImageFile):
    name = "cars3d"
    channels = 3
    default_file = "cars3d.h5"
    sources = (SourceFile("nips2015-analogy-data.tar.gz",
                          "http://www.scottreed.info/files/nips2015-analogy-data.tar.gz",
                          md5="4e866a7919c1beedf53964e6f7a23686"),)

    @classmethod
    def convert(cls, paths, out, attrs, progress=None):
        (path,) = paths
        meshes: dict[str, np.ndarray] = {}
        try:
            with tarfile.open(path, "r:gz") as tar:
                for member in tar:
                    if not (member.isfile() and member.name.startswith(MEMBER_DIR)
                            and member.name.endswith(".mat") and "/" not in member.name[len(MEMBER_DIR):]):
                        continue
                    meshes[member.name] = mesh_images(tar.extractfile(member).read(), f"{path}:{member.name}")
                    if progress is not None:
                        progress(96)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DatasetError(f"{path}: not a readable tar.gz ({exc}); nothing was written") from None
        if not meshes:
            raise DatasetError(f"{path}: no {MEMBER_DIR}*.mat files in the archive; nothing was written")
        names = sorted(meshes)
        gt = GroundTruth(FACTOR_NAMES, (np.arange(4.0), np.arange(24.0), np.arange(float(len(names)))))
        stacked = np.stack([meshes[n] for n in names], axis=2)          # (4, 24, objects, 64, 64, 3)
        pixels = stacked.reshape(gt.num_images, 64, 64, 3)
        attrs = {**attrs, "object_files": "\n".join(n[len(MEMBER_DIR):] for n in names)}
        blocks = (pixels[i:i + 4096] for i in range(0, gt.num_images, 4096))
        return write_image_file(out, cls.name, gt, 3, blocks, attrs)
