"""One run of a study: train it (or resume it) and evaluate the metrics it lacks, holding
its lock; never raise for a failed run, record why instead. Both executors call
:func:`execute_run` in their worker processes and report outcomes with :func:`outcome_line`."""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

from disentangle.data.trust import accept_unverified
from disentangle.devices import resolve_device
from disentangle.errors import exception_reason
from disentangle.progress import RunProgress, report, reporting
from disentangle.rundir import RunDir, RunLock
from disentangle.sweep.state import metric_names


def job_options(job: dict) -> dict:
    """What a run of a sweep runs with (its failure record keeps it): the full training
    configuration (data file, device and threads included), the data's checksum and the
    evaluation options."""
    return {"config": job["config"], "data_sha256": job.get("data_sha256"), "metrics": list(job["metrics"]),
            "eval_seed": job.get("eval_seed", 0), "eval_params": job.get("eval_params") or {}}


def retry_decision(run: RunDir, job: dict, status: dict | None) -> tuple[bool, str]:
    """For a failed run: (retry it?, why, in a few words). Retried when asked
    (``retry_failed``) or when the options differ from those it failed with (a corrected
    option is retried by itself); with the same options, or when its failure recorded
    none, it is skipped until --retry-failed."""
    if job.get("retry_failed"):
        return True, "--retry-failed"
    changed = run.failure_options_changed(job_options(job), status)
    if changed is None:
        return False, "not retried (--retry-failed retries it)"
    if not changed:
        return False, "not retried: it failed with these same options (--retry-failed retries it)"
    shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return True, f"options changed since it failed ({shown})"


def _record_failure(run: RunDir, job: dict, reason: str, exc: BaseException | str | None) -> None:
    """The failure with its options, where the disk still allows it (a full disk may be
    the failure itself)."""
    import contextlib

    from disentangle.errors import UserError
    error = exc if isinstance(exc, str) or exc is None else type(exc).__name__
    with contextlib.suppress(UserError, OSError):
        run.record_failure(reason, job_options(job), error)


def execute_run(job: dict, echo: Callable[[str], None] = print) -> dict:
    """Train and evaluate one run, holding its lock; never raises for a failed run.

    ``job``: name, run_dir, config (TrainConfig dict), metrics, eval_seed, eval_params,
    retry_failed. ``echo`` takes the run's progress lines (:mod:`disentangle.progress`);
    its progress.json is kept current meanwhile.
    Returns an outcome: {"name", "result": "done" | "failed" | "busy", "action", "reason",
    "seconds", "threads", "pid"}."""
    t0 = time.monotonic()
    name, run_dir = job["name"], Path(job["run_dir"])
    run = RunDir(run_dir)
    out = {"name": name, "result": "done", "action": "", "reason": None,
           "threads": job["config"].get("threads"), "pid": os.getpid(), "host": socket.gethostname()}

    def finish(result: str, action: str, reason: str | None = None) -> dict:
        out.update(result=result, action=action, reason=reason, seconds=round(time.monotonic() - t0, 2))
        return out

    lock = RunLock(run_dir)
    if not lock.acquire():
        return finish("busy", "running elsewhere", lock.holder())
    try:
        # the sweep's --unverified-data, as the job carries it (a worker is a fresh process)
        with accept_unverified(bool(job.get("unverified_data"))), reporting(RunProgress(run, echo)):
            report("starting", 0)
            return _train_and_evaluate(job, run, finish)
    finally:
        lock.release()


