"""Run-directory file names, atomic file writes, and the results table.

Every file the toolkit writes goes through :func:`atomic_path` (or a helper built on
it): the content is written to a temporary name in the same directory and renamed over
the target, so a crash never leaves half a file and a reader never sees one.

Run directory (``results/<run>/``)::

    config.json      full configuration, package version, data source
    checkpoint.pt    latest training state
    model.pt         final weights (state dict)
    train_log.csv    per-step log
    codes.h5         encoder mean / log-variance of every dataset image
    scores.json      one entry per metric
    status.json      state of training (see disentangle.rundir, which owns these files)
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import platform
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


# errno values that mean "this path cannot be written here", as opposed to a bug
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}


class WriteError(UserError):
    """A file could not be written: no space left, read-only file system, no permission.
    One line naming the path and the cause; nothing partial is left behind."""


def write_error(exc: OSError, path: str | os.PathLike) -> WriteError | None:
    """The WriteError for ``exc`` when it is a disk/permission failure, else None."""
    if isinstance(exc, OSError) and exc.errno in _WRITE_ERRNOS:
        return WriteError(f"{path}: cannot write: {os.strerror(exc.errno).lower()}")
    return None


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success, fsync and rename it over
    ``target``. On any exception the temporary file is removed and ``target`` is
    untouched. A full disk or read-only directory raises :class:`WriteError`."""
    target = Path(target)
    tmp_path = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        # mkstemp makes 0600 files; give the result the permissions a plain open() would
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException as exc:
        if tmp_path is not None:
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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        os.unlink(probe)
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


