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

The toolkit's file for 8-bit sets (format ``disentangle-images-1``) is read and written by
:mod:`disentangle.data.image_file`.
"""
from __future__ import annotations

import abc
import importlib
import os
from pathlib import Path

import numpy as np

from disentangle.data import trust
from disentangle.data.ground_truth import GroundTruth
from disentangle.errors import ParameterError, UserError

IMAGE_SIZE = 64
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
    "celeba": "disentangle.data.celeba:CelebA",
    # any folder or zip of images, imported under a name the user gives (the name is in the file)
    "image-folder": "disentangle.data.image_folder:ImageFolder",
}


class DatasetError(UserError):
    """A dataset problem the user can fix; one line naming the file."""


def data_dir() -> Path:
    """Where datasets live: $DISENTANGLE_DATA_DIR, else data/."""
    return Path(os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_DIR)


def dataset_class(name: str, path: str | os.PathLike | None = None) -> type["Dataset"]:
    """The class of dataset ``name``: a registry entry, or the image-folder class for a
    name the user gave an imported image set (`disentangle data import-folder`), found in
    ``path`` or the data directory."""
    if name not in REGISTRY:
        from disentangle.data.image_folder import ImageFolder, imported_path
        if imported_path(name, path) is not None:
            return ImageFolder
        raise ParameterError("dataset", f"unknown dataset; known: {', '.join(REGISTRY)} "
                                        f"(or a name given to `data import-folder`)", name)
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)


def open_dataset(name: str, path: str | os.PathLike | None = None, **options) -> "Dataset":
    """Open dataset ``name`` from ``path`` or, without one, by its path rule."""
    cls = dataset_class(name, path)
    if getattr(cls, "named_by_file", False):
        return cls.open_named(name, path, **options)
    return cls.open(cls.resolve_path(path), **options)


def open_for_checks(name: str, path: str | os.PathLike | None = None) -> "Dataset":
    """Dataset ``name`` with its ground truth and size but, for dSprites and its variants,
    without its images in memory: what a sweep's parent needs to check the metrics' sizes
    against the data before any run starts (the image sets read their images lazily anyway)."""
    cls = dataset_class(name, path)
    if issubclass(cls, DSprites):
        from disentangle.data.dsprites import DSpritesData
        return cls(path, data=DSpritesData(cls.resolve_path(path), load_images=False))
    return open_dataset(name, path)


def locate(name: str, path: str | os.PathLike | None = None) -> tuple[Path, str | None]:
    """(the file dataset ``name`` is read from, its content_sha256): ``path`` or the
    dataset's path rule. An image-set file is opened, so its images are checked against
    their checksum here, once (a sweep's parent): the runs find the verdict in the cache
    (:func:`disentangle.data.trust.check_content`); the dSprites file is not loaded (each
    process checks it at load). A file without a recorded checksum is refused unless
    accepted unverified (:func:`disentangle.data.trust.accept_unverified`). The dSprites
    variants read the dSprites file and share its checksum (their identity adds the
    variant and its seed)."""
    import h5py
    cls = dataset_class(name, path)
    if getattr(cls, "named_by_file", False):
        ds = cls.open_named(name, path)
        try:
            return ds.path.resolve(), ds.attrs.get("content_sha256")
        finally:
            ds.close()
    resolved = cls.resolve_path(path).resolve()
    if not resolved.is_file():
        raise DatasetError(f"{resolved}: no such {name} dataset file")
    from disentangle.data.image_file import ImageFile
    if issubclass(cls, ImageFile):
        # opened, so its images are checked here once (a sweep's parent): the runs it starts
        # find the verdict in the cache instead of each hashing the file
        ds = cls.open(resolved)
        try:
            return resolved, ds.attrs.get("content_sha256")
        finally:
            ds.close()
    try:
        with h5py.File(resolved, "r") as f:
            attrs = trust.plain_attrs(resolved, f.attrs, DatasetError)
    except OSError as exc:
        raise DatasetError(f"{resolved}: not an HDF5 dataset file ({exc})") from None
    # None only for a file the caller accepted unverified (each run then hashes what it reads)
    return resolved, trust.recorded_checksum(resolved, attrs, DatasetError)


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
    from disentangle.data.image_file import IMAGES_FORMAT
    if fmt == DSPRITES_FORMAT:
        return DSprites.open(path)
    if fmt != IMAGES_FORMAT or str(name) not in REGISTRY:
        raise DatasetError(f"{path}: not a disentangle dataset file (format {fmt!r})")
    return dataset_class(str(name)).open(path)


# --------------------------------------------------------------------------- the interface
class Dataset(abc.ABC):
    """Base class; see the module docstring for the contract. A dataset module implements
    ``num_images``, ``images`` and ``provenance``."""

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
        path = data_dir() / cls.default_file
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
    @abc.abstractmethod
    def num_images(self) -> int: ...

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
    @abc.abstractmethod
    def images(self, indices) -> np.ndarray: ...

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
    @abc.abstractmethod
    def provenance(self) -> dict: ...

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
        else:
            info["factors"] = "none (no ground truth: factor metrics do not apply)"
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

    @property
    def packed(self) -> np.ndarray:
        """The bit-packed rows (N, 512) uint8: the fast path of training, encoding and H(X)."""
        return self.data.packed

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
