"""The dataset contract: one small class per dataset, one registry, one opener.

Modelled on disentanglement_lib's ``data/ground_truth/ground_truth_data.py`` (factor
sizes, factor sampling, observations from factors) and on nmichlo/disent's one class per
dataset with its files and hashes. A :class:`Dataset` has

- ``name`` (the registry key), ``image_shape`` ``(C, 64, 64)``, ``num_images``;
- ``ground_truth``: a :class:`~disentangle.data.ground_truth.GroundTruth` grid (scored
  factors plus nuisance factors that are sampled, never scored) or None;
- ``images(indices)``: float32 ``(n, C, 64, 64)`` in [0, 1], a pure function of the indices;
- ``observations(indices, rng)``: the same images with their random nuisance drawn afresh
  from ``rng`` (a numpy Generator); equal to ``images`` for datasets without such draws;
- ``torch_batch(indices, device, rng=None)``: a training batch as a float32 tensor on
  ``device`` (dSprites sends its bit-packed rows and unpacks there; 8-bit sets send uint8);
- ``pixel_levels`` (2: binary, 256: 8-bit, None: continuous intensities), hence
  ``binary`` and ``bits_per_channel`` (whether a Bernoulli or 256-level likelihood is a
  discrete one);
- ``provenance``: what a run records (source file and checksums, or variant, seed and the
  base file's checksum); ``source_label`` for tables.

:data:`REGISTRY` maps names to ``"module:Class"``; adding a dataset is its module plus one
line there. :func:`open_dataset` applies the dataset's path rule (:meth:`Dataset.resolve_path`).

The toolkit's file for 8-bit sets (:class:`ImageFile`, format ``disentangle-images-1``)::

    /images          (N, 64, 64, C) uint8, chunks of one image, no filter
    /factor_classes  (N, K + M) int64  scored classes then discrete nuisance classes
    /factor_values   (N, K) float64
    attrs: format, dataset, ground_truth (JSON), source, source_files (JSON: name, bytes,
           sha256, and md5 where verified), verified (JSON: what was checked against what),
           content_sha256 (of /images in index order), converter

Random reads: one image per chunk, read with ``read_direct_chunk`` (the raw chunk is the
image). The process's resident memory does not grow with the file (no mmap; HDF5's chunk
cache is bounded), see benchmarks/bench_data_stream.py and docs/datasets.md.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from disentangle.data.ground_truth import GroundTruth
from disentangle.errors import ParameterError, UserError
from disentangle.results import atomic_path, check_writable

IMAGE_SIZE = 64
IMAGES_FORMAT = "disentangle-images-1"
DATA_DIR_ENV_VAR = "DISENTANGLE_DATA_DIR"
DEFAULT_DATA_DIR = Path("data")

# name -> "module:Class". One line per dataset.
REGISTRY: dict[str, str] = {
    "dsprites": "disentangle.data.datasets:DSprites",
    "color-dsprites": "disentangle.data.variants:ColorDSprites",
    "noisy-dsprites": "disentangle.data.variants:NoisyDSprites",
    "scream-dsprites": "disentangle.data.variants:ScreamDSprites",
    "shapes3d": "disentangle.data.shapes3d:Shapes3D",
    "mpi3d-toy": "disentangle.data.mpi3d:MPI3DToy",
    "mpi3d-realistic": "disentangle.data.mpi3d:MPI3DRealistic",
    "mpi3d-real": "disentangle.data.mpi3d:MPI3DReal",
    "smallnorb": "disentangle.data.smallnorb:SmallNORB",
    "cars3d": "disentangle.data.cars3d:Cars3D",
}


class DatasetError(UserError):
    """A dataset problem the user can fix; one line naming the file."""


def dataset_class(name: str) -> type["Dataset"]:
    if name not in REGISTRY:
        raise ParameterError("dataset", f"unknown dataset; known: {', '.join(REGISTRY)}", name)
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def open_dataset(name: str, path: str | os.PathLike | None = None, **options) -> "Dataset":
    """Open dataset ``name`` from ``path`` or, without one, by its path rule."""
    cls = dataset_class(name)
    return cls.open(cls.resolve_path(path), **options)


def open_file(path: str | os.PathLike) -> "Dataset":
    """Open a toolkit dataset file of any registered dataset (the name is in the file)."""
    import h5py
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such dataset file")
    try:
        with h5py.File(path, "r") as f:
            fmt, name = f.attrs.get("format"), f.attrs.get("dataset")
    except OSError as exc:
        raise DatasetError(f"{path}: not an HDF5 dataset file ({exc})") from None
    from disentangle.data.dsprites import FILE_FORMAT as DSPRITES_FORMAT
    if fmt == DSPRITES_FORMAT:
        return DSprites.open(path)
    if fmt != IMAGES_FORMAT or str(name) not in REGISTRY:
        raise DatasetError(f"{path}: not a disentangle dataset file (format {fmt!r})")
    return dataset_class(str(name)).open(path)


# --------------------------------------------------------------------------- the interface
class Dataset:
    """Base class; see the module docstring for the contract."""

    name: str = ""
    channels: int = 1
    pixel_levels: int | None = 256
    default_file: str = ""          # under the data directory

    ground_truth: GroundTruth | None = None
    path: Path

    # ------------------------------------------------------------ opening
    @classmethod
    def resolve_path(cls, explicit=None) -> Path:
        """Explicit path, else $DISENTANGLE_DATA_DIR/<file>, else data/<file>."""
        if explicit:
            return Path(explicit)
        folder = Path(os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_DIR)
        path = folder / cls.default_file
        if not path.is_file():
            raise DatasetError(f"{path}: no {cls.name} dataset file (run `disentangle data fetch {cls.name}` "
                               f"or pass its path)")
        return path

    @classmethod
    def open(cls, path, **options) -> "Dataset":
        return cls(path, **options)

    # ------------------------------------------------------------ shape and pixels
    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.channels, IMAGE_SIZE, IMAGE_SIZE)

    @property
    def num_images(self) -> int:
        raise NotImplementedError

    @property
    def binary(self) -> bool:
        """Pixels in {0, 1}: a Bernoulli decoder's D is a discrete negative log-likelihood."""
        return self.pixel_levels == 2

    @property
    def bits_per_channel(self) -> int | None:
        """1 for binary, 8 for 8-bit images, None for continuous intensities (the dSprites
        variants' nuisance is a real-valued draw)."""
        return {2: 1, 256: 8}.get(self.pixel_levels)

    @property
    def has_random_nuisance(self) -> bool:
        """Whether observations differ from images (continuous nuisance drawn per observation)."""
        return False

    # ------------------------------------------------------------ pixels
    def images(self, indices) -> np.ndarray:
        raise NotImplementedError

    def observations(self, indices, rng: np.random.Generator) -> np.ndarray:
        """Images with their random nuisance drawn from ``rng``: float32 (n, C, 64, 64)."""
        return self.images(indices)

    def torch_batch(self, indices, device, rng: np.random.Generator | None = None):
        """A float32 (n, C, 64, 64) tensor of observations on ``device``."""
        import torch
        x = self.observations(indices, rng) if self.has_random_nuisance else self.images(indices)
        return torch.from_numpy(x).to(device)

    def check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_images):
            raise ParameterError("indices", f"image index out of range 0..{self.num_images - 1}")
        return idx

    # ------------------------------------------------------------ identity
    @property
    def provenance(self) -> dict:
        raise NotImplementedError

    @property
    def source_label(self) -> str:
        return str(self.provenance.get("source", self.name))

    def info(self) -> dict:
        """What `disentangle data info` prints."""
        gt = self.ground_truth
        info = {"dataset": self.name, "path": str(self.path), "image_shape": "x".join(map(str, self.image_shape)),
                "pixels": {2: "binary", 256: "8-bit"}.get(self.pixel_levels, "continuous"),
                "num_images": self.num_images}
        if gt is not None:
            info["factors"] = dict(zip(gt.factor_names, gt.factor_sizes))
            if gt.nuisance:
                info["nuisance"] = ", ".join(n.name + (f"={n.size}" if n.size else f" ({n.distribution})")
                                             for n in gt.nuisance)
        info.update({k: v for k, v in self.provenance.items() if k not in ("path", "num_images", "factor_sizes")})
        return info

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- dSprites
class DSprites(Dataset):
    """dSprites (the bit-packed file of :mod:`disentangle.data.dsprites`), unchanged."""

    name = "dsprites"
    channels = 1
    pixel_levels = 2

    def __init__(self, path, data=None):
        from disentangle.data.dsprites import DSpritesData
        self.data = data if data is not None else DSpritesData(path)
        self.path = self.data.path
        self.ground_truth = self.data.ground_truth
        self._device_packed: dict[str, object] = {}

    @classmethod
    def resolve_path(cls, explicit=None) -> Path:
        """The dSprites rule: explicit, $DISENTANGLE_DATA, data/dsprites.h5, data/dsprites-rendered.h5."""
        from disentangle.data.dsprites import resolve_data_path
        return resolve_data_path(explicit)

    @property
    def num_images(self) -> int:
        return self.data.num_images

    def packed_images(self, indices) -> np.ndarray:
        return self.data.packed_images(self.check_indices(indices))

    def images(self, indices) -> np.ndarray:
        return self.data.images(self.check_indices(indices)).astype(np.float32)[:, None]

    def torch_batch(self, indices, device, rng=None):
        """The packed dataset stays on ``device`` (377 MB for all of dSprites); a batch is
        gathered and unpacked there, as train.PackedBatches does."""
        import torch
        from disentangle.data.render import unpack_to_float
        key = str(device)
        if key not in self._device_packed:
            self._device_packed[key] = torch.from_numpy(np.ascontiguousarray(self.data.packed)).to(device)
        idx = torch.from_numpy(self.check_indices(indices)).to(device)
        return unpack_to_float(self._device_packed[key].index_select(0, idx))

    @property
    def provenance(self) -> dict:
        return {"dataset": self.name, **self.data.provenance}

    @property
    def source_label(self) -> str:
        return self.data.source_label


