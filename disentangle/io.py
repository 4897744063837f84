"""The bottom layer: run-file names, atomic file writes, JSON, file digests, the
environment record and stale-temporary cleanup.

Every file the toolkit writes goes through :func:`atomic_path` (or a helper built on
it): the content is written to a temporary name in the same directory and renamed over
the target, so a crash never leaves half a file and a reader never sees one.

Run directory (``results/<run>/``; :mod:`disentangle.rundir` owns these files)::

    config.json      full configuration, package version, data source
    checkpoint.pt    latest training state
    model.pt         final weights (state dict)
    train_log.csv    per-step log
    codes.h5         encoder mean / log-variance of every dataset image
    scores.json      one entry per metric
    status.json      state of training
    progress.json    live progress of the current step (disentangle.progress)
    sweep.log        the output of the process that ran it in a sweep
    sweep.lock       the run lock (rundir.RunLock)

This module imports nothing of the package but :mod:`disentangle.errors`.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import platform
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator

from disentangle.errors import UserError

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
TRAIN_LOG_FILE = "train_log.csv"
CODES_FILE = "codes.h5"
SCORES_FILE = "scores.json"
STATUS_FILE = "status.json"
PROGRESS_FILE = "progress.json"
LOG_FILE = "sweep.log"
LOCK_FILE = "sweep.lock"
SCORES_LOCK_FILE = ".scores.lock"
CACHE_ENV_VAR = "DISENTANGLE_CACHE"


# errno values that mean "this path cannot be written here", as opposed to a bug
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG,
                 errno.ENOTDIR, errno.ENAMETOOLONG, errno.EISDIR, errno.EBUSY, errno.EXDEV, errno.ELOOP,
                 errno.EEXIST}
# the cause in words where strerror's is unhelpful for a path the user gave
_WRITE_CAUSES = {errno.ENOTDIR: "a parent of the path is a file, not a directory",
                 errno.ELOOP: "it is a symbolic link (refused: files are never written through a link)",
                 errno.EEXIST: "a parent of the path exists and is not a directory"}


class WriteError(UserError):
    """A file could not be written: no space left, read-only file system, no permission.
    One line naming the path and the cause; nothing partial is left behind."""


def write_error(exc: OSError, path: str | os.PathLike) -> WriteError | None:
    """The WriteError for ``exc`` when it is a disk/permission failure, else None."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        cause = _WRITE_CAUSES.get(exc.errno) or os.strerror(exc.errno).lower()
        return WriteError(f"{path}: cannot write: {cause}")
    return None


