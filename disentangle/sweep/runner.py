"""The sweep: expand a study, check it against what its directory already holds, record
it in study.json, hand the runs still to do to an executor, then have the report layer
(:mod:`disentangle.study_report`) write the study's report and figures."""
from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Callable

from disentangle.data.trust import unverified_accepted
from disentangle.devices import resolve_device
from disentangle.errors import ParameterError, UserError
from disentangle.io import write_json_atomic
from disentangle.rundir import RunDir
from disentangle.sweep.grid import (RunSpec, Study, check_eval_seed, check_evaluation_options,
                                    check_execution_settings, expand, swept_axes)
from disentangle.sweep.local import cpu_count, run_local
from disentangle.sweep.slurm import SlurmOptions, run_slurm
from disentangle.sweep.state import STUDY_FILE, STUDY_FORMAT, metric_names, read_json_or_none, study_lock, utc_now
from disentangle.sweep.status import study_status


@dataclasses.dataclass
class SweepResult:
    results_dir: Path
    runs: list[RunSpec]
    outcomes: list[dict]               # one per run handled (skipped runs included)
    report: Path | None = None
    figures: list[Path] = dataclasses.field(default_factory=list)
    submitted: bool = False            # Slurm without waiting: outcomes are not known yet

    def count(self, result: str) -> int:
        return sum(1 for o in self.outcomes if o["result"] == result)


def _pin_data(runs: list[RunSpec], data: str | None,
              source: str = "command line") -> tuple[list[RunSpec], dict[tuple, tuple[Path, str | None]]]:
    """The runs with their dataset's file filled in (the file each run was given, by
    ``--data`` or the spec's ``data``, else its dataset's path rule) and {(dataset name,
    file given): (file, content_sha256)}. One file serves one dataset (dSprites and its
    variants share the dSprites file), so a file given for several datasets is refused."""
    from disentangle.config import DEFAULT_DATASET
    from disentangle.data.datasets import DSprites, dataset_class, locate
    given_for: dict = {}
    for run in runs:
        given_for.setdefault(run.config.get("data"), []).append(run.config.get("dataset", DEFAULT_DATASET))
    for given, names in given_for.items():
        names = list(dict.fromkeys(names))
        if given is not None and len({issubclass(dataset_class(n, given), DSprites) or n for n in names}) > 1:
            message = (f"names one file, but the study covers the datasets {', '.join(names)}; leave it out "
                       f"(each dataset's file is found by its rule) or sweep one dataset")
            if data is not None:
                raise ParameterError("data", message, value=data)
            raise UserError(f"{source}: data {given!r} {message}")
    files: dict[tuple, tuple[Path, str | None]] = {}
    for run in runs:
        key = (run.config.get("dataset", DEFAULT_DATASET), run.config.get("data"))
        if key in files:
            continue
        try:
            files[key] = locate(*key)
        except ParameterError:
            raise
        except UserError as exc:
            raise UserError(f"dataset {key[0]}: {exc}") from None
    pinned = [dataclasses.replace(run, config={**run.config, "data": str(files[(
        run.config.get("dataset", DEFAULT_DATASET), run.config.get("data"))][0])}) for run in runs]
    return pinned, files


def _check_evaluation_on_data(study: Study, runs: list[RunSpec]) -> None:
    """Each dataset's sizes against the metrics' parameters (``evaluate``'s data checks:
    factor counts, enough points for a fit), before any run trains -- not after each run's
    training, where every run of the study would fail alike."""
    from disentangle.config import DEFAULT_DATASET
    from disentangle.data.datasets import open_for_checks
    from disentangle.evaluation.evaluate import check_evaluation
    widths: dict[tuple, set] = {}
    for run in runs:
        key = (run.config.get("dataset", DEFAULT_DATASET), run.config.get("data"))
        widths.setdefault(key, set()).add(run.config.get("latent_dim"))
    for (name, path), dims in widths.items():
        dataset = open_for_checks(name, path)
        try:
            for dim in sorted(d for d in dims if isinstance(d, int)):
                try:
                    check_evaluation(study.metrics, study.eval_seed, study.eval_params, dataset=dataset, code_dim=dim)
                except UserError as exc:
                    raise UserError(f"{study.source}: dataset {name} ({path}): {exc}") from None
        finally:
            dataset.close()


