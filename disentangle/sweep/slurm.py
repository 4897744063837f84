"""The Slurm executor: a study's runs as one job array through submitit, each task
requeueing itself on timeout or preemption and resuming from its checkpoint; job states
from squeue and the result files (never sacct)."""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterable

from disentangle.devices import set_thread_env
from disentangle.errors import ParameterError, exception_reason
from disentangle.io import write_json_atomic
from disentangle.rundir import RunDir
from disentangle.sweep.execute import execute_run, outcome_line, record_death
from disentangle.sweep.state import (SLURM_DIR, SLURM_JOBS_FILE, read_json_or_none, running_progress, study_lock,
                                     utc_now)


@dataclasses.dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 120
    cpus_per_task: int = 1
    mem: str | None = "4G"
    gpus_per_task: int | None = None
    array_parallelism: int = 256
    wait: bool = True
    poll_s: float = 5.0
    progress_s: float = 30.0


def parse_time(text: str | int) -> int:
    """Slurm time limits: 'MINUTES', 'H:MM:SS', 'MM:SS' or 'D-HH[:MM[:SS]]' -> minutes."""
    s = str(text).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", s)
    if not m or not s:
        raise ParameterError("time", "expected minutes, H:MM:SS or D-HH:MM:SS", value=text)
    days, a, b, c = (int(x) if x else None for x in m.groups())
    if days is None and b is None:
        minutes = a                               # MINUTES
    elif days is None and c is None:
        minutes = a + (1 if b else 0)             # MM:SS
    elif days is None:
        minutes = a * 60 + b + (1 if c else 0)    # H:MM:SS
    else:
        minutes = days * 1440 + a * 60 + (b or 0) + (1 if c else 0)
    if minutes < 1:
        raise ParameterError("time", "must be at least one minute", value=text)
    return minutes


