"""What a dataset file must show before any of it is used (issue 22: never trust what is
on disk, bound every size). Shared by the dSprites file (:mod:`disentangle.data.dsprites`)
and the toolkit's image-set file (:class:`disentangle.data.image_file.ImageFile`).

- Its content checksum. A file without ``content_sha256`` cannot be checked against what
  was written (a flipped bit goes unseen), so it is refused, unless the user accepts
  unverified data explicitly (the CLI's ``--unverified-data``; in Python
  ``with accept_unverified(): ...``). Such a file's images are hashed as they are read and
  its provenance says ``content_check: "unverified"`` beside that computed checksum, so a
  run, its codes table and its scores record what was used and that nobody vouched for it.
- Its metadata: factor names a list of strings, factor values finite numbers, classes
  integers within their sizes, provenance attributes strings, JSON attributes JSON, the
  per-image factor arrays equal to the grid the attributes declare (checked in blocks).
- Its sizes: an image array must be an HDF5 dataset (not a group) of uint8 with the
  declared shape, every chunk of it stored in the file (a 200-byte file may declare 73.7 M
  images), and what is loaded whole must fit the memory available, all before anything is
  read. Each failure is one line naming the file and the attribute or array.

- Its images, against that checksum (:func:`check_content`), before their first use. The
  checksum is :class:`ContentDigest` (sha256 of the image array's bytes in index order),
  the one definition the converters record and every check recomputes. Hashing a large
  file costs seconds to minutes (MPI3D: 12.7 GB), so the result is remembered, in the
  process and in the toolkit's cache folder (:func:`disentangle.io.cache_dir`,
  ``verified/``), by the file's state: resolved path, device, inode, size and mtime_ns. A
  later open of the same state (another process, a sweep worker, a Slurm task seeing the
  same cache) skips the hash; any change to the file re-hashes it. A cache file that is
  missing, damaged or not ours only costs a re-hash.

Every check raises ``error`` (the caller's UserError subclass, so callers keep their own
error type).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import time
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from disentangle.errors import UserError

UNVERIFIED = "unverified"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_ROW_BLOCK = 65536

CONTENT_CACHE_FORMAT = "disentangle-content-1"
_CACHE_FOLDER = "verified"
# states remembered per dataset path: a file seen from several hosts of a cluster can show
# a different st_dev on each (NFS), and each host's state must stay a hit
_CACHE_STATES = 16
# hash in blocks of about this many bytes (a bounded read; the hash, not the read, dominates)
_HASH_BLOCK_BYTES = 64 << 20
# a terminal progress bar for files at least this large (a small file's bar is noise)
_BAR_MIN_BYTES = 256 << 20

_accepting_unverified = False
# content sha256 of dataset files by file state (see file_state), this process
_HASHED: dict[tuple, str] = {}
# files whose per-image factor arrays were found equal to their grid, by (path, size, mtime)
_ROWS_CHECKED: set[tuple] = set()


# --------------------------------------------------------------------------- the explicit opt-in
@contextlib.contextmanager
def accept_unverified(accept: bool = True) -> Iterator[None]:
    """Within this block, dataset files without a recorded ``content_sha256`` are opened
    (and recorded as unverified) instead of refused. ``accept=False`` refuses them again."""
    global _accepting_unverified
    before = _accepting_unverified
    _accepting_unverified = bool(accept)
    try:
        yield
    finally:
        _accepting_unverified = before


def unverified_accepted() -> bool:
    """Whether the caller accepted unverified data (see :func:`accept_unverified`)."""
    return _accepting_unverified


def file_key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def recorded_checksum(path: Path, attrs: dict, error: type[UserError]) -> str | None:
    """The file's recorded ``content_sha256``; None for a file without one that the user
    accepted unverified; otherwise the one-line refusal."""
    sha = attrs.get("content_sha256")
    if sha is None:
        if _accepting_unverified:
            return None
        raise error(f"{path}: no content_sha256 attribute, so its images cannot be checked against what "
                    f"was written; re-create it (`disentangle data render`, `data fetch`), or pass "
                    f"--unverified-data to use it as it is (runs then record it as unverified)")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        raise error(f"{path}: attribute content_sha256 is {_shown(sha)}, not a sha256 hex digest; the file "
                    f"is damaged or was edited: re-create it")
    return sha


# --------------------------------------------------------------------------- the content checksum
class ContentDigest:
    """``content_sha256``: sha256 of an image array's bytes in index order, C order, as
    stored (/images of an image-set file, /images_packed of a dSprites file). The one
    definition: the writers update it block by block as they write, the checks below
    recompute it the same way."""

    def __init__(self):
        self._sha = hashlib.sha256()

    def update(self, block: np.ndarray) -> None:
        # a C-contiguous array is hashed through its buffer, without a copy
        self._sha.update(np.ascontiguousarray(block).data)

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def file_state(path: Path) -> tuple:
    """What identifies a file's content without reading it: (resolved path, device,
    inode, size, mtime_ns). Rewriting, replacing, truncating or touching the file changes it."""
    resolved = path.resolve()
    st = os.stat(resolved)
    return (str(resolved), int(st.st_dev), int(st.st_ino), int(st.st_size), int(st.st_mtime_ns))


_STATE_KEYS = ("path", "device", "inode", "size", "mtime_ns")


def _cache_file(resolved: str) -> Path:
    from disentangle.io import cache_dir
    return cache_dir() / _CACHE_FOLDER / f"{hashlib.sha256(resolved.encode('utf-8', 'surrogateescape')).hexdigest()[:32]}.json"


def _cached_states(resolved: str) -> list[dict]:
    """The states remembered for this path; [] for a missing, unreadable, damaged or
    foreign cache file (a re-hash is the only cost)."""
    from disentangle.io import read_json
    try:
        saved = read_json(_cache_file(resolved))
    except (OSError, ValueError):
        return []
    if not isinstance(saved, dict) or saved.get("format") != CONTENT_CACHE_FORMAT \
            or not isinstance(saved.get("states"), list):
        return []
    return [e for e in saved["states"] if isinstance(e, dict) and isinstance(e.get("content_sha256"), str)
            and _SHA256.fullmatch(e["content_sha256"])]


def cached_content_sha256(state: tuple) -> str | None:
    """The content sha256 recorded for this exact file state (this process, then the
    cache folder), else None."""
    if state in _HASHED:
        return _HASHED[state]
    for entry in _cached_states(state[0]):
        if tuple(entry.get(k) for k in _STATE_KEYS) == state:
            _HASHED[state] = entry["content_sha256"]
            return entry["content_sha256"]
    return None


def _remember(state: tuple, sha: str, seconds: float) -> None:
    """Record the state's hash, in the process and in the cache folder (atomically: a
    concurrent writer's file is replaced whole, last writer wins; an unwritable cache only
    costs the next process a re-hash)."""
    from disentangle.io import write_json_atomic
    _HASHED[state] = sha
    entry = {**dict(zip(_STATE_KEYS, state)), "content_sha256": sha, "hashed_seconds": round(seconds, 3),
             "hashed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    others = [e for e in _cached_states(state[0]) if tuple(e.get(k) for k in _STATE_KEYS) != state]
    try:
        write_json_atomic(_cache_file(state[0]), {"format": CONTENT_CACHE_FORMAT,
                                                  "states": [entry, *others][:_CACHE_STATES]})
    except (OSError, UserError):
        pass


def hash_content(path: Path, blocks: Callable[[], Iterable[np.ndarray]], total_bytes: int | None = None,
                 fresh: bool = False) -> tuple[str, bool]:
    """(the content sha256 of ``path``'s images, whether they were hashed now).
    ``blocks()`` yields the image array in index order (see :class:`ContentDigest`). A
    file state seen before is not hashed again unless ``fresh`` (`data info`). Large files
    show a progress bar on a terminal and report to the run's progress sink."""
    from disentangle import progress
    state = file_state(path)
    if not fresh:
        sha = cached_content_sha256(state)
        if sha is not None:
            return sha, False
    start = time.monotonic()
    digest = ContentDigest()
    shown = progress.bar(total_bytes, f"checking {path.name}", unit="B") \
        if total_bytes is not None and total_bytes >= _BAR_MIN_BYTES else None
    done = 0
    try:
        for block in blocks():
            digest.update(block)
            done += block.nbytes
            if shown is not None:
                shown.update(block.nbytes)
            if total_bytes:
                progress.report("checking data", done, total_bytes, "bytes")
    finally:
        if shown is not None:
            shown.close()
    sha = digest.hexdigest()
    if file_state(path) == state:   # unchanged while read: the verdict holds for this state
        _remember(state, sha, time.monotonic() - start)
    return sha, True


def check_content(path: Path, recorded: str | None, blocks: Callable[[], Iterable[np.ndarray]],
                  error: type[UserError], *, what: str = "images do not match", recreate: str = "re-create it",
                  total_bytes: int | None = None, fresh: bool = False) -> tuple[str, bool]:
    """The images' content sha256 (from the cache for a file state seen before), refused
    in one line when it differs from ``recorded``; (checksum, hashed now). A file without
    a recorded checksum (accepted unverified) gets its computed one: its identity in every
    record. ``recreate``: how the user makes the file again."""
    sha, hashed = hash_content(path, blocks, total_bytes, fresh)
    if recorded is not None and sha != recorded and not hashed:
        # a remembered mismatch is re-checked: a damaged cache never refuses a good file
        sha, hashed = hash_content(path, blocks, total_bytes, fresh=True)
    if recorded is not None and sha != recorded:
        raise error(f"{path}: {what} the file's content_sha256 ({sha[:12]}... vs {recorded[:12]}... "
                    f"recorded); the file is damaged or was edited: {recreate}")
    return sha, hashed


# --------------------------------------------------------------------------- attributes
def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def plain_attrs(path: Path, h5_attrs, error: type[UserError]) -> dict:
    """The file's attributes as Python values (numpy scalars unwrapped, bytes decoded)."""
    try:
        items = list(h5_attrs.items())
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise error(f"{path}: unreadable attributes ({exc})") from None
    out = {}
    for k, v in items:
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, bytes):
            v = v.decode("utf-8", "replace")
        out[k] = v
    return out