def _preflight(runs: list[RunSpec], results_dir: Path, data_shas: dict[str, str | None]) -> None:
    """Refuse before anything starts when a run directory of this name holds another
    configuration or other data (``data_shas``: run name -> the content checksum of the
    file it is to use), or is not a run directory at all (a user's file or folder in its
    place): names show only the swept settings, so a second sweep with, say, other
    --steps into the same directory would otherwise mix studies."""
    from disentangle.config import differing_keys
    problems = []
    for run in runs:
        run_dir = RunDir(results_dir / run.name)
        try:
            run_dir.refuse_foreign("results")
        except ParameterError as exc:
            # (its own "nothing was written" is said once, at the end)
            what = exc.message.split("; nothing was written")[0]
            problems.append(f"{run_dir.path}: {what} (the run {run.name} of this study goes there)")
            continue
        except UserError as exc:
            problems.append(str(exc))
            continue
        if not run_dir.has_config():
            continue
        try:
            saved = run_dir.saved()
        except UserError:
            problems.append(f"{run_dir.config_path}: unreadable")
            continue
        diff = differing_keys(saved.get("config") or {}, run.config)
        if diff:
            shown = ", ".join(f"{k} {(saved.get('config') or {}).get(k)!r} there vs {run.config.get(k)!r}"
                              for k in diff)
            problems.append(f"{results_dir / run.name} holds other settings ({shown})")
        sha = (saved.get("data") or {}).get("content_sha256")
        data_sha = data_shas.get(run.name)
        if data_sha and sha and sha != data_sha:
            problems.append(f"{results_dir / run.name} was trained on other data (sha256 {sha[:12]}...)")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ParameterError("results", f"{'; '.join(problems[:3])}{more}; nothing was written; use another "
                             f"results directory for a study with other fixed settings, or move the "
                             f"files in the way aside", value=results_dir)


def _record_study(results_dir: Path, study: Study, runs: list[RunSpec], executor: dict) -> None:
    """Merge this sweep's runs into study.json (several sweeps may share a directory)."""
    with study_lock(results_dir):
        record = read_json_or_none(results_dir / STUDY_FILE)
        if not isinstance(record, dict) or record.get("format") != STUDY_FORMAT:
            record = {"format": STUDY_FORMAT, "created": utc_now(), "runs": {}, "sweeps": []}
        record.update({"name": study.name or record.get("name") or results_dir.name, "grid": study.grid,
                       "fixed": study.fixed, "metrics": list(study.metrics), "eval_seed": study.eval_seed,
                       "eval_params": study.eval_params, "swept": swept_axes(study), "updated": utc_now()})
        if study.blocks:
            record["blocks"] = study.blocks
        else:
            record.pop("blocks", None)
        for run in runs:
            record["runs"][run.name] = {"config": run.config, "metrics": list(study.metrics),
                                        "eval_seed": study.eval_seed}
        record["sweeps"] = (record.get("sweeps") or [])[-49:] + [{"started": utc_now(), "host": socket.gethostname(),
                                                                  "pid": os.getpid(), **executor}]
        write_json_atomic(results_dir / STUDY_FILE, record)


def _check_options(study: Study, executor: str, jobs: int, threads_per_job: int | None) -> None:
    """Options every run would fail on: refused before any run starts (and so never
    recorded as a run's failure, which a corrected rerun would then skip)."""
    if executor not in ("local", "slurm"):
        raise ParameterError("executor", "choose local or slurm", value=executor)
    if jobs < 1:
        raise ParameterError("jobs", "must be at least 1", value=jobs)
    if threads_per_job is not None and threads_per_job < 1:
        raise ParameterError("threads_per_job", "must be at least 1", value=threads_per_job)
    check_eval_seed(study.eval_seed, "--eval-seed" if study.source == "command line"
                    else f"{study.source}: [evaluate] seed (or --eval-seed)")
    check_evaluation_options(study)


