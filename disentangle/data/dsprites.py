"""dSprites files: the official download (verify, convert), the rendered file, and the
dataset object that serves images by index.

Dataset file layout (HDF5, one file per source, e.g. data/dsprites.h5 for the official
file and data/dsprites-rendered.h5 for the renderer's)::

    /images_packed     (N, 512) uint8   numpy.packbits of each 64x64 {0,1} image, row-major
    /latents_classes   (N, 6)   int64   official columns: color, shape, scale, orientation, posX, posY
    /latents_values    (N, 6)   float64
    attrs: format, source ("official" | "rendered"), source_checksum (md5 of the npz, for
           official), renderer_version (rendered), content_sha256 (of images_packed),
           factor_names / factor_values / official_classes (JSON: the grid it holds),
           pos_y_top (posY index 0 = top rows)

Bit-packing keeps the full dataset at 377 MB in memory (3 GB as uint8), so the whole
pipeline stays well under 2 GB. A file may hold a sub-grid of dSprites (tests use tiny
ones); its :class:`GroundTruth` says which.

Finding the dataset (:func:`resolve_data_path`): an explicit path, else the
``DISENTANGLE_DATA`` environment variable, else ``data/dsprites.h5`` (official) and then
``data/dsprites-rendered.h5`` in the working directory.
"""
from __future__ import annotations

import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from disentangle.data import trust
from disentangle.data.ground_truth import DSPRITES_FACTOR_NAMES, DSPRITES_FACTOR_SIZES, GroundTruth
from disentangle.data.render import (IMAGE_SIZE, PACKED_ROW_BYTES, RENDERER_VERSION, pack_images,
                                     render_packed, unpack_images)
from disentangle.errors import UserError
from disentangle.io import atomic_h5, atomic_path, check_writable, file_digest, refuse_non_regular

FILE_FORMAT = "disentangle-dsprites-1"
OFFICIAL_NPZ_NAME = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
OFFICIAL_URL = ("https://github.com/deepmind/dsprites-dataset/raw/"
                "fa310c66517cfc1939d77fe17c725154efc97127/" + OFFICIAL_NPZ_NAME)
OFFICIAL_MD5 = "7da33b31b13a06f4b04a70402ce90c2e"
DATA_ENV_VAR = "DISENTANGLE_DATA"
DEFAULT_OFFICIAL_PATH = Path("data/dsprites.h5")
DEFAULT_RENDERED_PATH = Path("data/dsprites-rendered.h5")
PACKED_BYTES = IMAGE_SIZE * PACKED_ROW_BYTES
_CHUNK_ROWS = 8192


class DataError(UserError):
    """A dataset problem the user can fix; the message is one line naming the file."""


