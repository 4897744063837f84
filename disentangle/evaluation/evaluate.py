"""Evaluate run directories: metrics in, scores.json out.

:func:`evaluate_run` scores one run with the registered metrics
(:data:`disentangle.evaluation.metrics.METRICS`, ``info`` included), and merges one entry
per metric into the run's scores.json::

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
protocols do; the scores are the same (tests/test_evaluate.py), only slower. For the
dSprites variants the protocol path draws a fresh nuisance per sampled image (as
disentanglement_lib does) while the table holds one seeded realisation per index; their
difference is measured in docs/datasets.md. What each
metric is given follows what its registry entry ``needs``: ``info`` always uses the table
(it needs every image's posterior, not samples) and the model.

Every option and every parameter of every selected metric is checked
(:func:`check_evaluation`) before any run is touched.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import glob
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, Mapping

import numpy as np

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics import METRICS, applicable, display_order, get_metric, run_level
from disentangle.rundir import DataCache, RunDir

# the second word of the protocol-encode nuisance generator's seed ([seed, this])
PROTOCOL_NUISANCE_STREAM = 0x6E75


def _all_metrics(available: Iterable[str] | None = None) -> list[str]:
    """What ``--metric all`` stands for: every registered run-level metric (or every one
    of ``available``) in display order, less those another selected one subsumes."""
    names = display_order(run_level() if available is None else available)
    return [n for n in names if METRICS[n].subsumed_by not in names]


ALL_METRICS = tuple(_all_metrics())


# --------------------------------------------------------------------------- names and paths
def metric_names(requested: Iterable[str], available: Iterable[str] | None = None, dataset=None) -> list[str]:
    """Expand ``all`` (to ``available``'s metrics when given) and check names, keeping
    order and dropping repeats. With a ``dataset`` that has no ground-truth factors
    (``dataset.ground_truth`` None: CelebA, an image folder), ``all`` means the metrics
    that apply to it, and a named factor metric is refused (:func:`refuse_without_factors`)."""
    known = run_level()
    factor_free = dataset is not None and getattr(dataset, "ground_truth", None) is None
    if factor_free:
        available = applicable(False, known if available is None else available)
    out: list[str] = []
    for name in requested:
        names = _all_metrics(available) if name == "all" else [name]
        for n in names:
            if n in METRICS and n not in known:
                raise ParameterError("metric", f"a study-level metric: `evaluate-study` computes it "
                                     f"(known here: {', '.join(known)}, all)", value=repr(n))
            if n not in known:
                raise ParameterError("metric", f"unknown metric (known: {', '.join(known)}, all)", value=repr(n))
            if n not in out:
                out.append(n)
    if factor_free:
        refused = [n for n in out if METRICS[n].needs_factors]
        if refused:
            raise refuse_without_factors(dataset, refused, available)
    if not out:
        raise ParameterError("metric", "no metric given")
    return out


def dataset_label(dataset) -> str:
    """The dataset's name for messages (its registry or user-given name, else its path)."""
    return str(getattr(dataset, "name", "") or getattr(dataset, "path", "") or "the dataset")


def refuse_without_factors(dataset, refused: Iterable[str], available: Iterable[str] | None = None) -> UserError:
    """The one-line refusal of factor metrics on a dataset without ground-truth factors,
    naming the dataset, the metrics and what works instead."""
    refused = list(refused)
    works = _all_metrics(applicable(False, run_level() if available is None else available))
    return UserError(f"{dataset_label(dataset)} has no ground-truth factors; {', '.join(refused)} "
                     f"{'needs' if len(refused) == 1 else 'need'} them; "
                     f"{', '.join(works + ['traversals and reconstructions'])} work")


def headline_keys(metric: str) -> tuple[str, ...]:
    return get_metric(metric).headline_keys


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


def check_run(run_dir: "RunDir | str | os.PathLike") -> RunDir:
    """The run directory, opened; UserError unless it holds a trained model and its
    configuration (without config.json the dataset and network are unknown: say so first,
    not "no dataset found")."""
    run = RunDir.of(run_dir)
    run.require_model()
    run.saved()
    return run


# --------------------------------------------------------------------------- evaluation
def _split_params(metrics: list[str], params: Mapping[str, Mapping] | None) -> dict[str, dict]:
    """Each metric's overrides. Overrides for a known metric that is not being evaluated
    are ignored (one params dict can serve several calls); an unknown name is a typo."""
    params = dict(params or {})
    for name in params:
        spec = METRICS.get(name)
        if spec is not None and spec.kind == "study":
            raise ParameterError("param", f"{name} is a study-level metric: `disentangle evaluate-study` computes "
                                 f"it over the seeds of each configuration (its parameters: "
                                 f"{', '.join(f'{name}.{k}' for k in spec.defaults)})",
                                 value=f"{name}.{', '.join(sorted(params[name] or {})) or '...'}")
    unknown = sorted(set(params) - set(run_level()))
    if unknown:
        raise ParameterError("param", f"given for unknown metric(s): {', '.join(unknown)} "
                             f"(known: {', '.join(run_level())})")
    return {m: dict(params.get(m) or {}) for m in metrics}


def _positive_int_or_none(value, parameter: str) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise ParameterError(parameter, f"must be a positive integer, got {value!r}")


@dataclasses.dataclass(frozen=True)
class EvaluationPlan:
    """What :func:`check_evaluation` accepted: metric names, each metric's overrides and
    the params to record (defaults, overrides, provenance), the seed."""

    names: list[str]
    overrides: dict[str, dict]
    recorded: dict[str, dict]
    seed: int
    # seconds a metric is expected to take on this data, where its entry can tell
    estimates: dict[str, float] = dataclasses.field(default_factory=dict)


def data_summary(dataset, code_dim: int | None = None, seed: int = 0):
    """What the registry's data checks see of ``dataset`` (see
    :class:`~disentangle.evaluation.metrics.utils.DataSummary`)."""
    from disentangle.evaluation.metrics import DataSummary
    return DataSummary(num_images=int(dataset.num_images), ground_truth=getattr(dataset, "ground_truth", None),
                       code_dim=None if code_dim is None else int(code_dim), seed=int(seed),
                       label=dataset_label(dataset))


def check_evaluation(metrics: Iterable[str] = ("all",), seed: int = 0,
                     params: Mapping[str, Mapping] | None = None, batch_size: int | None = None,
                     threads: int | None = None, dataset=None, code_dim: int | None = None) -> EvaluationPlan:
    """Check every option and every parameter of every selected metric (names, types,
    ranges, allowed values) without touching any run; UserError naming the first bad one.
    :func:`evaluate_runs` and the sweep call it before any work starts. With ``dataset``
    the metrics must apply to it (``all``: those that do; see :func:`metric_names`), and
    each metric's sizes must work on it and on ``code_dim`` code columns (when known):
    the registry's :meth:`~disentangle.evaluation.metrics.MetricSpec.check_inputs`."""
    names = metric_names(metrics, dataset=dataset)
    overrides = _split_params(names, params)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError("seed", f"must be a non-negative integer, got {seed!r}")
    _positive_int_or_none(batch_size, "batch_size")
    _positive_int_or_none(threads, "threads")
    recorded = {m: get_metric(m).record_params(overrides[m]) for m in names}
    estimates: dict[str, float] = {}
    if dataset is not None:
        summary = data_summary(dataset, code_dim, seed)
        for m in names:
            spec = get_metric(m)
            params = spec.params(overrides[m])
            spec.check_inputs(params, summary)
            seconds = spec.estimate(params, summary) if spec.estimate is not None else None
            if seconds is not None:
                estimates[m] = float(seconds)
    return EvaluationPlan(names, overrides, recorded, int(seed), estimates)


def _latent_dim(run: RunDir) -> int | None:
    """The run's code width from its configuration (None when it does not say)."""
    try:
        value = run.config().get("latent_dim")
    except (UserError, AttributeError):
        return None
    return int(value) if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else None


def check_run_files(run: RunDir) -> None:
    """Before any work: the files evaluation writes in ``run`` (codes.h5, scores.json and
    its lock) must be absent or regular files -- a directory, FIFO or device in their
    place, or a symbolic link, is refused in one line naming the path, instead of after
    the encoding and the first metric (a link is never read through or replaced)."""
    from disentangle.io import CODES_FILE, SCORES_FILE, SCORES_LOCK_FILE, refuse_non_regular
    for name in (CODES_FILE, SCORES_FILE, SCORES_LOCK_FILE):
        refuse_non_regular(run.path / name, links=False)


def _clean_temps_if_idle(run_dir: Path) -> None:
    """Remove what a killed writer left, when no trainer or sweep worker holds the run."""
    from disentangle.io import clean_stale_temps
    from disentangle.rundir import RunLock
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


def _evaluation_data(run: RunDir, data, cache: DataCache | None, say: Callable[[str], None]):
    """(the dataset to score ``run`` on, its record for scores.json); a note when it is
    not the data the model trained on."""
    dataset = run.dataset(data, cache)
    data_info = run.data_record(dataset)
    if data_info["matches_training_data"] is False:
        say(f"{run.path}: note: evaluating on {dataset.path} ({data_info['source']}), not the data the "
            f"model trained on; recorded in scores.json")
    return dataset, data_info


def evaluate_run(run_dir: "RunDir | str | os.PathLike", metrics: Iterable[str] = ("all",), seed: int = 0,
                 data=None, device: str = "cpu", protocol_encode: bool = False,
                 params: Mapping[str, Mapping] | None = None, batch_size: int | None = None,
                 threads: int | None = None, progress: bool = True,
                 echo: Callable[[str], None] | None = None, _data_cache: DataCache | None = None) -> dict:
    """Score one run directory; merge and return ``{metric: entry}`` (scores.json format).

    ``metrics``: names from the registry (``info`` included) or ``all``. ``data``: a
    DSpritesData, a dataset path, or None (the dataset the run trained on; see
    :meth:`RunDir.dataset`). ``params``: per-metric overrides of the protocol parameters,
    e.g. ``{"mig": {"num_train": 1000}}``. ``protocol_encode``: encode sampled images on
    the fly instead of reading the codes table (metrics that need ``codes``). ``batch_size``:
    encoder batch (default by device, see codes.py). ``threads``: torch/BLAS threads for
    the whole evaluation.
    """
    from disentangle.devices import resolve_device, thread_limit, tune_allocator
    from disentangle.evaluation.codes import ProtocolCodes, get_codes

    say = echo or (lambda msg: None)
    run = check_run(run_dir)
    run_dir = run.path
    # check every option and parameter before the (possibly long) work starts
    check_evaluation(metrics, seed, params, batch_size, threads)
    dataset, data_info = _evaluation_data(run, data, _data_cache, say)
    # the metrics that apply to this dataset (a set without factors refuses factor metrics),
    # and every size they draw checked against it and the code width
    plan = check_evaluation(metrics, seed, params, batch_size, threads, dataset=dataset,
                            code_dim=_latent_dim(run))
    check_run_files(run)
    _clean_temps_if_idle(run_dir)
    names, seed = plan.names, plan.seed
    specs = {m: get_metric(m) for m in names}
    needs = {n for spec in specs.values() for n in spec.needs}
    encode_codes = protocol_encode and "codes" in needs
    device = resolve_device(device)
    # the model must be the one training recorded (a tampered model.pt is refused here)
    model_sha = run.check_model()

    tune_allocator()
    with thread_limit(threads):
        # the table path needs no model at all when codes.h5 is fresh
        model = run.load_model(device)[0] if encode_codes or "model" in needs else None
        codes = None
        if "codes_table" in needs or ("codes" in needs and not protocol_encode):
            codes = get_codes(run, dataset, device=device, batch_size=batch_size, progress=progress,
                              model=model)
            if codes.built:
                say(f"{run_dir}: encoded {codes.num_images} images into codes.h5 "
                    f"in {codes.encode_seconds:.1f} s")
            if codes.model_sha256 != model_sha:
                raise UserError(f"{run.model_path}: changed during evaluation; run evaluate again")
        # a dataset with random nuisance (the dSprites variants): each protocol sample is a
        # fresh observation, its nuisance from a generator of its own (seeded by the
        # evaluation seed), so the metric's own draws stay those of the table path
        nuisance_rng = (np.random.default_rng([seed, PROTOCOL_NUISANCE_STREAM])
                        if getattr(dataset, "has_random_nuisance", False) else None)
        protocol_codes = (ProtocolCodes(model, dataset, device, batch_size, rng=nuisance_rng)
                          if encode_codes else None)
        # the inputs a registry entry may name in ``needs``, built on first use
        inputs: dict[str, Callable[[], object]] = {
            "codes": lambda: protocol_codes if protocol_encode else codes.mean,
            "ground_truth": lambda: dataset.ground_truth, "codes_table": lambda: codes,
            "model": lambda: model, "dataset": lambda: dataset}
        results = run_metrics(
            run, plan, inputs, say,
            lambda spec: {"data": data_info,
                          "codes": "protocol-encode" if protocol_encode and "codes" in spec.needs else "table",
                          "model_sha256": model_sha})
    return results


# a metric expected to take at least this long is announced with its estimate
LONG_METRIC_SECONDS = 60.0


def warning_notes(caught) -> list[str]:
    """Recorded warnings -> one line each, "Category: first line (xN)", repeats counted."""
    counts: dict[str, int] = {}
    for w in caught:
        text = str(w.message).strip().splitlines()
        line = f"{w.category.__name__}: {text[0] if text else ''}".rstrip(": ")
        counts[line] = counts.get(line, 0) + 1
    return [line if n == 1 else f"{line} (x{n})" for line, n in counts.items()]


def run_metrics(run: RunDir, plan: EvaluationPlan, inputs: Mapping[str, Callable[[], object]],
                say: Callable[[str], None], provenance: Callable[[object], dict]) -> dict:
    """Score ``plan``'s metrics on ``inputs`` (what a registry entry's ``needs`` names,
    each built on first use) and merge each entry into the run's scores.json as soon as
    it is computed. ``provenance(spec)`` gives the entry's source fields (data, codes,
    model_sha256 or codes_sha256). Shared by evaluate and :mod:`.score`."""
    from disentangle.progress import report
    from disentangle.io import package_version
    results: dict[str, dict] = {}
    for k, name in enumerate(plan.names):
        report(f"metric {name}", k, len(plan.names), "metrics")
        spec = get_metric(name)
        rng = np.random.default_rng(plan.seed)
        expected = plan.estimates.get(name)
        if expected is not None and expected >= LONG_METRIC_SECONDS:
            say(f"{run.path}: {name}: estimated {expected / 60:.0f} min on one thread (measured rates, "
                f"docs/metrics.md); progress per factor on a terminal and in a sweep's log")
        t0 = time.perf_counter()
        # a metric's warnings (a solver that stops at its protocol's iteration cap, ...)
        # are recorded with its score, whatever the caller's warning filters say: with
        # PYTHONWARNINGS=error they would otherwise abort a score the protocol defines
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            values = spec(*(inputs[k]() for k in spec.needs), rng, **plan.overrides[name])
        seconds = time.perf_counter() - t0
        notes = warning_notes(caught)
        source = provenance(spec)
        entry = {"values": values, "params": plan.recorded[name], "seed": plan.seed,
                 "seconds": round(seconds, 4), "data": source.pop("data"), "codes": source.pop("codes"),
                 **source, "package": package_version(),
                 "evaluated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        if notes:
            entry["warnings"] = notes
        for note in notes:
            say(f"{run.path}: {name}: note: {note}")
        run.merge_scores({name: entry})
        results[name] = entry
        shown = ", ".join(f"{k} {_fmt(values.get(k))}" for k in spec.headline_keys)
        flagged = " [warning]" if spec.warnings(values) else ""
        say(f"{run.path}: {name}: {shown}{flagged} ({seconds:.1f} s, {entry['codes']})")
    return results


def evaluate_runs(run_dirs: Iterable[str | os.PathLike], data=None, **kwargs) -> dict[Path, dict]:
    """:func:`evaluate_run` for several runs; each dataset file is loaded once. All runs
    and every option and metric parameter are checked before any is evaluated, so a typo
    fails fast and leaves every run untouched."""
    runs = [check_run(r) for r in run_dirs]
    check_evaluation(kwargs.get("metrics", ("all",)), kwargs.get("seed", 0), kwargs.get("params"),
                     kwargs.get("batch_size"), kwargs.get("threads"))
    cache = DataCache()
    # every run's dataset must have what its metrics need (factors) before any run starts
    for run in runs:
        check_evaluation(kwargs.get("metrics", ("all",)), kwargs.get("seed", 0), kwargs.get("params"),
                         dataset=run.dataset(data, cache), code_dim=_latent_dim(run))
        check_run_files(run)
    return {run.path: evaluate_run(run, data=data, _data_cache=cache, **kwargs) for run in runs}


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
    """Plain-text table: one row per run, one column per headline score ("metric.key").
    A score its registry entry warns about is marked (:data:`~disentangle.evaluation.metrics.FLAG_MARK`)
    and a footnote after the table says why, one line per run and metric."""
    from disentangle.evaluation.metrics import FLAG_MARK, flag_footnote
    columns: list[tuple[str, str]] = []
    for entries in results.values():
        for metric in entries:
            for key in headline_keys(metric):
                if (metric, key) not in columns:
                    columns.append((metric, key))
    flags = {(str(run), m): get_metric(m).warnings(entry.get("values", {}))
             for run, entries in results.items() for m, entry in entries.items()}
    flags = {k: v for k, v in flags.items() if v}

    def cell(run, entries, m, k):
        if m not in entries:
            return ""
        text = _fmt(entries[m].get("values", {}).get(k))
        return text + FLAG_MARK if (str(run), m) in flags else text
    header = ["run"] + [f"{m}.{k}" for m, k in columns]
    rows = [[str(run)] + [cell(run, entries, m, k) for m, k in columns] for run, entries in results.items()]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header] + rows]
    return "\n".join(lines + flag_footnote(flags))


def parse_param(text: str) -> tuple[str, str, object]:
    """'metric.key=value' -> (metric, key, value); value parsed as JSON when it can be
    (numbers, true/false), else kept as a string."""
    import json
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise ParameterError("param", "expected METRIC.KEY=VALUE, e.g. mig.num_train=1000", value=repr(text))
    lhs, raw = text.split("=", 1)
    metric, key = lhs.split(".", 1)
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return metric, key, value


def echo_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
