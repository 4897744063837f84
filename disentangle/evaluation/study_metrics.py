"""Study-level metrics: scores that compare the runs of a study with each other.

:func:`evaluate_study` finds the runs under a results directory, groups them by
configuration (every identity field of config.json["config"] except ``seed``; the
execution fields of :data:`disentangle.config.EXECUTION_KEYS` never count), and computes
UDR (:mod:`disentangle.evaluation.metrics.udr`) within each group from the runs' codes
tables. Each run gets a ``"udr"`` entry in its scores.json with the fields every metric's
entry has (evaluate.py's docstring), plus ``"group"``: the runs it was compared with.
A configuration with a single finished run has nothing to compare with, and a run
without model.pt (unfinished, failed) is left out; both are reported, no entry written.
When no configuration has two finished runs, the UserError names the runs left out and
why. Two runs of one configuration with one seed (a copied run directory) or with
byte-identical model.pt files are refused before any work, naming both directories
(:func:`check_distinct_seeds`): they would count one seed twice.
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
from disentangle.io import MODEL_FILE

def configuration_key(run_dir: Path) -> str:
    """The run's configuration without seed and execution fields, as canonical JSON."""
    from disentangle.config import EXECUTION_KEYS
    from disentangle.rundir import RunDir
    config = RunDir(run_dir).config()   # UserError naming config.json when unreadable
    identity = {k: v for k, v in config.items() if k not in EXECUTION_KEYS and k != "seed"}
    return json.dumps(identity, sort_keys=True, default=str)


def group_runs(run_dirs) -> dict[str, list[Path]]:
    """Runs grouped by :func:`configuration_key`, in the order first seen."""
    groups: dict[str, list[Path]] = {}
    for run in run_dirs:
        groups.setdefault(configuration_key(run), []).append(Path(run))
    return groups


def evaluate_study(results_dir: str | os.PathLike, metric: str = "udr", seed: int = 0, data=None,
                   device: str = "cpu", params: Mapping | None = None, threads: int | None = None,
                   progress: bool = True,
                   echo: Callable[[str], None] | None = None) -> dict[Path, dict]:
    """Compute the study-level ``metric`` (a registry entry of kind "study": UDR) for every
    run under ``results_dir`` that shares its configuration with at least one other run;
    merge each run's entry into its scores.json and return ``{run_dir: entry}``.

    Per group, one ``numpy.random.default_rng(seed)`` draws ``num_data_points`` image
    indices shared by all the group's models (dlib feeds every model the same images),
    then the Lasso seeds. Codes come from each run's codes table (built when missing or
    stale, as ``evaluate`` does); the KL per dimension is averaged over the same images.
    """
    from disentangle.devices import resolve_device, thread_limit
    from disentangle.evaluation.metrics import METRICS, study_level
    from disentangle.rundir import DataCache, RunDir, find_runs

    say = echo or (lambda msg: None)
    if metric not in study_level():
        raise ParameterError("metric", f"unknown study metric (known: {', '.join(study_level())})",
                             value=repr(metric))
    spec = METRICS[metric]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ParameterError("seed", f"must be a non-negative integer, got {seed!r}")
    recorded = spec.params(params)
    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such results directory")
    runs = find_runs(root)
    if not runs:
        raise UserError(f"{root}: holds no run directory (no config.json found)")
    device = resolve_device(device)
    finished, left_out = [], []
    for run in runs:            # a study may hold unfinished or failed runs: leave them out
        try:
            RunDir(run).require_model()
        except UserError as exc:
            say(f"{exc}; left out of {metric}")
            left_out.append(f"{run} has no {MODEL_FILE}")
            continue
        finished.append(run)
    opened = {run: RunDir(run) for run in finished}
    groups = [members for members in group_runs(finished).values() if len(members) >= 2]
    for members in groups:      # before any work: every run of a group is a distinct seed
        check_distinct_seeds([opened[run] for run in members], root)
    if not groups:
        why = f"; left out: {', '.join(left_out[:3])}" + (f" and {len(left_out) - 3} more" if len(left_out) > 3
                                                          else "") if left_out else ""
        raise UserError(f"{root}: no configuration has two or more finished runs (seeds) to compare "
                        f"({len(finished)} finished run(s) in {len(group_runs(finished))} configuration(s)){why}")
    cache = DataCache()
    out: dict[Path, dict] = {}
    with thread_limit(threads):
        for members in group_runs(finished).values():
            if len(members) < 2:
                say(f"{members[0]}: {metric}: skipped (no other seed of this configuration)")
                continue
            group = [opened[run] for run in members]
            out.update(_score_group(spec, group, root, recorded, seed, data, cache, device, progress, say))
    return out