# --------------------------------------------------------------------------- the dataset
class DSpritesData:
    """A dSprites file in memory: bit-packed images served by index.

    ``ground_truth`` maps image indices to factor classes; ``provenance`` is what runs
    record about the data they used.
    """

    def __init__(self, path: str | os.PathLike, load_images: bool = True, verify: bool = False):
        import h5py
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"{self.path}: no such dataset file (run `disentangle data render` "
                            f"or `disentangle data fetch`)")
        try:
            with h5py.File(self.path, "r") as f:
                attrs = trust.plain_attrs(self.path, f.attrs, DataError)
                if attrs.get("format") != FILE_FORMAT:
                    raise DataError(f"{self.path}: not a disentangle dSprites file "
                                    f"(format {attrs.get('format')!r}, expected {FILE_FORMAT!r})")
                self.ground_truth = _ground_truth_of(self.path, attrs)
                _check_provenance_attrs(self.path, attrs)
                recorded = trust.recorded_checksum(self.path, attrs, DataError)
                n = self.ground_truth.num_images
                images = trust.array(self.path, f, "images_packed", DataError, dtype=np.uint8, ndim=2)
                if images.shape != (n, PACKED_BYTES):
                    raise DataError(f"{self.path}: images_packed has shape {images.shape}, "
                                    f"expected ({n}, {PACKED_BYTES}) for the grid its attributes declare")
                trust.stored(self.path, images, "images_packed", DataError)
                _check_latents(self.path, f, self.ground_truth)
                if load_images:
                    trust.fits_memory(self.path, "images_packed", n * PACKED_BYTES, n, DataError)
                self.packed = images[...] if load_images else None
                computed = None
                if self.packed is not None:
                    # the images match their checksum before any use (hashed once per file
                    # state, remembered across processes: trust.check_content); a file
                    # without one (accepted with --unverified-data): its images as read,
                    # hashed, are its identity, and every record says nobody vouched for them
                    computed, _ = trust.check_content(
                        self.path, recorded, lambda: iter((self.packed,)), DataError,
                        what="images_packed does not match", recreate="render or fetch it again",
                        fresh=verify)
        except DataError:
            raise
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{self.path}: unreadable dataset file ({exc})") from None
        self.attrs = attrs
        self.source = attrs["source"]
        self.content_check = None if recorded else trust.UNVERIFIED
        self.content_sha256 = recorded or computed

    @property
    def num_images(self) -> int:
        return self.ground_truth.num_images

    @property
    def provenance(self) -> dict:
        """What a run records: source, checksums, renderer version, path, grid."""
        p = {"source": self.source, "path": str(self.path),
             "content_sha256": self.content_sha256,
             "num_images": self.num_images,
             "factor_sizes": list(self.ground_truth.factor_sizes)}
        if self.source == "official":
            p["source_checksum"] = self.attrs.get("source_checksum")
        else:
            p["renderer_version"] = self.attrs.get("renderer_version")
        if self.content_check:
            p["content_check"] = self.content_check
        return p

    @property
    def source_label(self) -> str:
        """Short name for tables and captions, e.g. 'official' or 'rendered (dsprites-render-1)'."""
        if self.source == "official":
            return "official"
        return f"rendered ({self.attrs.get('renderer_version')})"

    def packed_images(self, indices) -> np.ndarray:
        return self.packed[np.asarray(indices, dtype=np.int64)]

    def images(self, indices) -> np.ndarray:
        """(n, 64, 64) uint8 in {0, 1}."""
        return unpack_images(self.packed_images(indices))


def _ground_truth_of(path: Path, attrs: dict) -> GroundTruth:
    """The grid the file's attributes declare, each attribute checked (one line naming it)."""
    values = trust.factor_values(path, trust.json_attr(path, attrs, "factor_values", DataError),
                                 "factor_values", DataError)
    names = trust.factor_names(path, trust.json_attr(path, attrs, "factor_names", DataError),
                               "factor_names", len(values), DataError)
    if names != DSPRITES_FACTOR_NAMES:
        raise DataError(f"{path}: factor_names are {list(names)}, expected dSprites' {list(DSPRITES_FACTOR_NAMES)}")
    official = trust.factor_classes(path, trust.json_attr(path, attrs, "official_classes", DataError),
                                    "official_classes", [len(v) for v in values], DataError,
                                    bounds=DSPRITES_FACTOR_SIZES)
    return GroundTruth(names, values, official)


def _check_provenance_attrs(path: Path, attrs: dict) -> None:
    """What a run records about the file: strings (and pos_y_top a boolean)."""
    trust.string_attrs(path, attrs, ("source", "source_checksum", "renderer_version"), DataError,
                       required=("source",))
    if attrs["source"] not in ("official", "rendered"):
        raise DataError(f"{path}: attribute source is {attrs['source']!r}, expected 'official' or 'rendered'")
    if "pos_y_top" in attrs and not isinstance(attrs["pos_y_top"], bool):
        raise DataError(f"{path}: attribute pos_y_top is {attrs['pos_y_top']!r}, expected a boolean")
    row = attrs.get("pos_y_class0_mean_row")
    if row is not None and not (isinstance(row, (int, float)) and np.isfinite(row)):
        raise DataError(f"{path}: attribute pos_y_class0_mean_row is {row!r}, expected a finite number")


