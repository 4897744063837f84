"""Evaluate run directories: metrics in, scores.json out.

:func:`evaluate_run` scores one run with the registered metrics
(:data:`disentangle.evaluation.metrics.METRICS`) and the ``info`` metric
(:func:`disentangle.evaluation.information.information_scores`), and merges one entry per
metric into the run's scores.json::

    {"<metric>": {"values": {...}, "params": {...}, "seed": int, "seconds": float,
                  "data": {source, content_sha256, renderer_version | source_checksum, path,
                           num_images, factor_sizes, matches_training_data},
                  "codes": "table" | "protocol-encode", "model_sha256": str,
                  "package": str, "evaluated": iso time}}

Every metric gets its own ``numpy.random.default_rng(seed)`` (as dlib gives each metric
a fresh ``RandomState(seed)``), so a score does not depend on which other metrics ran
with it. Each entry is written as soon as its metric finishes (atomic rename, under a
lock), so an interrupted evaluation keeps the scores it already computed.

Codes: by default the metrics read the run's codes table (:func:`get_codes`, built once
per model and dataset). With ``protocol_encode=True`` they read a
:class:`ProtocolCodes`, which encodes each requested image on the fly as the published
protocols do; the scores are the same (tests/test_evaluate.py), only slower. ``info``
always uses the table: it needs every image's posterior, not samples.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import glob
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from disentangle.errors import UserError
from disentangle.results import CONFIG_FILE, SCORES_FILE, read_json, write_json_atomic

# the five published metrics, then the information-theoretic estimates
ALL_METRICS = ("beta_vae", "factor_vae", "mig", "dci", "sap", "info")
INFO = "info"
# what a table of results shows for ``info`` (the registry metrics name their own headline)
INFO_HEADLINES = ("rate_nats", "distortion_nats")
# provenance keys copied from DSpritesData.provenance into each score entry
_DATA_KEYS = ("source", "content_sha256", "renderer_version", "source_checksum", "path",
              "num_images", "factor_sizes")


# --------------------------------------------------------------------------- names and paths
def metric_names(requested: Iterable[str]) -> list[str]:
    """Expand ``all`` and check names, keeping order and dropping repeats."""
    from disentangle.evaluation.metrics import METRICS
    known = list(METRICS) + [INFO]
    out: list[str] = []
    for name in requested:
        names = [m for m in ALL_METRICS if m in known] if name == "all" else [name]
        for n in names:
            if n not in known:
                raise UserError(f"--metric {n!r}: unknown metric (known: {', '.join(known)}, all)")
            if n not in out:
                out.append(n)
    if not out:
        raise UserError("--metric: no metric given")
    return out


def headline_keys(metric: str) -> tuple[str, ...]:
    if metric == INFO:
        return INFO_HEADLINES
    from disentangle.evaluation.metrics import get_metric
    return (get_metric(metric).headline,)


def expand_runs(patterns: Iterable[str]) -> list[Path]:
    """Run directories from paths or glob patterns (for shells that pass a quoted glob).
    A pattern that matches nothing, or a path that is not a directory, is a UserError."""
    runs: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_dir())
            if not matches:
                raise UserError(f"{pattern}: matches no run directory")
        else:
            matches = [Path(pattern)]
        for run in matches:
            if run not in runs:
                runs.append(run)
    return runs


def check_run(run_dir: str | os.PathLike) -> Path:
    from disentangle.evaluation.codes import model_path
    model_path(run_dir)
    return Path(run_dir)


def training_data(run_dir: Path) -> dict | None:
    """The dataset provenance recorded when the run trained (config.json["data"])."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        saved = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable run configuration ({exc})") from None
    data = saved.get("data") if isinstance(saved, dict) else None
    return data if isinstance(data, dict) else None


class DataCache:
    """Loads each dataset file once when several runs are evaluated together."""

    def __init__(self):
        self._loaded: dict[Path, object] = {}

    def load(self, path) -> object:
        from disentangle.data.dsprites import DSpritesData, resolve_data_path
        resolved = resolve_data_path(path).resolve()
        if resolved not in self._loaded:
            self._loaded[resolved] = DSpritesData(resolved)
        return self._loaded[resolved]