def _kind(mode: int) -> str:
    return ("a directory" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a regular file")


def refuse_non_regular(target: str | os.PathLike, *, links: bool = True) -> None:
    """WriteError when ``target`` exists and is not a regular file (a device node such as
    /dev/null, a directory, a FIFO, a socket): nothing is ever renamed over one.
    ``links=False`` refuses a symbolic link too (files written in place)."""
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise (write_error(exc, target) or exc) from None
    if stat.S_ISLNK(st.st_mode):
        if not links:
            raise WriteError(f"{target}: cannot write: it is a symbolic link (refused: files are "
                             f"never written through a link)")
        return  # the rename replaces the link itself, never the file it points to
    if not stat.S_ISREG(st.st_mode):
        raise WriteError(f"{target}: cannot write: it exists and is {_kind(st.st_mode)}, not a regular "
                         f"file; choose another path")


def open_in_place(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` for a file written in place (a lock, an appended log): never through a
    symbolic link (O_NOFOLLOW), never a FIFO or device (O_NONBLOCK, then a regular-file
    check). WriteError naming the path otherwise."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as exc:
        raise (write_error(exc, path) or exc) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise WriteError(f"{path}: cannot write: it exists and is {_kind(st.st_mode)}, not a regular file")
    os.set_blocking(fd, True)
    return fd


def _temp_beside(target: Path) -> Path:
    """A new empty temporary file in ``target``'s directory (made if missing). Any failure
    to make it is a WriteError: the directory cannot take files (read-only, /proc, ...)."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        cause = _WRITE_CAUSES.get(exc.errno) or os.strerror(exc.errno or 0).lower()
        if exc.errno == errno.ENOENT:
            cause = f"cannot create files in {target.parent}"
        raise WriteError(f"{target}: cannot write: {cause}") from None
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success, fsync and rename it over
    ``target``. On any exception the temporary file is removed and ``target`` is
    untouched. A full disk or read-only directory raises :class:`WriteError`."""
    target = Path(target)
    if not str(target) or str(target) in (".", "..") or target.name in ("", ".", ".."):
        raise WriteError(f"{str(target)!r}: cannot write: not a file name")
    refuse_non_regular(target)
    tmp_path = _temp_beside(target)
    try:
        # mkstemp makes 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        refuse_non_regular(target)   # again: it may have been made meanwhile
        os.replace(tmp_path, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        converted = write_error(exc, target) if isinstance(exc, OSError) else None
        if converted is not None:
            raise converted from None
        raise


def check_writable(target: str | os.PathLike, need_bytes: int = 0) -> None:
    """Before long work whose result goes to ``target``: refuse (WriteError) when its
    directory cannot be created or written, or has less than ``need_bytes`` free."""
    target = Path(target)
    refuse_non_regular(target)
    os.unlink(_temp_beside(target))
    try:
        if need_bytes:
            st = os.statvfs(target.parent)
            free = st.f_bavail * st.f_frsize
            if free < need_bytes:
                raise WriteError(f"{target}: cannot write: no space left on device "
                                 f"(needs about {need_bytes / 1e6:.1f} MB, {free / 1e6:.1f} MB free)")
    except OSError as exc:
        raise (write_error(exc, target) or exc) from None


@contextlib.contextmanager
def atomic_h5(target: str | os.PathLike):
    """An h5py.File built in memory, written to ``target`` atomically on success.
    (HDF5 writing straight to a full disk can crash the process; a Python write fails
    with ENOSPC instead, which :func:`atomic_path` reports in one line.)"""
    import io

    import h5py
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        yield f
    write_bytes_atomic(target, buf.getbuffer())


# The files of a run directory that are written through atomic_path: a SIGKILL inside
# the write leaves ".<name>.<random suffix>.tmp" beside them.
_TRAIN_TEMP_NAMES = ("checkpoint.pt", "model.pt", "status.json", "train_log.csv", "config.json")
_EVAL_TEMP_NAMES = ("codes.h5", "scores.json")
EVAL_TEMP_MIN_AGE_S = 600.0


def clean_stale_temps(run_dir: str | os.PathLike) -> list[Path]:
    """Remove temporary files a killed writer left in ``run_dir``; return them.

    The caller holds the run's lock (sweep.RunLock), so no trainer is writing. A plain
    `evaluate` does not take that lock, so codes/scores temporaries are removed only when
    older than :data:`EVAL_TEMP_MIN_AGE_S` (a live write lasts seconds)."""
    import time
    run_dir = Path(run_dir)
    removed = []
    now = time.time()
    for name, min_age in ([(n, 0.0) for n in _TRAIN_TEMP_NAMES]
                          + [(n, EVAL_TEMP_MIN_AGE_S) for n in _EVAL_TEMP_NAMES]):
        for path in run_dir.glob(f".{name}.*.tmp"):
            try:
                if now - path.stat().st_mtime >= min_age:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue
    return removed


def cache_dir() -> Path:
    """The toolkit's cache folder (H(X) of datasets, verdicts of dataset content checks):
    ``$DISENTANGLE_CACHE`` if set, else ``$XDG_CACHE_HOME/disentangle``, else
    ``~/.cache/disentangle``. Whatever is in it is only ever a shortcut: a missing,
    unreadable or damaged cache file costs a recomputation, never a wrong result."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "disentangle"


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (model files, downloads)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    return file_digest(path, "sha256")


def write_bytes_atomic(target: str | os.PathLike, data) -> None:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def write_text_atomic(target: str | os.PathLike, text: str) -> None:
    write_bytes_atomic(target, text.encode("utf-8"))


def _json_default(obj: Any):
    # numpy scalars and arrays, Paths: JSON has no type for them
    import numpy as np
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _clean_nonfinite(obj: Any) -> Any:
    # JSON has no NaN/inf: store them as null so every reader (pandas, jq, browsers) can parse
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_nonfinite(v) for v in obj]
    return obj


def write_json_atomic(target: str | os.PathLike, obj: Any) -> None:
    obj = json.loads(json.dumps(obj, default=_json_default))  # numpy -> python first
    text = json.dumps(_clean_nonfinite(obj), indent=2, sort_keys=False, allow_nan=False)
    write_text_atomic(target, text + "\n")


MAX_JSON_BYTES = 64 << 20   # a run's JSON files are kilobytes; more is not one of ours


def json_ready(value: Any) -> Any:
    """``value`` as plain JSON values (what a JSON file's round trip gives back)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def json_digest(value: Any) -> str:
    """sha256 of ``value``'s canonical JSON (keys sorted; 1 and 1.0 as JSON writes them)."""
    text = json.dumps(json_ready(value), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content. ValueError (as json's own errors) for one too deeply nested
    (Python's parser recurses), larger than :data:`MAX_JSON_BYTES`, or not a regular file."""
    # O_NONBLOCK: a FIFO in a file's place must not hang the open
    with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"not a regular file ({_kind(st.st_mode)})")
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise ValueError(f"larger than {MAX_JSON_BYTES >> 20} MiB")
    try:
        return json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ValueError("nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text ({exc.reason})") from None


def package_version() -> str:
    from disentangle._version import __version__
    return __version__


# The vector extensions that change which floating-point kernels numpy/torch/oneDNN pick
# (and so the last bits of a result), highest first: two CPUs with the same entry run the
# same kernels. Names as /proc/cpuinfo's "flags" (x86) spell them.
CPU_ISA_LEVELS = ("avx512_bf16", "avx512_vnni", "avx512f", "avx2", "avx", "sse4_2")


def cpu_instruction_set(cpuinfo: str | None = None) -> str:
    """The machine's architecture and the highest vector extension of
    :data:`CPU_ISA_LEVELS` its CPU reports, e.g. "x86_64 avx512_bf16", "x86_64 avx2",
    "aarch64" (ARM: the architecture only). ``cpuinfo``: the text of /proc/cpuinfo (read
    when None; absent on macOS and Windows, where the architecture alone is returned)."""
    import platform
    machine = platform.machine() or "unknown"
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags = set(value.split())
            break
    best = next((level for level in CPU_ISA_LEVELS if level in flags), None)
    return f"{machine} {best}" if best else machine


def environment_info() -> dict:
    """What a run records about the software it ran on."""
    import numpy as np
    info = {"disentangle": package_version(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform(),
            "cpu_instruction_set": cpu_instruction_set()}
    with contextlib.suppress(ImportError):
        import torch
        info["torch"] = torch.__version__
    with contextlib.suppress(ImportError):
        import sklearn
        info["scikit-learn"] = sklearn.__version__
    return info


def available_memory_bytes() -> int | None:
    """The memory a new allocation can have (Linux: MemAvailable of /proc/meminfo, and the
    cgroup limit when lower); None where unknown. Used to refuse, before reading, a file
    whose declared arrays could not fit."""
    free = None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            with open(limit_file, encoding="ascii") as fh:
                text = fh.read().strip()
            if text.isdigit() and int(text) < (1 << 60):
                free = int(text) if free is None else min(free, int(text))
    return free