def _check_latents(path: Path, f, gt: GroundTruth) -> None:
    """latents_classes / latents_values (N, 6, the official color column first) hold the
    grid the attributes declare, row for row, and finite values."""
    def classes(idx):
        c = gt.classes_of(idx)
        return np.concatenate([np.zeros((len(idx), 1), np.int64)]
                              + [gt.official_classes[k][c[:, k:k + 1]] for k in range(gt.num_factors)], axis=1)

    def values(idx):
        return np.concatenate([np.ones((len(idx), 1)), gt.values_of(gt.classes_of(idx))], axis=1)

    trust.rows_match_grid(path, f, [("latents_classes", 6, classes, "i"), ("latents_values", 6, values, "f")],
                          gt.num_images, DataError)


def resolve_data_path(explicit: str | os.PathLike | None = None) -> Path:
    """The dataset rule: explicit path, else $DISENTANGLE_DATA, else data/dsprites.h5
    (official), else data/dsprites-rendered.h5."""
    if explicit:
        return Path(explicit)
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env)
    for candidate in (DEFAULT_OFFICIAL_PATH, DEFAULT_RENDERED_PATH):
        if candidate.is_file():
            return candidate
    raise DataError(f"no dataset found: pass --data, set {DATA_ENV_VAR}, or create "
                    f"{DEFAULT_RENDERED_PATH} with `disentangle data render`")


def load_dsprites(path: str | os.PathLike | None = None) -> DSpritesData:
    return DSpritesData(resolve_data_path(path))


# --------------------------------------------------------------------------- writing
def _write_dataset_file(out: str | os.PathLike, ground_truth: GroundTruth, packed_chunks,
                        attrs: dict | Callable[[], dict]) -> Path:
    """Write the HDF5 layout atomically. ``packed_chunks`` yields (n, 512) uint8 arrays
    in index order; ``attrs`` (or a function returning them, called once every chunk is
    written) are stored before the file is renamed into place."""
    out = Path(out)
    n = ground_truth.num_images
    classes = ground_truth.all_classes()
    official = np.stack([ground_truth.official_classes[k][classes[:, k]]
                         for k in range(ground_truth.num_factors)], axis=1)
    latents_classes = np.concatenate([np.zeros((n, 1), np.int64), official], axis=1)
    latents_values = np.concatenate([np.ones((n, 1)), ground_truth.values_of(classes)], axis=1)
    sha = trust.ContentDigest()
    with atomic_h5(out) as f:
        ds = f.create_dataset("images_packed", shape=(n, PACKED_BYTES), dtype=np.uint8,
                              chunks=(min(n, _CHUNK_ROWS), PACKED_BYTES), compression="lzf")
        i = 0
        for chunk in packed_chunks:
            ds[i:i + len(chunk)] = chunk
            sha.update(chunk)
            i += len(chunk)
        if i != n:
            raise DataError(f"{out}: wrote {i} images, expected {n}")
        f.create_dataset("latents_classes", data=latents_classes, compression="lzf")
        f.create_dataset("latents_values", data=latents_values, compression="lzf")
        f.attrs.update({
            "format": FILE_FORMAT,
            "factor_names": json.dumps(list(ground_truth.factor_names)),
            "factor_values": json.dumps([v.tolist() for v in ground_truth.factor_values]),
            "official_classes": json.dumps([c.tolist() for c in ground_truth.official_classes]),
            "content_sha256": sha.hexdigest(),
            **(attrs() if callable(attrs) else attrs),
        })
    return out


def render_dataset(out: str | os.PathLike = DEFAULT_RENDERED_PATH,
                   ground_truth: GroundTruth | None = None, pos_y_top: bool = True,
                   progress: Callable[[int], None] | None = None) -> Path:
    """Render a dSprites grid (default: all 737,280 images) into a dataset file."""
    gt = ground_truth or GroundTruth.dsprites()
    check_writable(out)  # before minutes of rendering
    packed = render_packed(gt, pos_y_top=pos_y_top, progress=progress)
    chunks = (packed[i:i + _CHUNK_ROWS] for i in range(0, len(packed), _CHUNK_ROWS))
    return _write_dataset_file(out, gt, chunks, {
        "source": "rendered", "renderer_version": RENDERER_VERSION, "pos_y_top": bool(pos_y_top)})