def resolve_data(run_dir: Path, data=None, cache: DataCache | None = None):
    """The dataset to evaluate on: ``data`` (a DSpritesData or a path) when given; else
    the file the run trained on when it is still there with the same content; else the
    dataset rule (--data, $DISENTANGLE_DATA, data/dsprites.h5, data/dsprites-rendered.h5).
    """
    cache = cache or DataCache()
    if data is not None and not isinstance(data, (str, os.PathLike)):
        return data
    if data is not None:
        return cache.load(data)
    trained = training_data(run_dir) or {}
    trained_path = trained.get("path")
    if trained_path and Path(trained_path).is_file():
        candidate = cache.load(trained_path)
        if candidate.provenance.get("content_sha256") == trained.get("content_sha256"):
            return candidate
    from disentangle.data.dsprites import DataError
    try:
        return cache.load(None)
    except DataError as exc:
        if trained_path and not Path(trained_path).is_file() and str(exc).startswith("no dataset found"):
            raise DataError(f"{run_dir}: the dataset it trained on, {trained_path}, is gone, and {exc}") from None
        raise


def data_record(data, run_dir: Path) -> dict:
    """The provenance stored with each score, including whether the model trained on
    this very dataset (matched by content checksum; None when the run did not record it)."""
    prov = data.provenance
    record = {k: prov[k] for k in _DATA_KEYS if k in prov}
    trained_sha = (training_data(run_dir) or {}).get("content_sha256")
    record["matches_training_data"] = (None if not trained_sha
                                       else trained_sha == prov.get("content_sha256"))
    return record