# --------------------------------------------------------------------------- 8-bit image files
class ImageFile(Dataset):
    """A toolkit ``disentangle-images-1`` file: uint8 images streamed from disk by index.

    Subclasses set ``name``, ``channels``, ``default_file`` and a ``convert`` function; the
    reading is shared."""

    pixel_levels = 256

    def __init__(self, path, verify: bool = False):
        import h5py
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such dataset file (run `disentangle data fetch {self.name}`)")
        try:
            self._file = h5py.File(self.path, "r")
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in self._file.attrs.items()}
            if attrs.get("format") != IMAGES_FORMAT or attrs.get("dataset") != self.name:
                raise DatasetError(f"{self.path}: not a {self.name} dataset file (format "
                                   f"{attrs.get('format')!r}, dataset {attrs.get('dataset')!r})")
            self.ground_truth = GroundTruth.from_json(json.loads(attrs["ground_truth"]))
            self._images = self._file["images"]
            shape = self._images.shape
        except DatasetError:
            self.close()
            raise
        except (OSError, KeyError, ValueError) as exc:
            self.close()
            raise DatasetError(f"{self.path}: unreadable dataset file ({exc})") from None
        expected = (self.ground_truth.num_images, IMAGE_SIZE, IMAGE_SIZE, self.channels)
        if shape != expected or self._images.dtype != np.uint8:
            self.close()
            raise DatasetError(f"{self.path}: images has shape {shape} {self._images.dtype}, expected {expected} uint8")
        self.attrs = attrs
        self._raw = self._images.chunks == (1,) + expected[1:] and not self._images.compression
        if verify:
            self.verify()

    def close(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None

    def __del__(self):
        self.close()

    @property
    def num_images(self) -> int:
        return self.ground_truth.num_images

    def read_uint8(self, indices) -> np.ndarray:
        """(n, 64, 64, C) uint8 in the order given; indices are read in ascending order."""
        idx = self.check_indices(indices)
        out = np.empty((len(idx), IMAGE_SIZE, IMAGE_SIZE, self.channels), np.uint8)
        order = np.argsort(idx, kind="stable")
        if self._raw:
            dsid = self._images.id
            flat = out.reshape(len(idx), -1)
            for j in order:
                _, chunk = dsid.read_direct_chunk((int(idx[j]), 0, 0, 0))
                flat[j] = np.frombuffer(chunk, np.uint8)
        else:
            for j in order:
                out[j] = self._images[int(idx[j])]
        return out

    def images(self, indices) -> np.ndarray:
        x = self.read_uint8(indices)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255)

    def torch_batch(self, indices, device, rng=None):
        """uint8 bytes travel; the cast, transpose and /255 happen on ``device``."""
        import torch
        x = torch.from_numpy(self.read_uint8(indices)).to(device)
        return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()

    def verify(self) -> None:
        """Hash /images in index order against content_sha256 (reads the whole file)."""
        sha = hashlib.sha256()
        step = 4096
        for i in range(0, self.num_images, step):
            sha.update(np.ascontiguousarray(self._images[i:i + step]).tobytes())
        if sha.hexdigest() != self.attrs.get("content_sha256"):
            raise DatasetError(f"{self.path}: images do not match the file's content_sha256; the file is "
                               f"damaged or was edited: fetch it again")

    @property
    def provenance(self) -> dict:
        return {"dataset": self.name, "source": str(self.attrs.get("source")), "path": str(self.path),
                "content_sha256": self.attrs.get("content_sha256"),
                "source_files": json.loads(self.attrs.get("source_files", "[]")),
                "verified": json.loads(self.attrs.get("verified", "{}")),
                "num_images": self.num_images,
                "factor_sizes": list(self.ground_truth.factor_sizes)}


