"""`sweep status`: one row per run of a study (its state, step, why), from each run's
status.json and lock, study.json and squeue."""
from __future__ import annotations

import os
from pathlib import Path

from disentangle.errors import UserError
from disentangle.rundir import RUN_STATES, RunDir, RunLock
from disentangle.sweep.slurm import squeue_states
from disentangle.sweep.state import SLURM_JOBS_FILE, STUDY_FILE, metric_names, read_json_or_none, run_phase, study_runs


def study_status(results_dir: str | os.PathLike) -> list[dict]:
    """One row per run of the study: name, state (RunDir.state, and "queued" from
    squeue; see rundir.RUN_STATES), step, steps, detail.

    Sources: each run's status.json and lock, study.json for the runs' metrics, and
    squeue for Slurm jobs still queued or running (never sacct)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"{results_dir}: no such results directory")
    names, record = study_runs(results_dir)
    if not names:
        raise UserError(f"{results_dir}: no study here (no {STUDY_FILE} and no run directories)")
    job_ids = read_json_or_none(results_dir / SLURM_JOBS_FILE) or {}
    queue = squeue_states(job_ids.values()) if job_ids else {}
    rows = []
    for name in names:
        entry = (record.get("runs") or {}).get(name) or {}
        job_id = job_ids.get(name)
        rows.append(_status_row(RunDir(results_dir / name), entry, job_id,
                                (queue or {}).get(job_id) if job_id else None))
    return rows


_SLURM_ACTIVE = ("RUNNING", "COMPLETING", "CONFIGURING")


def _status_row(run: RunDir, entry: dict, job_id: str | None, slurm_state: str | None) -> dict:
    """One run's row: its RunDir.state, with what squeue says of its Slurm job on top."""
    steps = (entry.get("config") or {}).get("steps")
    if steps is None and run.has_config():
        try:
            steps = run.config().get("steps")
        except UserError:
            steps = None
    status = run.status() or {}
    names = metric_names(entry.get("metrics") or ["all"])
    state = run.state(names, status=status)
    # a task whose run is complete may linger in squeue for a moment while it exits
    slurm_active = slurm_state in _SLURM_ACTIVE and state != "done"
    detail = ""
    if state == "running" or slurm_active:
        locked = state == "running"
        row_state = "running"
        holder = RunLock(run.path).holder() if locked else ""
        detail = "; ".join(x for x in (run_phase(run.path, steps) if locked else "", holder,
                                       f"slurm job {job_id}" if slurm_active else "") if x)
    elif slurm_state and slurm_state not in _SLURM_ACTIVE:
        row_state, detail = "queued", f"slurm job {job_id} {slurm_state.lower()}"
    else:
        row_state = state
        if state == "failed":
            detail = status.get("reason") or ""
        elif state == "trained":
            detail = f"not evaluated: {', '.join(run.missing_metrics(names))}"
        elif state == "interrupted":
            detail = "resumes on the next sweep"
    return {"name": run.path.name, "state": row_state, "step": int(status.get("step", 0) or 0), "steps": steps,
            "detail": detail, "job_id": job_id}


def format_status(rows: list[dict]) -> str:
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'run':{width}s}  {'state':11s}  {'step':>13s}  detail"]
    for r in rows:
        steps = f"{r['step']}/{r['steps']}" if r["steps"] is not None else str(r["step"])
        lines.append(f"{r['name']:{width}s}  {r['state']:11s}  {steps:>13s}  {r['detail']}".rstrip())
    counts = {s: sum(r["state"] == s for r in rows) for s in RUN_STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(rows)} runs)")
    return "\n".join(lines)