def string_attrs(path: Path, attrs: dict, keys: Sequence[str], error: type[UserError],
                 required: Sequence[str] = ()) -> None:
    """Provenance attributes are strings (a number or an array would be recorded as one)."""
    for key in keys:
        if key not in attrs:
            if key in required:
                raise error(f"{path}: attribute {key} is missing")
            continue
        if not isinstance(attrs[key], str):
            raise error(f"{path}: attribute {key} is {_shown(attrs[key])}, expected a string")


def json_attr(path: Path, attrs: dict, key: str, error: type[UserError], kind: type | tuple | None = None,
              required: bool = True):
    """A JSON attribute, parsed; ``kind``: the type the parsed value must have."""
    if key not in attrs:
        if required:
            raise error(f"{path}: attribute {key} is missing")
        return None
    text = attrs[key]
    if not isinstance(text, str):
        raise error(f"{path}: attribute {key} is {_shown(text)}, expected JSON text")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        raise error(f"{path}: attribute {key} is not valid JSON") from None
    if kind is not None and not isinstance(value, kind):
        names = " or ".join(t.__name__ for t in (kind if isinstance(kind, tuple) else (kind,)))
        raise error(f"{path}: attribute {key} is {_shown(value)}, expected {names.replace('NoneType', 'null')}")
    return value


