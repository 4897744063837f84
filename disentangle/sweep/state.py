"""Study-level state: the files of a study directory, the study lock that serialises
its few shared writes, and what a running run is doing. A run's files, its state and its
lock belong to the run directory (:class:`disentangle.rundir.RunDir`,
:class:`disentangle.rundir.RunLock`); the report's files to :mod:`disentangle.study_report`."""
from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import os
from pathlib import Path
from typing import Iterable, Sequence

from disentangle.io import read_json
from disentangle.rundir import RunDir

STUDY_FILE = "study.json"
SLURM_JOBS_FILE = "slurm_jobs.json"
SLURM_DIR = "slurm"
STUDY_FORMAT = "disentangle-study-1"
_STUDY_LOCK = ".study.lock"


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@contextlib.contextmanager
def study_lock(results_dir: Path):
    """Serialises the few study-level writes (study.json, report) between sweeps."""
    results_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(results_dir / _STUDY_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def read_json_or_none(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def metric_names(metrics: Sequence[str]) -> list[str]:
    """The metric names a selection stands for ('all' = every registered metric)."""
    from disentangle.evaluation.evaluate import metric_names as expand_metrics
    return expand_metrics(metrics)


def run_phase(run_dir: str | os.PathLike, steps: int | None = None) -> str:
    """What a running run is doing, in a few words: its progress record
    (:mod:`disentangle.progress`: 'training 450/1,500 steps', 'encoding 12,288/73,728
    images (17%)', 'metric dci (4/10)'), else what status.json says."""
    from disentangle.progress import describe
    run = RunDir(run_dir)
    phase = describe(run.read_progress())
    if phase:
        return phase
    status = run.status() or {}
    if status.get("state") == "finished":
        return "evaluating"
    step = status.get("step", 0)
    return f"training {step}/{steps}" if steps is not None else f"training step {step}"


def running_progress(jobs: Iterable[dict]) -> str:
    """'name phase, name phase' for running ``jobs`` (the sweeps' progress lines)."""
    return ", ".join(f"{job['name']} {run_phase(job['run_dir'], job['config'].get('steps'))}" for job in jobs)


def study_runs(results_dir: Path) -> tuple[list[str], dict]:
    record = read_json_or_none(results_dir / STUDY_FILE)
    record = record if isinstance(record, dict) else {}
    names = list((record.get("runs") or {}).keys())
    # run directories not (or no longer) in the study record still count
    if results_dir.is_dir():
        for child in sorted(results_dir.iterdir()):
            if child.is_dir() and RunDir(child).has_config() and child.name not in names:
                names.append(child.name)
    return names, record
