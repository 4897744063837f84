"""Score a representation made anywhere: a codes file in, a run directory out.

``disentangle score CODES --out DIR`` (docs/score.md): CODES holds one row per dataset
image, in the dataset's index order (a .npy array; a .npz with ``codes`` or ``mean`` and
optionally ``logvar``; an .h5 with ``mean`` or ``codes`` and optionally ``logvar``, as a
run's codes.h5). Every registered metric whose ``needs`` a codes table can meet runs on
it: those that need ``("codes", "ground_truth")``, and ``info_posterior`` (rate, I_q,
total correlation) when the file has ``logvar``. ``info`` needs the decoder and the
images, and is refused.

DIR becomes a run directory like a trained one, minus the model (:class:`RunDir` owns
it): config.json holds a configuration record built from ``--label`` (the ``method``
column: the method's name) and ``--setting key=value`` (any other identity field of
:class:`disentangle.config.TrainConfig`, e.g. beta=4, seed=2), the dataset's provenance
and the codes file's; scores.json gets exactly the entries ``evaluate`` writes (one
:func:`disentangle.evaluation.evaluate.run_metrics`), with ``"codes": "file"`` and the
codes file's ``codes_sha256`` in place of ``model_sha256``. So ``report``, the plots and
the study tools read it like any run.

Everything is checked before any metric runs (the file's layout, shape, row count and
finite values, the factors file's order, the settings, every metric's parameters).
"""
from __future__ import annotations

import datetime as _dt
import os
import types
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics import METRICS, get_metric, run_level
from disentangle.rundir import DataCache, RunDir

CODES_KEYS = ("codes", "mean")      # the array of codes in an .npz / .h5, first found wins
LOGVAR_KEY = "logvar"
# what a codes file can give a metric (a registry entry's ``needs``)
CODES_FILE_INPUTS = {"codes", "ground_truth", "codes_table"}


# the largest table a codes file may declare: a dataset row count times this many columns
MAX_CODE_COLUMNS = 4096
# |logvar| beyond this overflows exp() in float32 (e**88.7 > 3.4e38): the metrics' variances
MAX_ABS_LOGVAR = 88.0


def _check_declared(path: Path, name: str, shape, dtype, num_images: int, data_path) -> None:
    """Before reading an array: its declared shape must be one row per dataset image and
    a bounded number of columns, and it must fit in memory (a 200-byte file can declare
    (1536, 10**9))."""
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2:
        raise UserError(f"{path}: {name} has shape {shape}, expected a 2-D array "
                        f"(one row per image, one column per code dimension)")
    if shape[0] != num_images:
        raise UserError(f"{path}: {name} has {shape[0]:,} rows, the dataset {data_path} has "
                        f"{num_images:,} images (one row per image, in index order)")
    if not 1 <= shape[1] <= MAX_CODE_COLUMNS:
        raise UserError(f"{path}: {name} declares {shape[1]:,} columns; a codes file has 1 to "
                        f"{MAX_CODE_COLUMNS:,} (one per code dimension)")
    from disentangle.io import available_memory_bytes
    need = shape[0] * shape[1] * max(np.dtype(dtype).itemsize, 4) * 2
    free = available_memory_bytes()
    if free is not None and need > free:
        raise UserError(f"{path}: {name} declares {need / 1e9:.1f} GB, more than the {free / 1e9:.1f} GB "
                        f"of memory available")


def _check_stored_size(path: Path, name: str, stored: int, header_end: int, shape, dtype) -> None:
    """The bytes an array's file (an .npy, or an .npz member as its zip directory declares
    it uncompressed) holds must be its header plus the array its header declares: fewer
    is a truncated file, more a crafted one (a few MB of deflated zeros can unpack to GBs)
    -- refused before any of it is read."""
    need = header_end + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if stored != need:
        what = "truncated" if stored < need else "damaged or crafted"
        raise UserError(f"{path}: {name} holds {stored:,} bytes, its header's {tuple(shape)} {np.dtype(dtype)} "
                        f"array needs {need:,} ({what} file)")


def _npy_header(fh):
    version = np.lib.format.read_magic(fh)
    reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}.get(version)
    if reader is None:
        raise ValueError(f"npy format version {version} unsupported")
    shape, _fortran, dtype = reader(fh)
    return shape, dtype


