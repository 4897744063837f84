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
    /source_names    (N,) strings: the source file of each image (sets without factors)
    attrs: format, dataset, ground_truth (JSON; null for a set without factors, which then
           has no /factor_* datasets), source, source_files (JSON: name, bytes, sha256, and
           md5 where verified), verified (JSON: what was checked against what),
           content_sha256 (of /images in index order), converter

Random reads: one image per chunk, read with ``read_direct_chunk`` (the raw chunk is the
image). The process's resident memory does not grow with the file (no mmap; HDF5's chunk
cache is bounded), see benchmarks/bench_data_stream.py and docs/datasets.md.
"""
from __future__ import annotations

import abc
import importlib
import json
import os
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from disentangle.data import trust
from disentangle.data.ground_truth import GroundTruth, Nuisance
from disentangle.errors import ParameterError, UserError
from disentangle.io import atomic_path, check_writable

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


# --------------------------------------------------------------------------- 8-bit image files
class ImageFile(Dataset):
    """A toolkit ``disentangle-images-1`` file: uint8 images streamed from disk by index.

    Subclasses set ``name``, ``channels``, ``default_file`` and a ``convert`` function; the
    reading is shared. A file without ground-truth factors (``ground_truth`` null: CelebA,
    image folders) has ``ground_truth`` None and its image count from /images."""

    pixel_levels = 256

    def __init__(self, path, verify: bool = False):
        import h5py
        self.path = Path(path)
        if not self.path.is_file():
            raise DatasetError(f"{self.path}: no such dataset file (run `disentangle data fetch {self.name}`)")
        try:
            self._file = h5py.File(self.path, "r")
            attrs = trust.plain_attrs(self.path, self._file.attrs, DatasetError)
            if attrs.get("format") != IMAGES_FORMAT or attrs.get("dataset") != self.name:
                raise DatasetError(f"{self.path}: not a {self.name} dataset file (format "
                                   f"{attrs.get('format')!r}, dataset {attrs.get('dataset')!r})")
            self.ground_truth = _ground_truth_of(self.path, attrs)
            _check_provenance_attrs(self.path, attrs)
            recorded = trust.recorded_checksum(self.path, attrs, DatasetError)
            self._images = trust.array(self.path, self._file, "images", DatasetError, dtype=np.uint8, ndim=4)
            shape = self._images.shape
            self._configure(attrs)
            count = self.ground_truth.num_images if self.ground_truth is not None else shape[0]
            expected = (count, IMAGE_SIZE, IMAGE_SIZE, self.channels)
            if shape != expected or count == 0:
                raise DatasetError(f"{self.path}: images has shape {shape} {self._images.dtype}, "
                                   f"expected {expected} uint8")
            # a forged shape (millions of images in a small file) is refused before any read
            trust.stored(self.path, self._images, "images", DatasetError)
            if self.ground_truth is not None:
                _check_factor_arrays(self.path, self._file, self.ground_truth)
            if "source_names" in self._file:
                names = self._file["source_names"]
                if (not isinstance(names, h5py.Dataset) or h5py.check_string_dtype(names.dtype) is None
                        or names.shape != (count,)):
                    raise DatasetError(f"{self.path}: source_names must be an array of {count} strings, found "
                                       f"{getattr(names, 'shape', 'a group')} {getattr(names, 'dtype', '')}")
        except DatasetError:
            self.close()
            raise
        except (OSError, KeyError, ValueError) as exc:
            self.close()
            raise DatasetError(f"{self.path}: unreadable dataset file ({exc})") from None
        self.attrs = attrs
        self._raw = self._images.chunks == (1,) + expected[1:] and not self._images.compression
        # a file without a recorded checksum (accepted with --unverified-data) is identified
        # by its images as read, and every record says nobody vouched for them
        self.content_check = None if recorded else trust.UNVERIFIED
        # the images match their checksum before any use (hashed once per file state: trust.py)
        self.content_sha256, self._hashed_at_open = self._check_content(recorded, fresh=verify)

    def _check_content(self, recorded: str | None, fresh: bool) -> tuple[str, bool]:
        try:
            sha, hashed = trust.check_content(self.path, recorded, self._image_blocks, DatasetError,
                                              recreate=f"re-create it with {self.recreate_command()}",
                                              total_bytes=int(self._images.size), fresh=fresh)
        except DatasetError:
            self.close()
            raise
        except (OSError, ValueError) as exc:
            self.close()
            raise DatasetError(f"{self.path}: unreadable dataset file ({exc})") from None
        return (recorded or sha), hashed

    def recreate_command(self) -> str:
        """How the user makes this file again (named in a refusal)."""
        return f"`disentangle data fetch {self.name}`"

    def _configure(self, attrs: dict) -> None:
        """Hook for classes whose name or channel count is read from the file (image folders)."""

    def close(self) -> None:
        f = getattr(self, "_file", None)
        if f is not None:
            f.close()
            self._file = None

    def __del__(self):
        self.close()

    @property
    def num_images(self) -> int:
        return int(self._images.shape[0])

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

    @property
    def source_names(self) -> list[str] | None:
        """The source file of each image in index order (sets converted from image files), else None."""
        if "source_names" not in self._file:
            return None
        return [s.decode() if isinstance(s, bytes) else str(s) for s in self._file["source_names"][...]]

    def _image_blocks(self):
        """/images in index order, in blocks of about 64 MB (what content_sha256 hashes):
        1-D uint8 byte runs read straight from the file where the one-image chunks lie in
        index order, back to back (as the writer lays them out: 3x faster than HDF5's
        per-chunk reads, see docs/performance.md), else arrays read through HDF5."""
        runs = self._raw_runs() if self._raw else None
        if runs is None:
            step = max(1, (64 << 20) // (IMAGE_SIZE * IMAGE_SIZE * self.channels))
            for i in range(0, self.num_images, step):
                yield self._images[i:i + step]
            return
        with open(self.path, "rb") as fh:
            for offset, length in runs:
                fh.seek(offset)
                data = fh.read(length)
                if len(data) != length:
                    raise DatasetError(f"{self.path}: images end before their last chunk (truncated file)")
                yield np.frombuffer(data, np.uint8)

    def _raw_runs(self, block_bytes: int = 64 << 20) -> list[tuple[int, int]] | None:
        """(file offset, length) of the image chunks in index order, merged where adjacent,
        each at most ``block_bytes``; None where HDF5 does not list them (older h5py) or a
        chunk is filtered or of another size."""
        n, image_bytes = self.num_images, IMAGE_SIZE * IMAGE_SIZE * self.channels
        offsets = np.full(n, -1, np.int64)
        odd = []

        def seen(info):
            if info.size != image_bytes or info.filter_mask != 0:
                odd.append(info)
            offsets[info.chunk_offset[0]] = info.byte_offset
        try:
            self._images.id.chunk_iter(seen)
        except (AttributeError, RuntimeError, OSError, ValueError):
            return None
        if odd or (offsets < 0).any():
            return None
        runs: list[tuple[int, int]] = []
        starts = np.flatnonzero(np.diff(offsets, prepend=-image_bytes) != image_bytes)
        for a, b in zip(starts, np.append(starts[1:], n)):
            per_block = max(1, block_bytes // image_bytes)
            for i in range(int(a), int(b), per_block):
                runs.append((int(offsets[i]), (min(int(b), i + per_block) - i) * image_bytes))
        return runs

    def verify(self) -> None:
        """Hash /images in index order against content_sha256, reading the whole file
        (`data info`), unless this open just did. A file accepted unverified has no
        recorded checksum to compare with."""
        if self.content_check == trust.UNVERIFIED or self._hashed_at_open:
            return
        self._check_content(self.content_sha256, fresh=True)
        self._hashed_at_open = True

    @property
    def provenance(self) -> dict:
        return {"dataset": self.name, "source": str(self.attrs.get("source")), "path": str(self.path),
                "content_sha256": self.content_sha256,
                **({"content_check": self.content_check} if self.content_check else {}),
                "source_files": json.loads(self.attrs.get("source_files", "[]")),
                "verified": json.loads(self.attrs.get("verified", "{}")),
                "num_images": self.num_images,
                "factor_sizes": list(self.ground_truth.factor_sizes) if self.ground_truth is not None else None,
                **({"preprocessing": json.loads(self.attrs["preprocessing"])} if "preprocessing" in self.attrs else {})}


def _ground_truth_of(path: Path, attrs: dict) -> GroundTruth | None:
    """The grid the ``ground_truth`` attribute declares (null: a set without factors),
    each part checked, one line naming it."""
    d = trust.json_attr(path, attrs, "ground_truth", DatasetError, (dict, type(None)))
    if d is None:
        return None
    values = trust.factor_values(path, d.get("factor_values"), "ground_truth.factor_values", DatasetError)
    names = trust.factor_names(path, d.get("factor_names"), "ground_truth.factor_names", len(values), DatasetError)
    official = None
    if d.get("official_classes") is not None:
        official = trust.factor_classes(path, d["official_classes"], "ground_truth.official_classes",
                                        [len(v) for v in values], DatasetError)
    nuisance = d.get("nuisance", [])
    if not isinstance(nuisance, list):
        raise DatasetError(f"{path}: ground_truth.nuisance is {nuisance!r:.40}, expected a list")
    entries = []
    for k, n in enumerate(nuisance):
        size = n.get("size") if isinstance(n, dict) else None
        if (not isinstance(n, dict) or not isinstance(n.get("name"), str) or not isinstance(n.get("distribution"), str)
                or not (size is None or (isinstance(size, int) and not isinstance(size, bool) and size >= 1))):
            raise DatasetError(f"{path}: ground_truth.nuisance[{k}] is {n!r:.60}, expected "
                               f"{{name: string, distribution: string, size: a positive integer or null}}")
        entries.append(Nuisance(n["name"], n["distribution"], size))
    try:
        return GroundTruth(names, values, official, tuple(entries))
    except ParameterError as exc:
        raise DatasetError(f"{path}: ground_truth: {exc}") from None


def _check_provenance_attrs(path: Path, attrs: dict) -> None:
    """What a run records about the file: strings, and JSON of the right kind."""
    trust.string_attrs(path, attrs, ("source", "converter", "name", "kind", "source_path", "object_files"),
                       DatasetError, required=("source",))
    trust.json_attr(path, attrs, "source_files", DatasetError, list, required=False)
    trust.json_attr(path, attrs, "verified", DatasetError, dict, required=False)
    trust.json_attr(path, attrs, "preprocessing", DatasetError, required=False)
    ignored = attrs.get("ignored_files", 0)
    if not isinstance(ignored, int) or isinstance(ignored, bool) or ignored < 0:
        raise DatasetError(f"{path}: attribute ignored_files is {ignored!r:.40}, expected a count")


def _check_factor_arrays(path: Path, f, gt: GroundTruth) -> None:
    """/factor_classes (N, K + M) and /factor_values (N, K) hold the grid the
    ``ground_truth`` attribute declares, row for row, and finite values."""
    k = gt.num_factors
    m = len(gt.discrete_nuisance)

    def classes(idx):
        return np.concatenate([gt.classes_of(idx), gt.nuisance_classes_of(idx)], axis=1)

    trust.rows_match_grid(path, f, [("factor_classes", k + m, classes, "i"),
                                    ("factor_values", k, lambda idx: gt.values_of(gt.classes_of(idx)), "f")],
                          gt.num_images, DatasetError)


def write_image_file(out, name: str, ground_truth: GroundTruth | None, channels: int,
                     chunks: Iterable[np.ndarray], attrs: dict,
                     progress: Callable[[int], None] | None = None, *, num_images: int | None = None,
                     source_names: list[str] | None = None,
                     late_attrs: Callable[[], dict] | None = None) -> Path:
    """Write a ``disentangle-images-1`` file atomically, streaming: ``chunks`` yields
    (n, 64, 64, C) uint8 arrays in index order. Written straight to a temporary file (an
    MPI3D file is 12.7 GB: no in-memory build); free space is checked first.

    Without factors (``ground_truth`` None) give ``num_images``; ``source_names`` (one per
    image) is stored as /source_names; ``late_attrs()`` is called once all images are
    written (for records computed while streaming, e.g. a digest of the source files)."""
    import h5py
    out = Path(out)
    if ground_truth is None and not num_images:
        raise ValueError("write_image_file: a dataset without ground truth needs num_images > 0")
    n = ground_truth.num_images if ground_truth is not None else int(num_images)
    if source_names is not None and len(source_names) != n:
        raise ValueError(f"write_image_file: {len(source_names)} source names for {n} images")
    check_writable(out, need_bytes=int(n * IMAGE_SIZE * IMAGE_SIZE * channels * 1.02) + (1 << 20))
    sha = trust.ContentDigest()
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
                sha.update(chunk)
                i += len(chunk)
                if progress is not None:
                    progress(len(chunk))
            if i != n:
                raise DatasetError(f"{out}: wrote {i} images, expected {n}")
            if ground_truth is not None:
                classes = ground_truth.all_classes()
                nuis = ground_truth.nuisance_classes_of(np.arange(n))
                f.create_dataset("factor_classes", data=np.concatenate([classes, nuis], axis=1),
                                 compression="gzip")
                f.create_dataset("factor_values", data=ground_truth.values_of(classes), compression="gzip")
            if source_names is not None:
                f.create_dataset("source_names", data=np.array(source_names, dtype=object),
                                 dtype=h5py.string_dtype(), compression="gzip")
            extra = late_attrs() if late_attrs is not None else {}
            f.attrs.update({"format": IMAGES_FORMAT, "dataset": name,
                            "ground_truth": json.dumps(ground_truth.to_json() if ground_truth is not None else None),
                            "content_sha256": sha.hexdigest(), **attrs, **extra})
    return out