def check_distinct_seeds(group: list, root: Path) -> None:
    """UDR compares independently trained seeds: two runs of one configuration with one
    seed (a copied run directory), or with byte-identical model.pt files, are one seed
    counted twice. Refused in one line naming both directories (nothing is written), so
    the number of seeds a score reports is true."""
    seen_seed: dict = {}
    seen_sha: dict[str, object] = {}
    for run in group:
        seed = run.config().get("seed")
        sha = run.model_sha256()
        same_seed, same_model = seen_seed.get(json.dumps(seed)), seen_sha.get(sha)
        other = same_seed or same_model
        if other is not None:
            why = " and ".join(([f"the same seed ({seed})"] if same_seed is other else [])
                               + ([f"identical model.pt (sha256 {sha[:12]}...)"] if same_model is other else []))
            raise UserError(f"{other.path} and {run.path}: one configuration with {why}, a copied run counted "
                            f"as a second seed; UDR needs distinct seeds: move one of them out of {root} "
                            f"(nothing was written)")
        seen_seed[json.dumps(seed)] = run
        seen_sha[sha] = run


def _score_group(spec, group: list, root: Path, recorded: dict, seed: int, data, cache, device: str,
                 progress: bool, say: Callable[[str], None]) -> dict[Path, dict]:
    """One configuration's runs (RunDirs, two or more) scored against each other; each
    run's entry merged into its scores.json."""
    from disentangle.evaluation.codes import get_codes
    from disentangle.evaluation.metrics import udr
    from disentangle.io import package_version

    t0 = time.perf_counter()
    datasets = [run.dataset(data, cache) for run in group]
    shas = {d.provenance.get("content_sha256") for d in datasets}
    if len(shas) != 1:
        raise ParameterError("data", f"{group[0].path}: the runs of this configuration evaluate on different "
                             f"datasets; give one dataset file")
    dataset = datasets[0]
    rng = np.random.default_rng(int(seed))
    idx = dataset.ground_truth.index_of(
        dataset.ground_truth.sample_classes(int(recorded["num_data_points"]), rng), rng=rng)
    means, kls, shas_model = [], [], []
    for run in group:
        codes = get_codes(run, dataset, device=device, progress=progress)
        if codes.built:
            say(f"{run.path}: encoded {codes.num_images} images into codes.h5 in {codes.encode_seconds:.1f} s")
        means.append(np.asarray(codes.mean[idx], dtype=np.float64))
        kls.append(udr.mean_kl_per_dim(codes.mean[idx], codes.logvar[idx]))
        shas_model.append(codes.model_sha256)
    scores = spec.fn(means, kls, rng, **recorded)
    seconds = time.perf_counter() - t0
    names = [run.path.relative_to(root).as_posix() if run.path != root else run.path.name for run in group]
    out: dict[Path, dict] = {}
    for run, values, sha in zip(group, scores, shas_model):
        if run.model_sha256() != sha:
            raise UserError(f"{run.model_path}: changed during evaluation; run evaluate-study again")
        entry = {"values": values,
                 "params": {**recorded, **spec.provenance(recorded), "seeds_compared": len(group)},
                 "seed": int(seed), "seconds": round(seconds, 4),
                 "data": run.data_record(dataset), "codes": "table", "model_sha256": sha,
                 "package": package_version(), "group": names,
                 "evaluated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        run.merge_scores({spec.name: entry})
        out[run.path] = entry
        say(f"{run.path}: {spec.name}: udr_lasso {values['udr_lasso']:.4f}, udr_spearman "
            f"{values['udr_spearman']:.4f} ({len(group)} seeds)")
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