def slurm_available() -> tuple[bool, str]:
    """(True, '') when sbatch and squeue exist and the controller answers."""
    for tool in ("sbatch", "squeue", "sinfo"):
        if shutil.which(tool) is None:
            return False, f"no `{tool}` on PATH (Slurm is not installed here)"
    try:
        proc = subprocess.run(["sinfo", "--noheader", "--format=%t"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"`sinfo` did not answer ({exc})"
    if proc.returncode != 0:
        return False, f"`sinfo` failed: {proc.stderr.strip() or proc.returncode}"
    states = proc.stdout.split()
    if not any(s.rstrip("*~#!%$@^-") in ("idle", "mix", "alloc", "comp") for s in states):
        return False, f"no Slurm node is up (sinfo states: {', '.join(states) or 'none'})"
    return True, ""


def squeue_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """{array task id ('123_4') or job id: state (PENDING, RUNNING, ...)} for the jobs
    still known to the controller; None when squeue cannot be asked."""
    ids = sorted({str(j).split("_")[0] for j in job_ids})
    if not ids:
        return {}
    if shutil.which("squeue") is None:
        return None
    try:
        proc = subprocess.run(["squeue", "--noheader", "--array", "--format=%i %T", f"--jobs={','.join(ids)}"],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        # every listed job has left the queue (squeue then refuses the ids)
        return {} if "Invalid job id" in proc.stderr else None
    states = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


class SlurmRun:
    """The callable submitit pickles for each array task. ``checkpoint`` makes a timed-out
    or preempted task requeue itself (submitit calls it on Slurm's warning signal); the
    requeued task resumes training from the run's last checkpoint."""

    def __call__(self, job: dict) -> dict:
        set_thread_env(job["config"].get("threads"))
        echo = _tee(RunDir(job["run_dir"]))
        echo(f"--- {utc_now()} slurm job {os.environ.get('SLURM_JOB_ID', '?')} on {socket.gethostname()}: "
             f"{job['name']} ({job['config'].get('threads')} thread(s))")
        return execute_run(job, echo)

    def checkpoint(self, job: dict):
        import submitit
        return submitit.helpers.DelayedSubmission(SlurmRun(), job)


def _tee(run: RunDir) -> Callable[[str], None]:
    """Print to the task's own log (submitit's stdout) and append to the run's sweep.log,
    so a run's log says what it did on whichever executor ran it."""
    def echo(line: str) -> None:
        print(line, flush=True)
        run.append_log(line)
    return echo


def _write_job_ids(results_dir: Path, ids: dict[str, str]) -> None:
    with study_lock(results_dir):
        known = read_json_or_none(results_dir / SLURM_JOBS_FILE) or {}
        known.update(ids)
        write_json_atomic(results_dir / SLURM_JOBS_FILE, known)


def run_slurm(jobs: list[dict], results_dir: Path, options: SlurmOptions,
              echo: Callable[[str], None]) -> list[dict] | None:
    """Submit ``jobs`` as one Slurm job array through submitit; wait for them (returning
    their outcomes) or return None at once (``options.wait`` False)."""
    ok, why = slurm_available()
    if not ok:
        raise ParameterError("executor", why, value="slurm")
    import submitit
    folder = results_dir / SLURM_DIR / "%j"
    executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=3)
    params: dict[str, Any] = {"time": options.time_min, "cpus_per_task": options.cpus_per_task,
                              "array_parallelism": options.array_parallelism, "job_name": "disentangle-sweep",
                              "stderr_to_stdout": False}
    if options.partition:
        params["partition"] = options.partition
    if options.mem:
        params["mem"] = options.mem
    if options.gpus_per_task:
        params["gpus_per_task"] = options.gpus_per_task
    executor.update_parameters(**params)
    try:
        submitted = executor.map_array(SlurmRun(), jobs)
    except Exception as exc:  # sbatch refused (bad partition, time, memory): the user can fix it
        msg = str(exc).strip().splitlines()
        raise ParameterError("executor", f"sbatch refused the job array: {msg[-1] if msg else exc}",
                             value="slurm") from None
    ids = {job["name"]: sj.job_id for job, sj in zip(jobs, submitted)}
    _write_job_ids(results_dir, ids)
    array_id = submitted[0].job_id.split("_")[0] if submitted else "?"
    echo(f"  submitted job array {array_id} ({len(submitted)} task(s)); logs in {results_dir / SLURM_DIR}")
    if not options.wait:
        return None
    return _wait_slurm(list(zip(jobs, submitted)), options.poll_s, echo, options.progress_s)


def _wait_slurm(pairs: list[tuple[dict, Any]], poll_s: float, echo: Callable[[str], None],
                progress_s: float = 30.0) -> list[dict]:
    """Poll until every task has a result file or has left the queue without one.
    (Job states come from squeue and the result files, never from sacct, which clusters
    without accounting do not answer.)"""
    remaining = {sj.job_id: (job, sj) for job, sj in pairs}
    gone_once: set[str] = set()
    outcomes: list[dict] = []
    total = len(pairs)
    last, last_progress, last_progress_line = None, time.monotonic(), ""
    while remaining:
        states = squeue_states(remaining)
        for job_id in list(remaining):
            job, sj = remaining[job_id]
            outcome = None
            if sj.paths.result_pickle.exists():
                try:
                    outcome = sj.result()
                except Exception as exc:  # the task raised (a bug, not a run failure)
                    outcome = record_death(job, f"slurm task {job_id} raised {exception_reason(exc)}")
            elif states is not None and job_id not in states:
                # no result and not queued: give the result file one more poll to appear
                if job_id in gone_once:
                    outcome = record_death(job, f"slurm task {job_id} ended without a result "
                                                 f"(killed or out of time; log {sj.paths.stderr})")
                gone_once.add(job_id)
            if outcome is not None:
                remaining.pop(job_id)
                outcomes.append(outcome)
                echo(outcome_line(outcome, len(outcomes), total))
        if remaining:
            summary = _count_states(states or {}, remaining)
            if summary != last:
                echo(f"  [{len(outcomes)}/{total}] slurm: {summary}")
                last = summary
            running = [job for job_id, (job, _) in remaining.items() if (states or {}).get(job_id) == "RUNNING"]
            if running and time.monotonic() - last_progress >= progress_s:
                line = f"  [{len(outcomes)}/{total}] running: {running_progress(running)}"
                if line != last_progress_line or time.monotonic() - last_progress >= 600:
                    echo(line)
                    last_progress_line = line
                last_progress = time.monotonic()
            time.sleep(poll_s)
    return outcomes


def _count_states(states: dict[str, str], remaining: dict) -> str:
    counts: dict[str, int] = {}
    for job_id in remaining:
        state = states.get(job_id, "finishing").lower()
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
