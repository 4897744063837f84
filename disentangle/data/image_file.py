"""The toolkit's file of 8-bit image sets: :class:`ImageFile` reads it (every dataset but
dSprites and its variants: Shapes3D, MPI3D, smallNORB, Cars3D, CelebA, image folders),
:func:`write_image_file` writes it (the converters).

The file (format ``disentangle-images-1``)::

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

import json
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from disentangle.data import trust
from disentangle.data.datasets import IMAGE_SIZE, Dataset, DatasetError
from disentangle.data.ground_truth import GroundTruth, Nuisance
from disentangle.errors import ParameterError
from disentangle.io import atomic_path, check_writable

IMAGES_FORMAT = "disentangle-images-1"


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