def write_image_file(out, name: str, ground_truth: GroundTruth, channels: int,
                     chunks: Iterable[np.ndarray], attrs: dict,
                     progress: Callable[[int], None] | None = None) -> Path:
    """Write a ``disentangle-images-1`` file atomically, streaming: ``chunks`` yields
    (n, 64, 64, C) uint8 arrays in index order. Written straight to a temporary file (an
    MPI3D file is 12.7 GB: no in-memory build); free space is checked first."""
    import h5py
    out = Path(out)
    n = ground_truth.num_images
    check_writable(out, need_bytes=int(n * IMAGE_SIZE * IMAGE_SIZE * channels * 1.02) + (1 << 20))
    classes = ground_truth.all_classes()
    idx = np.arange(n)
    nuis = ground_truth.nuisance_classes_of(idx)
    sha = hashlib.sha256()
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as f:
            ds = f.create_dataset("images", shape=(n, IMAGE_SIZE, IMAGE_SIZE, channels), dtype=np.uint8,
                                  chunks=(1, IMAGE_SIZE, IMAGE_SIZE, channels))
            i = 0
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype=np.uint8)
                if chunk.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, channels) or i + len(chunk) > n:
                    raise DatasetError(f"{out}: converter produced images of shape {chunk.shape} at {i}")
                ds[i:i + len(chunk)] = chunk
                sha.update(chunk.tobytes())
                i += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            if i != n:
                raise DatasetError(f"{out}: wrote {i} images, expected {n}")
            f.create_dataset("factor_classes", data=np.concatenate([classes, nuis], axis=1), compression="gzip")
            f.create_dataset("factor_values", data=ground_truth.values_of(classes), compression="gzip")
            f.attrs.update({"format": IMAGES_FORMAT, "dataset": name,
                            "ground_truth": json.dumps(ground_truth.to_json()),
                            "content_sha256": sha.hexdigest(), **attrs})
    return out
