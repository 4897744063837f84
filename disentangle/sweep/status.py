"""`sweep status`: one row per run of a study (its state, step, why), from each run's
status.json and lock, study.json and squeue."""
from __future__ import annotations

import os
from pathlib import Path

from disentangle.errors import UserError
from disentangle.io import CONFIG_FILE
from disentangle.rundir import RunDir, RunLock, is_locked
from disentangle.sweep.slurm import squeue_states
from disentangle.sweep.state import (SLURM_JOBS_FILE, STATES, STUDY_FILE, metric_names, missing_metrics,
                                     read_json_or_none, run_phase, study_runs)


def study_status(results_dir: str | os.PathLike) -> list[dict]:
    """One row per run of the study: name, state (see STATES), step, steps, detail.

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
        run_dir = results_dir / name
        entry = (record.get("runs") or {}).get(name) or {}
        steps = (entry.get("config") or {}).get("steps")
        if steps is None:
            steps = ((read_json_or_none(run_dir / CONFIG_FILE) or {}).get("config") or {}).get("steps")
        run = RunDir(run_dir)
        status = run.status() or {}
        state, step = status.get("state"), status.get("step", 0)
        job_id = job_ids.get(name)
        slurm_state = (queue or {}).get(job_id) if job_id else None
        locked = is_locked(run_dir)
        finished = run.training_finished(status)
        missing = missing_metrics(run_dir, metric_names(entry.get("metrics") or ["all"])) if finished else []
        # a task whose run is complete may linger in squeue for a moment while it exits
        slurm_active = slurm_state in ("RUNNING", "COMPLETING", "CONFIGURING") and not (finished and not missing)
        detail = ""
        if locked or slurm_active:
            row_state = "running"
            holder = RunLock(run_dir).holder() if locked else ""
            detail = "; ".join(x for x in (run_phase(run_dir, steps) if locked else "", holder,
                                           f"slurm job {job_id}" if slurm_active else "") if x)
        elif slurm_state and slurm_state not in ("RUNNING", "COMPLETING", "CONFIGURING"):
            row_state, detail = "queued", f"slurm job {job_id} {slurm_state.lower()}"
        elif state == "failed":
            row_state, detail = "failed", status.get("reason") or ""
        elif finished:
            row_state = "trained" if missing else "done"
            detail = f"not evaluated: {', '.join(missing)}" if missing else ""
        elif state == "running" or (run_dir / CONFIG_FILE).is_file():
            row_state, detail = "interrupted", "resumes on the next sweep"
        else:
            row_state = "not started"
        rows.append({"name": name, "state": row_state, "step": int(step or 0), "steps": steps,
                     "detail": detail, "job_id": job_id})
    return rows


def format_status(rows: list[dict]) -> str:
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'run':{width}s}  {'state':11s}  {'step':>13s}  detail"]
    for r in rows:
        steps = f"{r['step']}/{r['steps']}" if r["steps"] is not None else str(r["step"])
        lines.append(f"{r['name']:{width}s}  {r['state']:11s}  {steps:>13s}  {r['detail']}".rstrip())
    counts = {s: sum(r["state"] == s for r in rows) for s in STATES}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" ({len(rows)} runs)")
    return "\n".join(lines)