def factor_names(path: Path, names, key: str, count: int, error: type[UserError]) -> tuple[str, ...]:
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise error(f"{path}: {key} is {_shown(names)}, expected a list of factor names (strings)")
    if len(names) != count:
        raise error(f"{path}: {key} names {len(names)} factors, but the file's factor values give {count}")
    if len(set(names)) != len(names):
        raise error(f"{path}: {key} repeats a factor name ({names})")
    return tuple(names)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def factor_values(path: Path, values, key: str, error: type[UserError]) -> tuple[np.ndarray, ...]:
    """A list of non-empty lists of finite numbers, one per factor (its length is the
    factor's size)."""
    if not isinstance(values, list) or not values:
        raise error(f"{path}: {key} is {_shown(values)}, expected one list of values per factor")
    out = []
    for k, v in enumerate(values):
        if not isinstance(v, list) or not v or not all(_is_number(x) for x in v):
            raise error(f"{path}: {key}[{k}] is {_shown(v)}, expected a non-empty list of numbers (the factor's "
                        f"size is its length)")
        arr = np.asarray(v, dtype=np.float64)
        if not np.isfinite(arr).all():
            raise error(f"{path}: {key}[{k}] holds a value that is not finite")
        out.append(arr)
    return tuple(out)


def factor_classes(path: Path, classes, key: str, sizes: Sequence[int], error: type[UserError],
                   bounds: Sequence[int] | None = None) -> tuple[np.ndarray, ...]:
    """Per factor, its classes' indices (in a larger grid when ``bounds``): as many as the
    factor's values, distinct, increasing integers within 0..bound-1."""
    if not isinstance(classes, list) or len(classes) != len(sizes):
        raise error(f"{path}: {key} is {_shown(classes)}, expected one list of classes per factor "
                    f"({len(sizes)} factors)")
    out = []
    for k, (c, size) in enumerate(zip(classes, sizes)):
        if not isinstance(c, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in c):
            raise error(f"{path}: {key}[{k}] is {_shown(c)}, expected a list of integer classes")
        arr = np.asarray(c, dtype=np.int64)
        if len(arr) != size:
            raise error(f"{path}: {key}[{k}] has {len(arr)} classes for a factor of {size} values")
        bound = bounds[k] if bounds is not None else None
        if arr.min() < 0 or (bound is not None and arr.max() >= bound) or (np.diff(arr) <= 0).any():
            within = f" within 0..{bound - 1}" if bound is not None else " (at least 0)"
            raise error(f"{path}: {key}[{k}] must hold distinct increasing classes{within}, got {_shown(c)}")
        out.append(arr)
    return tuple(out)