def _check_devices(runs: list[RunSpec], study: Study, device: str | None) -> None:
    """Each device the runs will use exists here (local executor; a Slurm node is another
    machine): a GPU asked for on a machine without one stops the sweep before it starts."""
    for value in dict.fromkeys(str(run.config.get("device") or "auto") for run in runs):
        if value == "auto":
            continue
        try:
            resolve_device(value)
        except ParameterError as exc:
            if device is None:   # the spec's value
                raise UserError(f"{study.source}: device {value!r}: {exc.message}") from None
            raise


def run_sweep(study: Study, results_dir: str | os.PathLike, *, executor: str = "local", jobs: int = 1,
              threads_per_job: int | None = None, retry_failed: bool = False, data: str | None = None,
              device: str | None = None, slurm: SlurmOptions | None = None, report: bool = True,
              echo: Callable[[str], None] = print, progress_every: float = 30.0) -> SweepResult:
    """Expand, train, evaluate and report a study in ``results_dir``. Idempotent; see the
    module docstring. Raises UserError only for problems found before any run starts;
    nothing is written before those checks (study.json included).

    ``data``, ``device``, ``threads_per_job``: given explicitly (not None), they apply to
    every run and must agree with what the spec fixes (one line naming both otherwise);
    None leaves the spec's value, else the default (the dataset's path rule, auto,
    cores // jobs locally or --cpus-per-task on Slurm)."""
    results_dir = Path(results_dir)
    _check_options(study, executor, jobs, threads_per_job)
    check_execution_settings(study, {"data": data, "device": device, "threads": threads_per_job})
    slurm = slurm or SlurmOptions()
    default_threads = slurm.cpus_per_task if executor == "slurm" else max(1, cpu_count() // jobs)
    runs = expand(study, data=data, device=device, threads=threads_per_job)
    runs = [run if run.config.get("threads") is not None
            else dataclasses.replace(run, config={**run.config, "threads": default_threads}) for run in runs]
    threads_used = sorted({int(run.config["threads"]) for run in runs})
    threads = threads_used[0] if len(threads_used) == 1 else threads_used
    if executor == "local":
        _check_devices(runs, study, device)
    elif threads_used[-1] > slurm.cpus_per_task:
        # more threads than CPUs per task: the threads share the CPUs, many times slower
        where = "--threads-per-job" if threads_per_job is not None else f"{study.source}: threads"
        raise ParameterError("cpus_per_task", f"runs ask for {threads_used[-1]} threads ({where}), more than the "
                             f"CPUs a Slurm task gets; raise --cpus-per-task to {threads_used[-1]} or ask for "
                             f"fewer threads", value=slurm.cpus_per_task)
    # one file per dataset of the study, pinned by absolute path (workers and Slurm tasks
    # may start in other directories) and by its content checksum
    runs, data_files = _pin_data(runs, data, study.source)
    _check_evaluation_on_data(study, runs)
    if executor == "slurm":
        # before anything is written: a sweep that cannot submit leaves no study.json behind
        from disentangle.sweep.slurm import slurm_available
        ok, why = slurm_available()
        if not ok:
            raise ParameterError("executor", why, value="slurm")
    run_shas = _run_shas(runs, data_files)
    _preflight(runs, results_dir, run_shas)
    from disentangle.io import check_writable
    check_writable(results_dir / STUDY_FILE)
    shown = {f"{name}" + (f" ({given})" if given and len(data_files) > 1 else ""): str(path)
             for (name, given), (path, _) in data_files.items()}
    _record_study(results_dir, study, runs,
                  {"executor": executor, "jobs": jobs, "threads_per_job": threads,
                   "retry_failed": retry_failed,
                   "data": next(iter(shown.values())) if len(shown) == 1 else shown,
                   **({"unverified_data": True} if unverified_accepted() else {})})

    outcomes, todo = _plan(runs, results_dir, study, retry_failed, run_shas)
    echo(f"sweep {results_dir}: {len(runs)} run(s); {len(todo)} to do, "
         f"{sum(o['result'] == 'done' for o in outcomes)} done, "
         f"{sum(o['result'] == 'failed' for o in outcomes)} failed earlier"
         + (" (not retried; --retry-failed)" if any(o['result'] == 'failed' for o in outcomes) else ""))
    for outcome in outcomes:
        if outcome["result"] == "failed":
            echo(f"  failed  {outcome['name']}: {outcome['reason']} ({outcome['action']})")
    for job in todo:
        if job.get("retry_note"):
            echo(f"  retry   {job['name']}: {job['retry_note']}")
    result = SweepResult(results_dir, runs, outcomes)
    if todo:
        if executor == "local":
            n = min(jobs, len(todo))
            shown_threads = threads if isinstance(threads, int) else "/".join(map(str, threads))
            echo(f"  local executor: {n} process(es) at once, {shown_threads} thread(s) each "
                 f"({cpu_count()} core(s) here)")
            outcomes.extend(run_local(todo, n, echo, progress_every))
        else:
            done = run_slurm(todo, results_dir, slurm, echo)
            if done is None:
                result.submitted = True
                echo(f"  not waiting: `disentangle sweep status {results_dir}` shows progress; "
                     f"run the sweep again (it skips finished runs) to write the report")
                return result
            outcomes.extend(done)
    if report:
        result.report, result.figures = _write_report(results_dir, echo)
    echo(f"sweep {results_dir}: {result.count('done')} done, {result.count('failed')} failed, "
         f"{result.count('busy')} running elsewhere"
         + (f"; report {result.report}" if result.report else ""))
    return result


def _run_shas(runs: list[RunSpec], data_files: dict[tuple, tuple[Path, str | None]]) -> dict[str, str | None]:
    """run name -> content checksum of the (pinned) file it uses."""
    by_path = {str(path): sha for path, sha in data_files.values()}
    return {run.name: by_path.get(run.config.get("data")) for run in runs}


def _plan(runs: list[RunSpec], results_dir: Path, study: Study, retry_failed: bool,
          run_shas: dict[str, str | None]) -> tuple[list[dict], list[dict]]:
    """(outcomes of the runs with nothing to do, jobs of the runs to execute), by each
    run's RunDir.state. Decided before taking any lock: a run being worked on elsewhere
    goes to the executor, which reports it busy. A failed run is retried when asked, or
    when its options differ from those it failed with (:func:`retry_decision`)."""
    from disentangle.sweep.execute import retry_decision
    names = metric_names(study.metrics)
    outcomes: list[dict] = []
    todo: list[dict] = []
    for run in runs:
        run_dir = RunDir(results_dir / run.name)
        job = {"name": run.name, "run_dir": str(run_dir.path.resolve()), "config": run.config,
               "data_sha256": run_shas.get(run.name), "metrics": list(study.metrics),
               "eval_seed": study.eval_seed, "eval_params": study.eval_params, "retry_failed": retry_failed,
               # --unverified-data travels with each job (spawned workers, Slurm tasks)
               "unverified_data": unverified_accepted()}
        status = run_dir.status()
        state = run_dir.state(names, status=status, check_lock=False)
        if state == "done":
            outcomes.append({"name": run.name, "result": "done", "action": "already done", "reason": None})
            continue
        if state == "failed":
            retry, why = retry_decision(run_dir, job, status)
            if not retry:
                outcomes.append({"name": run.name, "result": "failed", "action": why,
                                 "reason": status.get("reason")})
                continue
            if not retry_failed:
                job["retry_note"] = why
        todo.append(job)
    return outcomes, todo


def _write_report(results_dir: Path, echo: Callable[[str], None]) -> tuple[Path, list[Path]]:
    """The report layer's report of the study, handed the study's state (study.json and
    every run's status row), under the study lock."""
    from disentangle.study_report import write_study_report
    from disentangle.sweep.state import study_runs
    with study_lock(results_dir):
        _, record = study_runs(results_dir)
        return write_study_report(results_dir, record, study_status(results_dir), echo=echo)
