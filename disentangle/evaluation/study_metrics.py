"""Study-level metrics: scores that compare the runs of a study with each other.

:func:`evaluate_study` finds the runs under a results directory, groups them by
configuration (every identity field of config.json["config"] except ``seed``; the
execution fields of :data:`disentangle.config.EXECUTION_KEYS` never count), and computes
UDR (:mod:`disentangle.evaluation.metrics.udr`) within each group from the runs' codes
tables. Each run gets a ``"udr"`` entry in its scores.json with the fields every metric's
entry has (evaluate.py's docstring), plus ``"group"``: the runs it was compared with.
A configuration with a single finished run has nothing to compare with, and a run
without model.pt (unfinished, failed) is left out; both are reported, no entry written.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import time
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from disentangle.errors import ParameterError, UserError

STUDY_METRICS = ("udr",)


def configuration_key(run_dir: Path) -> str:
    """The run's configuration without seed and execution fields, as canonical JSON."""
    from disentangle.config import EXECUTION_KEYS
    from disentangle.io import CONFIG_FILE, read_json
    path = Path(run_dir) / CONFIG_FILE
    try:
        saved = read_json(path)
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable run configuration ({exc})") from None
    config = saved.get("config") if isinstance(saved, dict) else None
    if not isinstance(config, dict):
        raise UserError(f"{path}: no \"config\" object (not a run directory?)")
    identity = {k: v for k, v in config.items() if k not in EXECUTION_KEYS and k != "seed"}
    return json.dumps(identity, sort_keys=True, default=str)


def group_runs(run_dirs) -> dict[str, list[Path]]:
    """Runs grouped by :func:`configuration_key`, in the order first seen."""
    groups: dict[str, list[Path]] = {}
    for run in run_dirs:
        groups.setdefault(configuration_key(run), []).append(Path(run))
    return groups


def study_params(overrides: Mapping | None) -> dict:
    """UDR's protocol parameters with ``overrides``; unknown or bad values -> UserError."""
    from disentangle.evaluation.metrics import udr
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(udr.DEFAULTS))
    if unknown:
        raise UserError(f"metric 'udr' has no parameter(s) {unknown}; known: {sorted(udr.DEFAULTS)}")
    params = {**udr.DEFAULTS, **overrides}
    udr.check_params(params)
    return params


def evaluate_study(results_dir: str | os.PathLike, metric: str = "udr", seed: int = 0, data=None,
                   device: str = "cpu", params: Mapping | None = None, threads: int | None = None,
                   progress: bool = True,
                   echo: Callable[[str], None] | None = None) -> dict[Path, dict]:
    """Compute ``metric`` (UDR) for every run under ``results_dir`` that shares its
    configuration with at least one other run; merge each run's entry into its
    scores.json and return ``{run_dir: entry}``.

    Per group, one ``numpy.random.default_rng(seed)`` draws ``num_data_points`` image
    indices shared by all the group's models (dlib feeds every model the same images),
    then the Lasso seeds. Codes come from each run's codes table (built when missing or
    stale, as ``evaluate`` does); the KL per dimension is averaged over the same images.
    """
    from disentangle.devices import resolve_device, thread_limit
    from disentangle.evaluation.codes import get_codes
    from disentangle.rundir import DataCache, RunDir, find_runs
    from disentangle.evaluation.metrics import udr
    from disentangle.io import package_version

    say = echo or (lambda msg: None)
    if metric not in STUDY_METRICS:
        raise UserError(f"--metric {metric!r}: unknown study metric (known: {', '.join(STUDY_METRICS)})")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError("seed", f"must be a non-negative integer, got {seed!r}")
    recorded = study_params(params)
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such results directory")
    runs = find_runs(root)
    if not runs:
        raise UserError(f"{root}: holds no run directory (no config.json found)")
    device = resolve_device(device)
    finished = []
    for run in runs:            # a study may hold unfinished or failed runs: leave them out
        try:
            RunDir(run).require_model()
        except UserError as exc:
            say(f"{exc}; left out of udr")
            continue
        finished.append(run)
    groups = group_runs(finished)
    opened = {run: RunDir(run) for run in finished}
    cache = DataCache()
    out: dict[Path, dict] = {}
    with thread_limit(threads):
        for members in groups.values():
            if len(members) < 2:
                say(f"{members[0]}: udr: skipped (no other seed of this configuration)")
                continue
            t0 = time.perf_counter()
            datasets = [opened[run].dataset(data, cache) for run in members]
            shas = {d.provenance.get("content_sha256") for d in datasets}
            if len(shas) != 1:
                raise UserError(f"{members[0]}: the runs of this configuration evaluate on different "
                                f"datasets; pass --data to use one")
            dataset = datasets[0]
            rng = np.random.default_rng(int(seed))
            idx = dataset.ground_truth.index_of(
                dataset.ground_truth.sample_classes(int(recorded["num_data_points"]), rng))
            means, kls, shas_model = [], [], []
            for run in members:
                codes = get_codes(opened[run], dataset, device=device, progress=progress)
                if codes.built:
                    say(f"{run}: encoded {codes.num_images} images into codes.h5 in {codes.encode_seconds:.1f} s")
                means.append(np.asarray(codes.mean[idx], dtype=np.float64))
                kls.append(udr.mean_kl_per_dim(codes.mean[idx], codes.logvar[idx]))
                shas_model.append(codes.model_sha256)
            scores = udr.udr_scores(means, kls, rng, kl_filter_threshold=recorded["kl_filter_threshold"],
                                    lasso_alpha=recorded["lasso_alpha"])
            seconds = time.perf_counter() - t0
            names = [run.relative_to(root).as_posix() if run != root else run.name for run in members]
            for run, values, sha in zip(members, scores, shas_model):
                if opened[run].model_sha256() != sha:
                    raise UserError(f"{opened[run].model_path}: changed during evaluation; run evaluate-study again")
                entry = {"values": values,
                         "params": {**recorded, "correlation": "lasso (sklearn Lasso) and spearman",
                                    "seeds_compared": len(members)},
                         "seed": int(seed), "seconds": round(seconds, 4),
                         "data": opened[run].data_record(dataset), "codes": "table", "model_sha256": sha,
                         "package": package_version(), "group": names,
                         "evaluated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
                opened[run].merge_scores({"udr": entry})
                out[run] = entry
                say(f"{run}: udr: udr_lasso {values['udr_lasso']:.4f}, udr_spearman "
                    f"{values['udr_spearman']:.4f} ({len(members)} seeds)")
    return out


def study_table(results: Mapping[Path, dict]) -> str:
    """Plain-text table: run, seeds compared, the UDR headline scores."""
    header = ["run", "seeds", "udr.udr_lasso", "udr.udr_spearman", "udr.num_active_dims"]
    rows = [[str(run), str(len(e["group"])), f"{e['values']['udr_lasso']:.4f}",
             f"{e['values']['udr_spearman']:.4f}", str(int(e["values"]["num_active_dims"]))]
            for run, e in results.items()]
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                     for r in [header] + rows)