def grid_count(sizes: Sequence[int]) -> int:
    """The number of images a grid declares (a Python int: never overflows)."""
    return math.prod(int(s) for s in sizes)


# --------------------------------------------------------------------------- arrays and sizes
def array(path: Path, f, key: str, error: type[UserError], dtype=None, ndim: int | None = None):
    """``f[key]`` as an HDF5 dataset (a group, a link to nothing or a missing key refused)."""
    import h5py
    try:
        obj = f.get(key)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise error(f"{path}: {key} is unreadable ({exc})") from None
    if obj is None:
        raise error(f"{path}: {key} is missing")
    if not isinstance(obj, h5py.Dataset):
        raise error(f"{path}: {key} is an HDF5 {type(obj).__name__.lower()}, expected an array")
    if dtype is not None and obj.dtype != np.dtype(dtype):
        raise error(f"{path}: {key} has dtype {obj.dtype}, expected {np.dtype(dtype)}")
    if dtype is None and obj.dtype.kind not in "iuf":
        raise error(f"{path}: {key} has dtype {obj.dtype}, expected numbers")
    if ndim is not None and obj.ndim != ndim:
        raise error(f"{path}: {key} has shape {obj.shape}, expected {ndim} dimensions")
    return obj


def stored(path: Path, ds, key: str, error: type[UserError]) -> None:
    """Every chunk the array declares is stored in the file: a forged shape (73.7 M images
    in a small file) is refused before anything is read (unstored chunks would read as
    zeros)."""
    import h5py
    declared = int(ds.size) * ds.dtype.itemsize
    if declared == 0:
        return
    try:
        layout = ds.id.get_create_plist().get_layout()
        if layout == h5py.h5d.CHUNKED:
            chunks = ds.chunks
            expected = math.prod(-(-int(n) // int(c)) for n, c in zip(ds.shape, chunks))
            have = int(ds.id.get_num_chunks())
            ok = have == expected
            have_text = f"{have:,} of its {expected:,} chunks"
        elif layout == h5py.h5d.CONTIGUOUS:
            have = int(ds.id.get_storage_size())
            ok = have == declared
            have_text = f"{have:,} bytes"
        else:   # compact: the data sits in the object header, as large as declared
            ok, have_text = True, ""
    except (OSError, ValueError, RuntimeError) as exc:
        raise error(f"{path}: {key} is unreadable ({exc})") from None
    if not ok:
        raise error(f"{path}: {key} declares {_count_text(ds.shape)} ({declared / 1e9:.3g} GB) but the file "
                    f"stores {have_text} ({path.stat().st_size:,} bytes on disk); it is truncated or its sizes "
                    f"are forged: re-create it")


def _count_text(shape) -> str:
    return f"{int(shape[0]):,} rows of {'x'.join(map(str, shape[1:])) or '1'}" if len(shape) else "a scalar"


def fits_memory(path: Path, key: str, nbytes: int, count: int, error: type[UserError]) -> None:
    """What is read whole must fit the memory available (refused before reading)."""
    from disentangle.io import available_memory_bytes
    free = available_memory_bytes()
    if free is not None and nbytes > free:
        raise error(f"{path}: {key} declares {count:,} images ({nbytes / 1e9:.3g} GB in memory), more than "
                    f"the {free / 1e9:.3g} GB of memory available")


def rows_match_grid(path: Path, f, checks: Sequence[tuple[str, int, Callable[[np.ndarray], np.ndarray], str]],
                    num_images: int, error: type[UserError]) -> None:
    """The per-image factor arrays equal what the grid declares, read in blocks (bounded
    memory). ``checks``: (array key, columns, expected(indices) -> (n, columns) array,
    dtype kind "i" or "f"). Once per file and process."""
    key_ = file_key(path)
    if key_ in _ROWS_CHECKED:
        return
    arrays = []
    for key, columns, expected, kind in checks:
        ds = array(path, f, key, error, ndim=2)
        if ds.shape != (num_images, columns):
            raise error(f"{path}: {key} has shape {ds.shape}, expected ({num_images:,}, {columns}) for the grid "
                        f"its attributes declare")
        if kind == "i" and ds.dtype.kind not in "iu":
            raise error(f"{path}: {key} has dtype {ds.dtype}, expected integer classes")
        stored(path, ds, key, error)
        arrays.append((key, ds, expected, kind))
    for start in range(0, num_images, _ROW_BLOCK):
        idx = np.arange(start, min(num_images, start + _ROW_BLOCK), dtype=np.int64)
        for key, ds, expected, kind in arrays:
            try:
                got = ds[start:start + len(idx)]
            except (OSError, ValueError) as exc:
                raise error(f"{path}: {key} is unreadable ({exc})") from None
            if kind == "f" and not np.isfinite(got).all():
                row = start + int(np.flatnonzero(~np.isfinite(got).all(axis=1))[0])
                raise error(f"{path}: {key} holds a value that is not finite (row {row:,})")
            want = expected(idx)
            same = (got == want) if kind == "i" else np.isclose(got, want, rtol=1e-9, atol=0.0)
            if not same.all():
                row = start + int(np.flatnonzero(~same.all(axis=1))[0])
                raise error(f"{path}: {key} row {row:,} is {got[row - start].tolist()}, but the grid its "
                            f"attributes declare gives {want[row - start].tolist()}: the file is inconsistent")
    _ROWS_CHECKED.add(key_)