def _load_arrays(path: Path, num_images: int, data_path) -> tuple[np.ndarray, np.ndarray | None]:
    """(codes, logvar or None) of a codes file; UserError naming it otherwise. Every
    array's declared shape is checked before it is read."""
    import zipfile
    suffix = path.suffix.lower()
    if not path.is_file():
        raise UserError(f"{path}: no such codes file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: unreadable codes file (an empty file: 0 bytes)")
    try:
        if suffix == ".npy":
            with open(path, "rb") as fh:
                shape, dtype = _npy_header(fh)
                header_end = fh.tell()
            _check_declared(path, "codes", shape, dtype, num_images, data_path)
            _check_stored_size(path, "codes", path.stat().st_size, header_end, shape, dtype)
            return np.load(path, allow_pickle=False), None
        if suffix == ".npz":
            with zipfile.ZipFile(path) as zf:
                members = {n[:-4]: n for n in zf.namelist() if n.endswith(".npy")}
                key = next((k for k in CODES_KEYS if k in members), None)
                if key is None:
                    raise UserError(f"{path}: no array named {' or '.join(CODES_KEYS)} "
                                    f"(it holds: {', '.join(members) or 'nothing'})")
                for name in (key, LOGVAR_KEY):
                    if name in members:
                        with zf.open(members[name]) as fh:
                            shape, dtype = _npy_header(fh)
                            header_end = fh.tell()
                        _check_declared(path, name, shape, dtype, num_images, data_path)
                        _check_stored_size(path, name, zf.getinfo(members[name]).file_size, header_end,
                                           shape, dtype)
            with np.load(path, allow_pickle=False) as z:
                return z[key], (z[LOGVAR_KEY] if LOGVAR_KEY in z.files else None)
        if suffix in (".h5", ".hdf5"):
            import h5py
            with h5py.File(path, "r") as f:
                key = next((k for k in CODES_KEYS if k in f), None)
                if key is None:
                    raise UserError(f"{path}: no dataset named {' or '.join(CODES_KEYS)} "
                                    f"(it holds: {', '.join(f.keys()) or 'nothing'})")
                for name in (key, LOGVAR_KEY):
                    if name in f:
                        if not isinstance(f[name], h5py.Dataset):
                            raise UserError(f"{path}: {name} is a group, not an array")
                        _check_declared(path, name, f[name].shape, f[name].dtype, num_images, data_path)
                return f[key][...], (f[LOGVAR_KEY][...] if LOGVAR_KEY in f else None)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile, MemoryError) as exc:
        raise UserError(f"{path}: unreadable codes file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    raise UserError(f"{path}: unknown codes file type {suffix or '(none)'} (use .npy, .npz or .h5)")


def _check_array(path: Path, name: str, array: np.ndarray, num_images: int, data_path) -> np.ndarray:
    if array.dtype.kind not in "fiu":
        raise UserError(f"{path}: {name} has dtype {array.dtype}, expected numbers")
    if array.ndim != 2:
        raise UserError(f"{path}: {name} has shape {array.shape}, expected a 2-D array "
                        f"(one row per image, one column per code dimension)")
    if array.shape[0] != num_images:
        raise UserError(f"{path}: {name} has {array.shape[0]:,} rows, the dataset {data_path} has "
                        f"{num_images:,} images (one row per image, in index order)")
    if array.shape[1] < 1:
        raise UserError(f"{path}: {name} has no columns")
    # checked after the float32 cast the metrics see: float64 1e300 is inf there
    with np.errstate(over="ignore", invalid="ignore"):
        cast = np.asarray(array, dtype=np.float32)
    bad = ~np.isfinite(cast).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise UserError(f"{path}: {name} has NaN or infinite values (as float32) in {len(rows):,} row(s), "
                        f"first row {int(rows[0])}")
    return cast


def read_codes_file(path: str | os.PathLike, num_images: int, data_path="the dataset"):
    """The codes file's (mean (N, D) float32, logvar (N, D) float32 or None), checked
    against the dataset's image count; UserError naming the file at the first problem."""
    path = Path(path)
    mean, logvar = _load_arrays(path, num_images, data_path)
    mean = _check_array(path, "codes", mean, num_images, data_path)
    if logvar is not None:
        logvar = _check_array(path, LOGVAR_KEY, logvar, num_images, data_path)
        if logvar.shape != mean.shape:
            raise UserError(f"{path}: logvar has shape {logvar.shape}, the codes {mean.shape}")
        worst = float(np.abs(logvar).max())
        if worst > MAX_ABS_LOGVAR:
            raise UserError(f"{path}: logvar reaches {worst:g} in absolute value; exp(logvar) overflows "
                            f"float32 beyond {MAX_ABS_LOGVAR:g} (is it a variance, or a log of one?)")
    return mean, logvar


def check_factors(path: str | os.PathLike, ground_truth) -> None:
    """A user's factors array (the classes of each row of their codes) must be the
    dataset's latents_classes in index order: (N, 6) with the official color column, or
    (N, 5) without. UserError naming the file and the first row that differs."""
    path = Path(path)
    try:
        factors = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable factors file ({exc})") from None
    if isinstance(factors, np.lib.npyio.NpzFile):
        raise UserError(f"{path}: expected a .npy array of factor classes, got an .npz archive")
    classes = ground_truth.all_classes()
    official = np.stack([ground_truth.official_classes[k][classes[:, k]]
                         for k in range(ground_truth.num_factors)], axis=1)
    k = ground_truth.num_factors
    if factors.ndim != 2 or factors.shape[0] != ground_truth.num_images or factors.shape[1] not in (k, k + 1):
        raise UserError(f"{path}: factors have shape {factors.shape}, expected ({ground_truth.num_images}, {k}) "
                        f"or ({ground_truth.num_images}, {k + 1}) with the color column (latents_classes)")
    if factors.shape[1] == k + 1:
        factors = factors[:, 1:]
    if not np.issubdtype(factors.dtype, np.number):
        raise UserError(f"{path}: factors have dtype {factors.dtype}, expected integer classes")
    differs = np.flatnonzero((factors != official).any(axis=1))
    if len(differs):
        raise UserError(f"{path}: rows are not in the dataset's index order ({len(differs):,} of "
                        f"{len(factors):,} rows differ from its latents_classes, first row "
                        f"{int(differs[0])}); reorder the codes by image index")


def parse_settings(texts: Iterable[str], label: str | None) -> dict:
    """``--label`` and ``--setting key=value`` -> the configuration record's fields, typed
    as :class:`TrainConfig` types them; UserError naming a bad one."""
    from disentangle.config import column_dtype, identity_keys
    known = [k for k in identity_keys() if k != "method"]
    out: dict = {}
    for text in texts:
        key, sep, raw = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ParameterError("setting", "expected KEY=VALUE, e.g. beta=4", value=repr(text))
        if key in ("method", "objective"):
            raise ParameterError("setting", "the method is the label parameter", value=repr(text))
        if key not in known:
            raise ParameterError("setting", f"unknown setting (known: {', '.join(known)})", value=repr(text))
        dtype = column_dtype(key)
        try:
            out[key] = float(raw) if dtype == "float" else int(raw) if dtype == "Int64" else raw
        except ValueError:
            raise ParameterError("setting", f"expected a {'number' if dtype == 'float' else 'integer'}",
                                 value=repr(text)) from None
    if label is not None and not str(label).strip():
        raise ParameterError("label", "must not be empty")
    return out


def check_settings(fields: Mapping, columns: int, codes_path) -> None:
    """``--setting`` values checked as the training configuration checks them (steps >= 1,
    a known architecture, a finite beta, ...); latent_dim, if given, must be the codes
    file's column count. ParameterError naming the setting."""
    import math

    from disentangle.config import TrainConfig
    for key, value in fields.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterError("setting", "must be a finite number", value=f"{key}={value}")
    if "latent_dim" in fields and fields["latent_dim"] != columns:
        raise ParameterError("setting", f"{codes_path} has {columns} columns (one per code dimension)",
                             value=f"latent_dim={fields['latent_dim']}")
    try:
        TrainConfig(**{**fields, "latent_dim": columns}).validate()
    except ParameterError as exc:
        raise ParameterError("setting", exc.message, value=f"{exc.parameter}={fields.get(exc.parameter)}") from None
    except (TypeError, ValueError) as exc:
        raise ParameterError("setting", str(exc).splitlines()[0]) from None


def scorable_metrics(has_logvar: bool) -> list[str]:
    """The registered metrics a codes file can feed (``info_posterior`` only with logvar)."""
    have = CODES_FILE_INPUTS if has_logvar else CODES_FILE_INPUTS - {"codes_table"}
    return [m for m, spec in METRICS.items() if set(spec.needs) <= have]


def _refusal(name: str, has_logvar: bool) -> ParameterError:
    spec = get_metric(name)
    if name == "info" or "model" in spec.needs or "dataset" in spec.needs:
        hint = (" use metric info_posterior for its posterior-only part (rate, I_q, total correlation)"
                if has_logvar else " info_posterior (rate, I_q, total correlation) needs a logvar array in CODES")
        return ParameterError("metric", f"needs the model's decoder and the images, which a codes file lacks;{hint}",
                              value=name)
    return ParameterError("metric", "needs each image's log-variance: add a 'logvar' array to CODES", value=name)


def score_codes(codes_path: str | os.PathLike, out: str | os.PathLike, metrics: Iterable[str] = ("all",),
                data=None, label: str | None = None, settings: Iterable[str] = (), seed: int = 0,
                params: Mapping[str, Mapping] | None = None, factors: str | os.PathLike | None = None,
                echo: Callable[[str], None] | None = None, dataset: str | None = None) -> dict:
    """Score a codes file and write ``out`` as a run directory (module docstring);
    returns ``{metric: entry}`` as scores.json holds them. ``dataset``: the registry name
    of the rows' dataset (default: what the ``data`` file holds, else dsprites)."""
    from disentangle.evaluation.evaluate import check_evaluation, run_metrics
    from disentangle.io import environment_info, file_sha256

    say = echo or (lambda msg: None)
    codes_path = Path(codes_path)
    run = RunDir(out)
    if not str(out).strip():
        raise ParameterError("out", "must not be empty", value=repr(str(out)))
    fields = parse_settings(settings, label)
    run.refuse_foreign("out")   # a user's own files are never overwritten
    if run.model_path.exists():
        raise UserError(f"{run.path}: holds a trained model; score it with `disentangle evaluate`")
    if codes_path.resolve().parent == run.path.resolve() and codes_path.name in ("scores.json", "config.json"):
        raise UserError(f"{codes_path}: not a codes file")
    dataset_name = dataset
    dataset = DataCache().load(data, dataset_name)
    mean, logvar = read_codes_file(codes_path, dataset.num_images, dataset.path)
    from disentangle.evaluation.evaluate import dataset_label, metric_names
    has_factors = getattr(dataset, "ground_truth", None) is not None
    if factors is not None:
        if not has_factors:
            raise UserError(f"{factors}: {dataset_label(dataset)} has no ground-truth factors to check rows against")
        check_factors(factors, dataset.ground_truth)
    has_logvar = logvar is not None
    allowed = scorable_metrics(has_logvar)
    requested = list(metrics)
    for name in requested:
        if name != "all" and name in METRICS and name not in allowed:
            raise _refusal(name, has_logvar)
    # a dataset without factors: `all` is what applies, a named factor metric is refused
    names = metric_names(requested, available=allowed, dataset=dataset)
    # every size the metrics draw, checked against the dataset and the code width
    plan = check_evaluation(names, seed, params, dataset=dataset, code_dim=int(mean.shape[1]))
    skipped = [m for m in run_level() if m not in allowed and "all" in requested
               and (has_factors or not METRICS[m].needs_factors)]
    if skipped:
        say(f"{codes_path}: not scored from a codes file: {', '.join(skipped)} "
            f"({'they need the model' if has_logvar else 'no logvar array; info needs the model'})")

    sha = file_sha256(codes_path)
    record = {"kind": "codes", "path": str(codes_path.resolve()), "sha256": sha,
              "shape": list(mean.shape), "has_logvar": has_logvar}
    check_settings(fields, int(mean.shape[1]), codes_path)
    config = {"method": str(label) if label is not None else codes_path.stem,
              "latent_dim": int(mean.shape[1]), **fields}
    name = str(dataset.provenance.get("dataset", "dsprites"))
    if name != "dsprites":      # dSprites rows keep the config they had before datasets were named
        config = {"dataset": name, **config}
    from disentangle.io import write_error
    from disentangle.rundir import RunLock
    if RunDir(run.path).has_config():   # before the lock too: a refusal leaves the directory as it was
        _refuse_other_codes(RunDir(run.path), sha, config)
    lock = RunLock(run.path)
    try:
        run.path.mkdir(parents=True, exist_ok=True)
        locked = lock.acquire()
    except OSError as exc:
        raise (write_error(exc, run.path) or exc) from None
    if not locked:
        raise ParameterError("out", f"busy: another process is scoring into it ({lock.holder()}); "
                             f"wait for it or choose another directory", value=run.path)
    try:
        return _score_locked(run, codes_path, config, record, sha, dataset, mean, logvar, plan, say)
    finally:
        lock.release()


def _refuse_other_codes(run: RunDir, sha: str, config: dict) -> None:
    previous = run.saved().get("codes") or {}
    if previous.get("sha256") != sha or run.config() != config:
        raise ParameterError("out", f"holds the scores of another codes file ({previous.get('path')}) "
                             f"or other label/settings; choose another directory", value=run.path)


def _score_locked(run: RunDir, codes_path: Path, config: dict, record: dict, sha: str, dataset,
                  mean, logvar, plan, say) -> dict:
    """score_codes' writes, under the run lock: two scorings into one directory never mix."""
    from disentangle.evaluation.evaluate import run_metrics
    from disentangle.io import environment_info
    run = RunDir(run.path)   # config.json afresh: another process may have written it
    if run.has_config():
        _refuse_other_codes(run, sha, config)
    else:
        run.write_config({"config": config, "data": dataset.provenance, "package": environment_info(),
                          "codes": record,
                          "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")})
    run.write_status("finished", reason=f"scored from the codes file {codes_path}", codes_sha256=sha)
    table = types.SimpleNamespace(mean=mean, logvar=logvar, shape=mean.shape)
    inputs = {"codes": lambda: mean, "ground_truth": lambda: dataset.ground_truth,
              "codes_table": lambda: table}
    # config.json's data is the dataset the rows describe; what the user's model trained
    # on is unknown
    data_info = {**run.data_record(dataset), "matches_training_data": None}
    return run_metrics(run, plan, inputs, say,
                       lambda spec: {"data": data_info, "codes": "file", "codes_sha256": sha})