def file_digest(path: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in 1 MiB blocks (model files, downloads)."""
    import hashlib
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


def read_json(path: str | os.PathLike) -> Any:
    with open(path, "r", encoding="utf-8") as fh:
        return json.load(fh)


def package_version() -> str:
    from disentangle import __version__
    return __version__


def environment_info() -> dict:
    """What a run records about the software it ran on."""
    import numpy as np
    info = {"disentangle": package_version(), "python": platform.python_version(),
            "numpy": np.__version__, "platform": platform.platform()}
    info["cpu_instruction_set"] = __import__("disentangle.devices").devices.cpu_instruction_set()  # issue 23
    with contextlib.suppress(ImportError):
        import torch
        info["torch"] = torch.__version__
    with contextlib.suppress(ImportError):
        import sklearn
        info["scikit-learn"] = sklearn.__version__
    return info


# --------------------------------------------------------------------------- collecting runs
# Columns describing where a run's numbers come from, before its configuration columns.
SOURCE_COLUMNS = ("run", "path", "status", "data_source", "data_label", "data_sha256",
                  "num_images", "package_version")


def config_columns() -> tuple[str, ...]:
    """The configuration fields that become table columns, in display order
    (config.json["config"]): every identity field of the configuration, the seed last."""
    from disentangle.config import identity_keys
    return identity_keys()


def derived_columns() -> tuple[str, ...]:
    """Columns derived from a run's configuration (config.method_columns): its method
    and regularisation strength, the same for every method whatever its fields."""
    from disentangle.config import METHOD_COLUMNS
    return METHOD_COLUMNS


def run_columns() -> tuple[str, ...]:
    """Columns describing the run itself rather than its scores."""
    return SOURCE_COLUMNS + derived_columns() + tuple(k for k in config_columns() if k not in derived_columns())


class ResultsWarning(UserWarning):
    """A run directory whose files could not be read completely; its row has NaN there."""


def data_label(provenance: dict | None) -> str:
    """Short name of a run's data source for tables and captions.

    Matches ``DSpritesData.source_label`` ('official' / 'rendered (<renderer version>)'),
    and appends the image count when the file holds a sub-grid, so that a table never
    shows two different datasets under one name."""
    if not provenance:
        return "unknown"
    source = provenance.get("source") or "unknown"
    if source == "official":
        label = "official"
    elif source == "rendered":
        label = f"rendered ({provenance.get('renderer_version')})"
    else:
        label = str(source)
    n = provenance.get("num_images")
    full = 737_280  # the complete dSprites grid; anything else is a sub-grid
    if isinstance(n, int) and n != full:
        label += f", {n:,} images"
    return label


def _scalar_or_none(value: Any):
    # scores hold floats, ints, bools, short strings; lists/dicts (per-factor detail) are
    # not table cells
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _NOT_SCALAR


_NOT_SCALAR = object()


def score_columns(scores: dict) -> dict:
    """Flatten a scores.json dict into {"<metric>.<key>": value} (scalars only)."""
    flat = {}
    for metric, entry in scores.items():
        if not isinstance(entry, dict):
            continue
        values = entry.get("values", {})
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            value = _scalar_or_none(value)
            if value is _NOT_SCALAR:
                continue
            flat[f"{metric}.{key}"] = float("nan") if value is None else value
    return flat


def _read_run(run_dir: Path, root: Path) -> tuple[dict, list[str]]:
    row: dict[str, Any] = {"run": run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name,
                           "path": str(run_dir)}
    from disentangle.errors import UserError
    from disentangle.rundir import RunDir
    run = RunDir(run_dir)
    problems = []
    try:
        cfg_file = run.saved()
    except UserError as exc:
        problems.append(str(exc))
        cfg_file = {}
    config = cfg_file.get("config") or {}
    provenance = cfg_file.get("data") or {}
    package = cfg_file.get("package") or {}
    for key in config_columns():
        row[key] = config.get(key)
    from disentangle.config import method_columns
    row.update(method_columns(config))
    row["data_source"] = provenance.get("source")
    row["data_label"] = data_label(provenance)
    row["data_sha256"] = provenance.get("content_sha256")
    row["num_images"] = provenance.get("num_images")
    row["package_version"] = package.get("disentangle") if isinstance(package, dict) else None

    status = run.status() or {}
    row["status"] = status.get("state", "unknown")
    if status.get("unreadable"):
        problems.append(status["reason"])

    if not run.scores_path.is_file():
        problems.append(f"{run.scores_path}: missing (run not evaluated yet?)")
    else:
        try:
            row.update(score_columns(run.read_scores()))
        except UserError as exc:
            problems.append(str(exc))
    return row, problems


def find_runs(results_dir: str | os.PathLike) -> list[Path]:
    """Every directory under ``results_dir`` (itself included) holding a config.json."""
    root = Path(results_dir)
    runs = sorted({p.parent for p in root.rglob(CONFIG_FILE) if p.is_file()})
    # a run directory never contains another run: skip anything nested inside one
    return [r for r in runs if not any(parent in runs for parent in r.parents)]


def collect(results_dir: str | os.PathLike):
    """One row per run directory under ``results_dir`` (a directory with config.json).

    Columns: run (path relative to results_dir), path, status, data_source ('official' |
    'rendered'), data_label (for captions), data_sha256, num_images, package_version,
    the run's method, strength_name and strength (:func:`derived_columns`: "beta-h" ->
    beta-vae, beta; annealed-vae -> capacity_max; factor-vae -> gamma; dip-vae-* ->
    lambda_od), the configuration's identity fields (:func:`config_columns`: method, beta, ...,
    precision, seed; typed by the field's annotation) and one column per score, named
    "<metric>.<key>" as in scores.json. A run whose scores are missing or unreadable gets
    NaN there and ONE ResultsWarning naming the file; nothing raises for a bad run.
    """
    import warnings

    import numpy as np
    import pandas as pd

    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"results directory not found: {root}")
    rows = []
    for run_dir in find_runs(root):
        row, problems = _read_run(run_dir, root)
        if problems:
            warnings.warn(f"run {row['run']}: " + "; ".join(problems), ResultsWarning, stacklevel=2)
        rows.append(row)
    from disentangle.config import column_dtype, replicate_keys, setting_keys, sort_key
    columns = list(run_columns())
    df = pd.DataFrame(rows, columns=columns)
    if rows:
        df = pd.DataFrame(rows)
    score_cols = sorted(c for c in df.columns if c not in columns)
    df = df.reindex(columns=columns + score_cols)
    for col in score_cols:
        # a key missing from some runs -> NaN, numeric columns stay float; flags
        # (info.is_bound) and labels (info.likelihood) keep their type
        present = df[col].dropna()
        if len(present) and all(isinstance(v, bool) for v in present):
            continue
        converted = pd.to_numeric(df[col], errors="coerce")
        if converted.notna().sum() == df[col].notna().sum():
            df[col] = converted.astype(float)
    # configuration columns typed by their fields (a run without a key -> NaN / <NA>)
    for col in config_columns():
        dtype = column_dtype(col)
        if dtype == "float":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        elif dtype == "Int64":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["num_images"] = pd.to_numeric(df["num_images"], errors="coerce").astype("Int64")
    df["strength"] = pd.to_numeric(df["strength"], errors="coerce").astype(float)
    # the order a reader expects: by dataset, then settings, seeds last (not "b16" < "b4")
    order = ["data_label", *setting_keys(), *replicate_keys(), "run"]
    df = df.sort_values(order, na_position="last", kind="stable", key=sort_key).reset_index(drop=True)
    df = df.replace({None: np.nan})
    df.attrs["results_dir"] = str(root)
    return df