# --------------------------------------------------------------------------- scores.json
@contextlib.contextmanager
def _scores_lock(run_dir: Path):
    """Serialise read-modify-write of scores.json between processes (two evaluations
    of one run with different metrics must not drop each other's entries)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: atomic rename still protects the file itself
        yield
        return
    with open(run_dir / ".scores.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_scores(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / SCORES_FILE
    if not path.is_file():
        return {}
    try:
        scores = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable scores file ({exc}); move it aside to start afresh") from None
    if not isinstance(scores, dict):
        raise UserError(f"{path}: not a scores file (expected a JSON object)")
    return scores


def merge_scores(run_dir: str | os.PathLike, entries: Mapping[str, dict]) -> dict:
    """Merge ``entries`` into scores.json (other metrics' entries are kept); atomic."""
    run_dir = Path(run_dir)
    with _scores_lock(run_dir):
        scores = read_scores(run_dir)
        scores.update(entries)
        write_json_atomic(run_dir / SCORES_FILE, scores)
    return scores


# --------------------------------------------------------------------------- evaluation
def _split_params(metrics: list[str], params: Mapping[str, Mapping] | None) -> dict[str, dict]:
    """Each metric's overrides. Overrides for a known metric that is not being evaluated
    are ignored (one params dict can serve several calls); an unknown name is a typo."""
    from disentangle.evaluation.metrics import METRICS
    params = dict(params or {})
    unknown = sorted(set(params) - set(METRICS) - {INFO})
    if unknown:
        raise UserError(f"parameters given for unknown metric(s): {', '.join(unknown)} "
                        f"(known: {', '.join(list(METRICS) + [INFO])})")
    return {m: dict(params.get(m) or {}) for m in metrics}


def _info_params(overrides: dict) -> dict:
    from disentangle.evaluation.information import DEFAULT_PARAMS
    unknown = sorted(set(overrides) - set(DEFAULT_PARAMS))
    if unknown:
        raise UserError(f"metric 'info' has no parameter(s) {unknown}; known: {sorted(DEFAULT_PARAMS)}")
    return {**DEFAULT_PARAMS, **overrides}


def _clean_temps_if_idle(run_dir: Path) -> None:
    """Remove what a killed writer left, when no trainer or sweep worker holds the run."""
    from disentangle.results import clean_stale_temps
    from disentangle.sweep import RunLock
    lock = RunLock(run_dir)
    try:
        if not lock.acquire(tries=1, reentrant=True):
            return
    except OSError:  # a read-only run directory: nothing to clean there
        return
    try:
        clean_stale_temps(run_dir)
    finally:
        lock.release()


def evaluate_run(run_dir: str | os.PathLike, metrics: Iterable[str] = ("all",), seed: int = 0,
                 data=None, device: str = "cpu", protocol_encode: bool = False,
                 params: Mapping[str, Mapping] | None = None, batch_size: int | None = None,
                 threads: int | None = None, progress: bool = True,
                 echo: Callable[[str], None] | None = None, _data_cache: DataCache | None = None) -> dict:
    """Score one run directory; merge and return ``{metric: entry}`` (scores.json format).

    ``metrics``: names from the registry, ``info``, or ``all``. ``data``: a DSpritesData,
    a dataset path, or None (the dataset the run trained on; see :func:`resolve_data`).
    ``params``: per-metric overrides of the protocol parameters, e.g.
    ``{"mig": {"num_train": 1000}}``. ``protocol_encode``: encode sampled images on the
    fly instead of reading the codes table. ``batch_size``: encoder batch (default by
    device, see codes.py). ``threads``: torch/BLAS threads for the whole evaluation.
    """
    from disentangle.evaluation.codes import (ProtocolCodes, file_sha256, get_codes,
                                              load_run_model, model_path, resolve_device,
                                              thread_limit)
    from disentangle.evaluation.metrics import get_metric
    from disentangle.results import package_version

    say = echo or (lambda msg: None)
    run_dir = check_run(run_dir)
    _clean_temps_if_idle(run_dir)
    names = metric_names(metrics)
    overrides = _split_params(names, params)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    # check every parameter before the (possibly long) work starts
    recorded = {m: (_info_params(overrides[m]) if m == INFO else get_metric(m).record_params(overrides[m]))
                for m in names}
    dataset = resolve_data(run_dir, data, _data_cache)
    data_info = data_record(dataset, run_dir)
    if data_info["matches_training_data"] is False:
        say(f"{run_dir}: note: evaluating on {dataset.path} ({data_info['source']}), not the data the "
            f"model trained on; recorded in scores.json")
    device = resolve_device(device)
    model_sha = file_sha256(model_path(run_dir))

    results: dict[str, dict] = {}
    with thread_limit(threads):
        # the table path needs no model at all when codes.h5 is fresh
        model = load_run_model(run_dir, device) if protocol_encode or INFO in names else None
        codes = None
        if not protocol_encode or INFO in names:
            codes = get_codes(run_dir, dataset, device=device, batch_size=batch_size, progress=progress,
                              model=model)
            if codes.built:
                say(f"{run_dir}: encoded {codes.num_images} images into codes.h5 "
                    f"in {codes.encode_seconds:.1f} s")
            if codes.model_sha256 != model_sha:
                raise UserError(f"{model_path(run_dir)}: changed during evaluation; run evaluate again")
        protocol_codes = ProtocolCodes(model, dataset, device, batch_size) if protocol_encode else None
        for name in names:
            rng = np.random.default_rng(seed)
            t0 = time.perf_counter()
            if name == INFO:
                from disentangle.evaluation.information import information_scores
                values = information_scores(model, codes, dataset, rng, device=device, **overrides[name])
                mode = "table"
            else:
                spec = get_metric(name)
                source = protocol_codes if protocol_encode else codes.mean
                values = spec(source, dataset.ground_truth, rng, **overrides[name])
                mode = "protocol-encode" if protocol_encode else "table"
            seconds = time.perf_counter() - t0
            entry = {"values": values, "params": recorded[name], "seed": seed,
                     "seconds": round(seconds, 4), "data": data_info, "codes": mode,
                     "model_sha256": model_sha, "package": package_version(),
                     "evaluated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            merge_scores(run_dir, {name: entry})
            results[name] = entry
            shown = ", ".join(f"{k} {_fmt(values.get(k))}" for k in headline_keys(name))
            say(f"{run_dir}: {name}: {shown} ({seconds:.1f} s, {mode})")
    return results


def evaluate_runs(run_dirs: Iterable[str | os.PathLike], data=None, **kwargs) -> dict[Path, dict]:
    """:func:`evaluate_run` for several runs; each dataset file is loaded once. All runs
    are checked before any is evaluated, so a typo fails fast."""
    runs = [check_run(r) for r in run_dirs]
    cache = DataCache()
    return {run: evaluate_run(run, data=data, _data_cache=cache, **kwargs) for run in runs}


# --------------------------------------------------------------------------- the printed table
def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "nan" if value != value else f"{float(value):.4f}"
    return str(value)


def score_table(results: Mapping[Path, Mapping[str, dict]]) -> str:
    """Plain-text table: one row per run, one column per headline score ("metric.key")."""
    columns: list[tuple[str, str]] = []
    for entries in results.values():
        for metric in entries:
            for key in headline_keys(metric):
                if (metric, key) not in columns:
                    columns.append((metric, key))
    header = ["run"] + [f"{m}.{k}" for m, k in columns]
    rows = [[str(run)] + [_fmt(entries.get(m, {}).get("values", {}).get(k)) if m in entries else ""
                          for m, k in columns]
            for run, entries in results.items()]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    return "\n".join(lines)


def parse_param(text: str) -> tuple[str, str, object]:
    """'metric.key=value' -> (metric, key, value); value parsed as JSON when it can be
    (numbers, true/false), else kept as a string."""
    import json
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"--param {text!r}: expected METRIC.KEY=VALUE, e.g. mig.num_train=1000")
    lhs, raw = text.split("=", 1)
    metric, key = lhs.split(".", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return metric, key, value


def echo_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