def _train_and_evaluate(job: dict, run: RunDir, finish: Callable[..., dict]) -> dict:
    """The body of :func:`execute_run`, under the run's lock."""
    run_dir = run.path
    names = metric_names(job["metrics"])
    status = run.status()
    state = run.state(names, status=status, check_lock=False)   # we hold the lock
    actions = []
    if state == "failed":
        retry, why = retry_decision(run, job, status)
        if not retry:
            return finish("failed", why, status.get("reason"))
        if not job.get("retry_failed"):
            actions.append(why)
    reason = str((status or {}).get("reason") or "")
    if state == "failed" and reason.startswith("evaluation failed") and run.model_path.is_file():
        # training had finished: only the evaluation is retried
        actions.append("retried evaluation")
        run.write_status("finished")
    elif state not in ("done", "trained"):   # training has not finished
        from disentangle.config import TrainConfig
        from disentangle.train import TrainingDiverged, train
        step = int((status or {}).get("step", 0) or 0)
        has_checkpoint = run.checkpoint_path.is_file()
        if state == "failed":
            actions.append(f"retried from step {step if has_checkpoint else 0}")
        elif (status or {}).get("state") == "running":
            # we hold the lock, so whoever wrote "running" is gone (killed, or its sweep was)
            pid = ((status or {}).get("runtime") or {}).get("pid")
            actions.append(f"found interrupted at step {step} (its process{f' {pid}' if pid else ''} is gone); "
                           + (f"resumed from step {step}" if has_checkpoint else "restarted from step 0"))
        elif has_checkpoint:
            actions.append(f"resumed from step {step}")
        else:
            actions.append("trained")
        try:
            train(TrainConfig.from_dict(job["config"]), run_dir)
        except TrainingDiverged as exc:
            _record_failure(run, job, (run.status() or {}).get("reason") or exception_reason(exc), exc)
            return finish("failed", ", ".join(actions), exception_reason(exc))
        except Exception as exc:
            reason = f"training failed: {exception_reason(exc)}"
            if run.has_config() or run_dir.is_dir():
                _record_failure(run, job, reason, exc)
            return finish("failed", ", ".join(actions), reason)
    todo = run.missing_metrics(names)
    if todo:
        try:
            from disentangle.evaluation.evaluate import evaluate_run
            evaluate_run(run_dir, metrics=tuple(todo), seed=int(job.get("eval_seed", 0)),
                         params=job.get("eval_params") or None,
                         data=job["config"].get("data"),
                         device=resolve_device(job["config"].get("device") or "auto"),
                         threads=job["config"].get("threads"), progress=False)
            still = run.missing_metrics(names)
            if still:
                raise RuntimeError(f"scores.json lacks {', '.join(still)} after evaluation")
        except Exception as exc:
            reason = f"evaluation failed: {exception_reason(exc)}"
            _record_failure(run, job, reason, exc)
            return finish("failed", ", ".join(actions + ["evaluation"]), reason)
        actions.append(f"evaluated ({', '.join(todo)})")
    return finish("done", ", ".join(actions) or "already done")


def record_death(job: dict, reason: str) -> dict:
    """A worker died without reporting (killed, out of memory): mark its run failed,
    unless another process has taken the run over meanwhile."""
    run_dir = Path(job["run_dir"])
    lock = RunLock(run_dir)
    if not lock.acquire():
        return {"name": job["name"], "result": "busy", "action": "running elsewhere", "reason": lock.holder()}
    try:
        run = RunDir(run_dir)
        status = run.status() or {}
        reason = f"{reason} at step {int(status.get('step', 0) or 0)}"
        if run.state(metric_names(job["metrics"]), status=status, check_lock=False) != "done":   # we hold the lock
            run.record_failure(reason, job_options(job), "killed")
            return {"name": job["name"], "result": "failed", "action": "killed", "reason": reason}
        return {"name": job["name"], "result": "done", "action": "finished before its worker died",
                "reason": None}
    finally:
        lock.release()


def outcome_line(outcome: dict, k: int, total: int) -> str:
    word = {"done": "done", "failed": "FAILED", "busy": "skip"}[outcome["result"]]
    line = f"  [{k}/{total}] {word:6s} {outcome['name']}: {outcome['action']}"
    if outcome.get("seconds") is not None:
        line += f" ({fmt_seconds(outcome['seconds'])})"
    if outcome.get("reason"):
        line += f" -- {outcome['reason']}"
    return line


def fmt_seconds(s: float) -> str:
    s = float(s)
    return f"{s:.1f} s" if s < 90 else f"{s / 60:.1f} min"
