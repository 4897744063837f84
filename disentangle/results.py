"""Run-directory layout and atomic file writes.

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
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterator

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
MODEL_FILE = "model.pt"
TRAIN_LOG_FILE = "train_log.csv"
CODES_FILE = "codes.h5"
SCORES_FILE = "scores.json"
STATUS_FILE = "status.json"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success, fsync and rename it over
    ``target``. On any exception the temporary file is removed and ``target`` is
    untouched."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600 files; give the result the permissions a plain open() would
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
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
    with contextlib.suppress(ImportError):
        import torch
        info["torch"] = torch.__version__
    with contextlib.suppress(ImportError):
        import sklearn
        info["scikit-learn"] = sklearn.__version__
    return info