# --------------------------------------------------------------------------- official file
def download(url: str, out: str | os.PathLike, progress: Callable[[int, int | None], None] | None = None,
             timeout: float = 60.0) -> Path:
    """Download ``url`` to ``out`` atomically; a short or failed transfer leaves nothing."""
    from disentangle.data.sources import copy_response
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as fh:
                total = resp.headers.get("Content-Length")
                total = int(total) if total is not None else None
                got = copy_response(resp, fh, 0, total, progress)
                if total is not None and got != total:
                    raise DataError(f"{url}: download truncated ({got} of {total} bytes); nothing was written")
    except DataError:
        raise
    except http.client.IncompleteRead as exc:
        raise DataError(f"{url}: download truncated ({len(exc.partial)} bytes read before the connection "
                        f"closed); nothing was written") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DataError(f"{url}: download failed ({reason}); nothing was written") from None
    return out


def _npz_member_reader(zf: zipfile.ZipFile, name: str, path: Path):
    """Open one .npy member of an npz as a stream: (file object, shape, dtype).
    Streaming keeps memory low: the official imgs array is 3 GB uncompressed."""
    member = name + ".npy"
    if member not in zf.namelist():
        raise DataError(f"{path}: missing key {name!r} (has {sorted(n[:-4] for n in zf.namelist())})")
    fh = zf.open(member)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise DataError(f"{path}: key {name!r} uses npy format {version}, unsupported")
    if fortran or dtype.hasobject:
        raise DataError(f"{path}: key {name!r} has an unsupported layout")
    return fh, shape, dtype


def _read_rows(fh, dtype, row_shape, n_rows, path: Path, name: str) -> np.ndarray:
    row_bytes = int(np.prod(row_shape)) * dtype.itemsize
    buf = fh.read(row_bytes * n_rows)
    if len(buf) != row_bytes * n_rows:
        raise DataError(f"{path}: key {name!r} is truncated")
    return np.frombuffer(buf, dtype=dtype).reshape((n_rows,) + tuple(row_shape))


def _grid_from_classes(latents_classes: np.ndarray, latents_values: np.ndarray, path: Path) -> GroundTruth:
    """Recover the factor grid the file holds and check its rows are in index order."""
    if latents_classes.ndim != 2 or latents_classes.shape[1] != 6:
        raise DataError(f"{path}: latents_classes has shape {latents_classes.shape}, expected (N, 6)")
    if latents_values.shape != latents_classes.shape:
        raise DataError(f"{path}: latents_values has shape {latents_values.shape}, "
                        f"expected {latents_classes.shape}")
    factor_classes = latents_classes[:, 1:]
    official, values = [], []
    for k in range(5):
        cls, first = np.unique(factor_classes[:, k], return_index=True)
        official.append(cls)
        values.append(latents_values[first, k + 1])
    gt = GroundTruth(DSPRITES_FACTOR_NAMES, tuple(values), tuple(official))
    expected = np.stack([gt.official_classes[k][c] for k, c in enumerate(gt.all_classes().T)], axis=1) \
        if gt.num_images == len(latents_classes) else None
    if expected is None or not np.array_equal(expected, factor_classes):
        raise DataError(f"{path}: latents are not a complete factor grid in dSprites order")
    return gt


def convert_npz(npz_path: str | os.PathLike, out: str | os.PathLike, source_checksum: str,
                progress: Callable[[int], None] | None = None) -> Path:
    """Convert an official-format npz to the dataset file, streaming the images (never
    unpickles: the npz's pickled metadata is not read)."""
    npz_path = Path(npz_path)
    try:
        zf = zipfile.ZipFile(npz_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{npz_path}: not a readable npz file ({exc})") from None
    with zf:
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                for key in ("latents_classes", "latents_values"):
                    if key not in z.files:
                        raise DataError(f"{npz_path}: missing key {key!r} (has {sorted(z.files)})")
                latents_classes = np.asarray(z["latents_classes"], dtype=np.int64)
                latents_values = np.asarray(z["latents_values"], dtype=np.float64)
            gt = _grid_from_classes(latents_classes, latents_values, npz_path)
            fh, shape, dtype = _npz_member_reader(zf, "imgs", npz_path)
        except DataError:
            raise
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise DataError(f"{npz_path}: corrupt npz ({exc})") from None
        if tuple(shape) != (gt.num_images, IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(f"{npz_path}: imgs has shape {tuple(shape)}, "
                            f"expected ({gt.num_images}, {IMAGE_SIZE}, {IMAGE_SIZE})")
        pos_y_rows = []

        def chunks():
            done = 0
            with fh:
                while done < gt.num_images:
                    n = min(_CHUNK_ROWS, gt.num_images - done)
                    try:
                        imgs = _read_rows(fh, dtype, shape[1:], n, npz_path, "imgs")
                    except (zipfile.BadZipFile, OSError, EOFError) as exc:
                        raise DataError(f"{npz_path}: corrupt imgs ({exc})") from None
                    if imgs.max(initial=0) > 1:
                        raise DataError(f"{npz_path}: imgs must hold values {{0, 1}}, found {imgs.max()}")
                    # posY convention check (DSPRITES.md 3.6): mean on-pixel row at posY class 0
                    sel = latents_classes[done:done + n, 5] == gt.official_classes[4][0]
                    if sel.any():
                        r = np.nonzero(imgs[sel])[1]
                        pos_y_rows.append((r.sum(), r.size))
                    done += n
                    if progress is not None:
                        progress(n)
                    yield pack_images(imgs)

        def attrs() -> dict:
            # computed from every chunk, stored before the atomic rename (no edit afterwards)
            out_attrs = {"source": "official", "source_checksum": source_checksum}
            total = sum(s for s, _ in pos_y_rows)
            count = sum(c for _, c in pos_y_rows)
            if count:
                mean_row = total / count
                # the official posY 0 sprites sit near row 16 (top) or row 48 (bottom);
                # on a sub-grid the first posY class may be elsewhere, so only record the value
                out_attrs["pos_y_class0_mean_row"] = float(mean_row)
                out_attrs["pos_y_top"] = bool(mean_row < IMAGE_SIZE / 2)
            return out_attrs

        path = _write_dataset_file(out, gt, chunks(), attrs)
    return path


def fetch_official(out: str | os.PathLike = DEFAULT_OFFICIAL_PATH, url: str = OFFICIAL_URL,
                   md5: str = OFFICIAL_MD5, keep_npz: bool = False,
                   download_progress=None, convert_progress=None) -> Path:
    """Download the official npz, verify its md5, convert it to the dataset file."""
    out = Path(out)
    refuse_non_regular(out)
    # the download's own unique name (a user's "<out>.download.npz" is never replaced or
    # deleted); --keep-npz renames it to that name only when no such file is there
    kept = out.with_name(out.name + ".download.npz")
    if keep_npz and os.path.lexists(kept):
        raise DataError(f"{kept}: exists; --keep-npz never replaces a file: move it aside")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".download.npz", dir=out.parent)
    os.close(fd)
    npz = Path(name)
    try:
        download(url, npz, progress=download_progress)
        digest = file_digest(npz, "md5")
        if digest != md5.lower():
            raise DataError(f"{url}: checksum mismatch (md5 {digest}, expected {md5}); "
                            f"nothing was written")
        path = convert_npz(npz, out, source_checksum=f"md5:{digest}", progress=convert_progress)
        if keep_npz and not os.path.lexists(kept):
            os.replace(npz, kept)
        return path
    finally:
        npz.unlink(missing_ok=True)


def dataset_info(path: str | os.PathLike) -> dict:
    """Summary of a dataset file; its images are read once to verify content_sha256
    (a damaged file is refused in one line, as train and evaluate refuse it; a file without
    one is shown as unverified where the caller accepted that, see :mod:`~disentangle.data.trust`)."""
    d = DSpritesData(path, verify=True)
    info = {"path": str(d.path), "source": d.source_label, "num_images": d.num_images,
            "factors": dict(zip(d.ground_truth.factor_names, d.ground_truth.factor_sizes)),
            "content_sha256": d.content_sha256,
            "content_check": "verified" if not d.content_check else
            f"{d.content_check} (no content_sha256 recorded in the file; the checksum shown is of the images as read)",
            "file_bytes": d.path.stat().st_size}
    if d.source == "official":
        info["source_checksum"] = d.attrs.get("source_checksum")
    if "pos_y_top" in d.attrs:
        info["pos_y_top"] = bool(d.attrs["pos_y_top"])
    return info
