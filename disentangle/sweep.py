"""Studies: a grid of training configurations, expanded into named run directories,
trained and evaluated by local processes or a Slurm job array (submitit), and summed up
in a report with figures.

    study = Study(grid={"beta": [1, 4, 16], "seed": [0, 1]}, fixed={"steps": 5000})
    result = run_sweep(study, "results/study", executor="local", jobs=2)

The results directory::

    results/study/
      study.json               the grid, the fixed settings, every run's configuration
      beta-h_b4_s0/            one run directory per grid point (see disentangle.results)
        sweep.lock             held (fcntl.flock) by the process working on the run
        sweep.log              that process's output
      report.md, figures/      the study's tables and figures, rewritten by every sweep
      slurm/                   submitit's scripts and logs (Slurm executor)
      slurm_jobs.json          run name -> Slurm job id of its latest submission

Every run is independent and idempotent: a finished and evaluated run is skipped, an
interrupted one resumes from its checkpoint (``disentangle.train.train`` does that), a
failed one is retried only when asked (``retry_failed``). A failure is written to the
run's status.json with its reason and never stops the other runs. A run is worked on by
at most one process at a time: the one holding its lock; any other skips it as
"running elsewhere". So two sweeps on one directory (the same command started twice, or
a local sweep beside a Slurm one) share the work instead of duplicating it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import itertools
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from disentangle.config import format_value, grid_axis_order, run_name  # noqa: F401 (part of this API)
from disentangle.devices import resolve_device, set_thread_env
from disentangle.errors import ParameterError, UserError
from disentangle.results import CONFIG_FILE, read_json, write_json_atomic, write_text_atomic
from disentangle.rundir import RunDir

STUDY_FILE = "study.json"
SLURM_JOBS_FILE = "slurm_jobs.json"
LOCK_FILE = "sweep.lock"
LOG_FILE = "sweep.log"
REPORT_FILE = "report.md"
FIGURES_DIR = "figures"
SLURM_DIR = "slurm"
STUDY_FORMAT = "disentangle-study-1"
_STUDY_LOCK = ".study.lock"

# Which settings a grid may vary, how they nest and how runs are named come from the
# configuration's identity fields (disentangle.config: grid_axis_order, run_name).

# Run states as `sweep status` shows them.
STATES = ("done", "failed", "running", "queued", "interrupted", "trained", "not started")


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# =========================================================================== the grid
@dataclasses.dataclass
class Study:
    """A grid of runs: ``grid`` maps settings to lists of values (one run per combination),
    ``fixed`` holds the settings every run shares (TrainConfig fields, "preset" included).
    ``metrics``, ``eval_seed`` and ``eval_params`` (per-metric protocol parameters, as
    ``evaluate --param``) say how each run is evaluated."""

    grid: dict[str, list] = dataclasses.field(default_factory=dict)
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: tuple[str, ...] = ("all",)
    eval_seed: int = 0
    eval_params: dict[str, dict] = dataclasses.field(default_factory=dict)
    name: str | None = None
    source: str = "command line"   # where the study came from, for error messages

    def with_overrides(self, grid: dict[str, list] | None = None, fixed: dict[str, Any] | None = None,
                       metrics: Sequence[str] | None = None, eval_seed: int | None = None) -> "Study":
        """A copy with the given axes/settings replaced (command-line options over a spec
        file); None values are ignored. A setting moves between grid and fixed as given."""
        new_grid = dict(self.grid)
        new_fixed = dict(self.fixed)
        for key, values in (grid or {}).items():
            if values is not None:
                new_grid[key] = list(values)
                new_fixed.pop(key, None)
        for key, value in (fixed or {}).items():
            if value is not None:
                new_fixed[key] = value
                new_grid.pop(key, None)
        return dataclasses.replace(
            self, grid=new_grid, fixed=new_fixed,
            metrics=tuple(metrics) if metrics else self.metrics,
            eval_seed=self.eval_seed if eval_seed is None else check_eval_seed(eval_seed))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One grid point: its directory name and its full training configuration."""

    name: str
    config: dict[str, Any]          # TrainConfig.to_dict()


def parse_values(text: str, option: str, kind: type = float) -> list:
    """'1,2,4' -> [1.0, 2.0, 4.0]; with kind=int also ranges: '0-4' -> [0, 1, 2, 3, 4],
    '0,3-5' -> [0, 3, 4, 5]. Kind str splits on commas only."""
    values: list = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if kind is int and re.fullmatch(r"\d+\s*-\s*\d+", part):
                lo, hi = (int(x) for x in part.split("-"))
                if hi < lo:
                    raise ValueError
                if hi - lo + 1 + len(values) > MAX_RUNS:
                    raise UserError(f"{option} {text}: {hi - lo + 1:,} values; a study has at most "
                                    f"{MAX_RUNS:,} runs")
                values.extend(range(lo, hi + 1))
            elif kind is int:
                values.append(int(part))
            elif kind is float:
                values.append(float(part))
            else:
                values.append(part)
        except ValueError:
            expected = {int: "integers or ranges like 0-4", float: "numbers"}.get(kind, "values")
            raise UserError(f"{option} {text}: expected comma-separated {expected}, got {part!r}") from None
    if not values:
        raise UserError(f"{option}: no values given")
    if len(set(values)) != len(values):
        raise UserError(f"{option} {text}: a value is repeated")
    return values


def load_spec(path: str | os.PathLike) -> Study:
    """Read a study spec (TOML)::

        name = "beta_study"               # optional
        [fixed]                           # settings every run shares (TrainConfig fields)
        objective = "beta-h"
        steps = 20000
        [grid]                            # one run per combination
        beta = [1, 2, 4, 8, 16]
        seed = [0, 1, 2, 3, 4]
        [evaluate]                        # optional
        metrics = ["all"]
        seed = 0
        [evaluate.params.mig]             # optional: protocol parameters (as --param mig.num_train=1000)
        num_train = 1000
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            spec = tomllib.load(fh)
    except FileNotFoundError:
        raise ParameterError("spec", "no such file", value=path) from None
    except UnicodeDecodeError as exc:
        raise ParameterError("spec", f"not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files are UTF-8",
                             value=path) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ParameterError("spec", f"not a readable TOML file ({exc})", value=path) from None
    unknown = sorted(set(spec) - {"name", "description", "fixed", "grid", "evaluate"})
    if unknown:
        raise UserError(f"{path}: unknown top-level key(s) {', '.join(unknown)} "
                        f"(expected name, description, [fixed], [grid], [evaluate])")
    for table in ("fixed", "grid", "evaluate"):
        if not isinstance(spec.get(table, {}), dict):
            raise UserError(f"{path}: [{table}] must be a table")
    grid = {k: (v if isinstance(v, list) else [v]) for k, v in spec.get("grid", {}).items()}
    evaluate = spec.get("evaluate", {})
    unknown = sorted(set(evaluate) - {"metrics", "seed", "params"})
    if unknown:
        raise UserError(f"{path}: unknown key(s) in [evaluate]: {', '.join(unknown)} (expected metrics, seed, params)")
    eval_params = evaluate.get("params", {})
    if not (isinstance(eval_params, dict) and all(isinstance(v, dict) for v in eval_params.values())):
        raise UserError(f"{path}: [evaluate.params] must hold one table per metric, e.g. [evaluate.params.mig]")
    metrics = evaluate.get("metrics", ["all"])
    if isinstance(metrics, str):
        metrics = [metrics]
    if not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
        raise UserError(f"{path}: [evaluate] metrics must be a metric name or a list of them, got {metrics!r}")
    seed = evaluate.get("seed", 0)
    check_eval_seed(seed, f"{path}: [evaluate] seed")
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise UserError(f"{path}: name must be a string, got {name!r}")
    study = Study(grid=grid, fixed=dict(spec.get("fixed", {})), metrics=tuple(metrics),
                  eval_seed=seed, eval_params=eval_params, name=name, source=str(path))
    check_evaluation_options(study)
    return study


def check_eval_seed(value: Any, where: str = "--eval-seed") -> int:
    """The metrics' seed must be a non-negative integer (numpy refuses others, in every run)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{where}: must be a non-negative integer, got {value!r}")
    return value


# A grid larger than this is a typo (0-100000000), not a study: refused before expanding.
MAX_RUNS = 100_000


def check_evaluation_options(study: Study) -> None:
    """The evaluation every run will get (metric names, their parameters, the seed),
    checked like ``disentangle evaluate`` checks them, so that an option that would fail
    every run's evaluation stops the sweep before anything trains."""
    from disentangle.evaluation.evaluate import check_evaluation
    try:
        check_evaluation(study.metrics, study.eval_seed, study.eval_params)
    except ParameterError as exc:
        if exc.parameter == "seed":
            raise UserError(f"{study.source}: the evaluation seed (--eval-seed, [evaluate] seed) "
                            f"{exc.message}") from None
        raise UserError(f"{study.source}: {exc}") from None
    except UserError as exc:
        raise UserError(f"{study.source}: {exc}") from None


def expand(study: Study, data: str | None = None, device: str | None = None,
           threads: int | None = None) -> list[RunSpec]:
    """Every combination of the grid as a validated run configuration, named by its
    settings. Order: seed outermost (a study that stops early has covered its other
    axes for the first seeds), then the settings in the configuration's order, the
    objective innermost (:func:`disentangle.config.grid_axis_order`)."""
    from disentangle.config import EXECUTION_KEYS, TrainConfig, differing_keys, replicate_keys
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key in list(study.grid) + list(study.fixed):
        if key not in known:
            raise UserError(f"{study.source}: unknown run setting {key!r} "
                            f"(settings: {', '.join(sorted(known - {'data'}))})")
    for key, values in study.grid.items():
        if key in EXECUTION_KEYS:
            raise UserError(f"{study.source}: {key!r} says how runs execute, not what they compute; "
                            f"it cannot be a grid axis (set it once)")
        if not values:
            raise UserError(f"{study.source}: grid axis {key!r} has no values")
        if len({_value_key(v) for v in values}) != len(values):
            raise UserError(f"{study.source}: grid axis {key!r} repeats a value")
    if not study.grid:
        raise UserError(f"{study.source}: the grid is empty: give at least one axis "
                        f"(e.g. --beta 1,4,16 --seeds 0-2, or [grid] in a --spec file)")
    size = 1
    for values in study.grid.values():
        size *= len(values)
    if size > MAX_RUNS:
        raise UserError(f"{study.source}: the grid has {size:,} points; a study has at most {MAX_RUNS:,} runs")
    order = list(grid_axis_order()) + sorted(study.grid)
    axes = [k for k in dict.fromkeys(order) if k in study.grid]
    swept = [k for k in axes if len(study.grid[k]) > 1 and k not in replicate_keys()]
    fixed = dict(study.fixed)
    preset = fixed.pop("preset", None)
    runs: list[RunSpec] = []
    seen: dict[str, dict] = {}
    for combo in itertools.product(*(study.grid[k] for k in axes)):
        point = dict(zip(axes, combo))
        try:
            cfg = TrainConfig.from_preset(preset, **{**fixed, **point, "data": data, "device": device,
                                                     "threads": threads})
            cfg.validate()
        except UserError as exc:
            raise UserError(f"{study.source}: {exc}") from None
        except TypeError as exc:
            raise UserError(f"{study.source}: bad run setting ({exc})") from None
        config = cfg.to_dict()
        name = run_name(config, swept)
        if name in seen:
            diff = differing_keys(seen[name], config)
            raise UserError(f"{study.source}: two grid points get the run name {name!r} "
                            f"(they differ in {', '.join(diff) or 'nothing'}); this is a naming bug")
        seen[name] = config
        runs.append(RunSpec(name, config))
    return runs


def _value_key(value: Any) -> str:
    # 1 and 1.0 are the same setting
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return json.dumps(value, sort_keys=True)


def swept_axes(study: Study) -> list[str]:
    from disentangle.config import replicate_keys
    return [k for k in grid_axis_order() if k not in replicate_keys() and len(study.grid.get(k, [])) > 1]


# =========================================================================== locks
class RunLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``<run>/sweep.lock``.

    The kernel drops the lock when its holder dies (even by SIGKILL), so a stale lock
    never blocks a run. The file's content (pid, host, time of the holder) is only
    informative; it is the one file not renamed into place, because the lock belongs to
    the file's inode."""

    # locks this process holds, by path: flock conflicts between two descriptors even in
    # one process, and train() takes (reentrant) the lock its sweep worker already holds
    _held: dict[str, int] = {}

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None
        self._nested = False

    def acquire(self, tries: int = 2, reentrant: bool = False) -> bool:
        """Take the lock; False when another holder has it. ``reentrant``: succeed at once
        when this process already holds it (train() inside a sweep worker)."""
        key = os.path.realpath(self.path)
        if reentrant and key in RunLock._held:
            RunLock._held[key] += 1
            self._nested = True
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        for attempt in range(tries):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                # a second try: `sweep status` probes locks for an instant
                if attempt + 1 == tries:
                    os.close(fd)
                    return False
                time.sleep(0.2)
        self.fd = fd
        RunLock._held[key] = 1
        with contextlib.suppress(OSError):  # informative only; a full disk must not stop the run
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {_now()}\n".encode(), 0)
        return True

    def release(self) -> None:
        if self._nested:
            RunLock._held[os.path.realpath(self.path)] -= 1
            self._nested = False
            return
        if self.fd is not None:
            RunLock._held.pop(os.path.realpath(self.path), None)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def is_locked(run_dir: str | os.PathLike) -> bool:
    """Whether some process holds the run's lock (probed with a shared lock, for an instant)."""
    path = Path(run_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


@contextlib.contextmanager
def _study_lock(results_dir: Path):
    """Serialises the few study-level writes (study.json, report) between sweeps."""
    results_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(results_dir / _STUDY_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


# =========================================================================== run state
def _read_json_or_none(path: Path):
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def metric_names(metrics: Sequence[str]) -> list[str]:
    """The metric names a selection stands for ('all' = every registered metric)."""
    from disentangle.evaluation.evaluate import metric_names as expand_metrics
    return expand_metrics(metrics)


def missing_metrics(run_dir: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """The metrics of ``names`` the run's scores.json lacks (all of them when it is
    unreadable: the evaluation then says why, and the run is marked failed)."""
    try:
        scores = RunDir(run_dir).read_scores()
    except UserError:
        scores = {}
    return [m for m in names if m not in scores]




def _try_write_status(run: RunDir, state: str, reason: str | None) -> None:
    """RunDir.write_status where the disk still allows it (a full disk is the failure itself)."""
    with contextlib.suppress(UserError, OSError):
        run.write_status(state, reason=reason)


def _exception_reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, UserError):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# =========================================================================== one run
def execute_run(job: dict) -> dict:
    """Train and evaluate one run, holding its lock; never raises for a failed run.

    ``job``: name, run_dir, config (TrainConfig dict), metrics, eval_seed, eval_params,
    retry_failed.
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
        status = run.status()
        state = (status or {}).get("state")
        if state == "failed" and not job.get("retry_failed"):
            return finish("failed", "not retried (--retry-failed retries it)", status.get("reason"))
        actions = []
        reason = str((status or {}).get("reason") or "")
        if state == "failed" and reason.startswith("evaluation failed") and run.model_path.is_file():
            # training had finished: only the evaluation is retried
            actions.append("retried evaluation")
            run.write_status("finished")
        elif not run.training_finished(status):
            from disentangle.config import TrainConfig
            from disentangle.train import TrainingDiverged, train
            step = int((status or {}).get("step", 0) or 0)
            has_checkpoint = run.checkpoint_path.is_file()
            if state == "failed":
                actions.append(f"retried from step {step if has_checkpoint else 0}")
            elif state == "running":
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
                return finish("failed", actions[0], _exception_reason(exc))  # train() recorded it
            except Exception as exc:
                reason = f"training failed: {_exception_reason(exc)}"
                if run.has_config() or run_dir.is_dir():
                    _try_write_status(run, "failed", reason)
                return finish("failed", actions[0], reason)
        names = metric_names(job["metrics"])
        todo = missing_metrics(run_dir, names)
        if todo:
            try:
                from disentangle.evaluation.evaluate import evaluate_run
                evaluate_run(run_dir, metrics=tuple(todo), seed=int(job.get("eval_seed", 0)),
                             params=job.get("eval_params") or None,
                             data=job["config"].get("data"),
                             device=resolve_device(job["config"].get("device") or "auto"),
                             threads=job["config"].get("threads"), progress=False)
                still = missing_metrics(run_dir, names)
                if still:
                    raise RuntimeError(f"scores.json lacks {', '.join(still)} after evaluation")
            except Exception as exc:
                reason = f"evaluation failed: {_exception_reason(exc)}"
                _try_write_status(run, "failed", reason)
                return finish("failed", ", ".join(actions + ["evaluation"]), reason)
            actions.append(f"evaluated ({', '.join(todo)})")
        return finish("done", ", ".join(actions) or "already done")
    finally:
        lock.release()


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker die when its sweep does (even by SIGKILL): Linux's parent-death
    signal. A worker left running would finish its run unobserved, holding the lock."""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the sweep died before the signal was armed
        os._exit(1)


def _worker_main(job: dict, conn, parent_pid: int | None = None) -> None:
    """Body of one local worker process: its output goes to <run>/sweep.log; the outcome
    goes back through ``conn``."""
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(run_dir / LOG_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    # Ctrl-C reaches the whole process group; the parent decides what an interrupt means
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(f"--- {_now()} pid {os.getpid()} on {socket.gethostname()}: {job['name']} "
          f"({job['config'].get('threads')} thread(s))", flush=True)
    set_thread_env(job["config"].get("threads"))
    outcome = execute_run(job)
    print(f"--- {_now()} {outcome['result']}: {outcome['action']}"
          + (f" ({outcome['reason']})" if outcome["reason"] else ""), flush=True)
    try:
        conn.send(outcome)
        conn.close()
    except OSError:  # BrokenPipeError: the sweep is gone; the run's files say what happened
        print("--- the sweep that started this worker is gone; outcome not reported", flush=True)


class SlurmRun:
    """The callable submitit pickles for each array task. ``checkpoint`` makes a timed-out
    or preempted task requeue itself (submitit calls it on Slurm's warning signal); the
    requeued task resumes training from the run's last checkpoint."""

    def __call__(self, job: dict) -> dict:
        set_thread_env(job["config"].get("threads"))
        return execute_run(job)

    def checkpoint(self, job: dict):
        import submitit
        return submitit.helpers.DelayedSubmission(SlurmRun(), job)


# =========================================================================== executors
def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _signal_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        return f"worker process killed by {sig}"
    return f"worker process exited with status {exitcode} without reporting"


def _record_death(job: dict, reason: str) -> dict:
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
        if not run.training_finished(status) or missing_metrics(run_dir, metric_names(job["metrics"])):
            run.write_status("failed", reason=reason)
            return {"name": job["name"], "result": "failed", "action": "killed", "reason": reason}
        return {"name": job["name"], "result": "done", "action": "finished before its worker died",
                "reason": None}
    finally:
        lock.release()


def _running_progress(jobs: Iterable[dict]) -> str:
    parts = []
    for job in jobs:
        status = RunDir(job["run_dir"]).status() or {}
        step, steps = status.get("step", 0), job["config"]["steps"]
        phase = "evaluating" if status.get("state") == "finished" else f"{step}/{steps}"
        parts.append(f"{job['name']} {phase}")
    return ", ".join(parts)


def run_local(jobs: list[dict], n_jobs: int, echo: Callable[[str], None],
              progress_every: float = 30.0) -> list[dict]:
    """Run ``jobs`` in at most ``n_jobs`` separate processes at once (spawned, so each
    starts with fresh thread pools); one line per run as it starts and ends, and a
    summary line every ``progress_every`` seconds."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    pending = list(jobs)
    running: dict[int, tuple] = {}
    outcomes: list[dict] = []
    total = len(jobs)
    last_progress, last_line = time.monotonic(), ""
    # a SIGTERM (kill, scancel of a job running the sweep) stops the workers too, as Ctrl-C does
    previous = _raise_on_sigterm()
    try:
        while pending or running:
            while pending and len(running) < n_jobs:
                job = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker_main, args=(job, send, os.getpid()), name=f"sweep {job['name']}",
                                   daemon=False)
                proc.start()
                send.close()
                running[proc.sentinel] = (proc, recv, job)
                echo(f"  start   {job['name']} (pid {proc.pid}, {job['config'].get('threads')} thread(s), "
                     f"log {Path(job['run_dir']) / LOG_FILE})")
            ready = wait(list(running), timeout=max(1.0, progress_every))
            for sentinel in ready:
                proc, recv, job = running.pop(sentinel)
                proc.join()
                outcome = None
                with contextlib.suppress(EOFError, OSError):
                    if recv.poll():
                        outcome = recv.recv()
                recv.close()
                if outcome is None:
                    outcome = _record_death(job, _signal_reason(proc.exitcode))
                outcomes.append(outcome)
                echo(_outcome_line(outcome, len(outcomes), total))
            if running and time.monotonic() - last_progress >= progress_every:
                # steps advance at checkpoints; repeat an unchanged line only every 10 minutes
                line = f"  [{len(outcomes)}/{total}] running: {_running_progress(j for _, _, j in running.values())}"
                if line != last_line or time.monotonic() - last_progress >= 600:
                    echo(line)
                    last_line, last_progress = line, time.monotonic()
    except KeyboardInterrupt:
        echo("  interrupted: stopping the workers; run the same command again to resume")
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, _ in running.values():
            proc.join(timeout=30)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return outcomes


def _raise_on_sigterm():
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    return signal.signal(signal.SIGTERM, handler)


def _outcome_line(outcome: dict, k: int, total: int) -> str:
    word = {"done": "done", "failed": "FAILED", "busy": "skip"}[outcome["result"]]
    line = f"  [{k}/{total}] {word:6s} {outcome['name']}: {outcome['action']}"
    if outcome.get("seconds") is not None:
        line += f" ({_fmt_seconds(outcome['seconds'])})"
    if outcome.get("reason"):
        line += f" -- {outcome['reason']}"
    return line


def _fmt_seconds(s: float) -> str:
    s = float(s)
    return f"{s:.1f} s" if s < 90 else f"{s / 60:.1f} min"


# ----------------------------------------------------------------------------- Slurm
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


def _write_job_ids(results_dir: Path, ids: dict[str, str]) -> None:
    with _study_lock(results_dir):
        known = _read_json_or_none(results_dir / SLURM_JOBS_FILE) or {}
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
    return _wait_slurm(list(zip(jobs, submitted)), options.poll_s, echo)


def _wait_slurm(pairs: list[tuple[dict, Any]], poll_s: float, echo: Callable[[str], None]) -> list[dict]:
    """Poll until every task has a result file or has left the queue without one.
    (Job states come from squeue and the result files, never from sacct, which clusters
    without accounting do not answer.)"""
    remaining = {sj.job_id: (job, sj) for job, sj in pairs}
    gone_once: set[str] = set()
    outcomes: list[dict] = []
    total = len(pairs)
    last = None
    while remaining:
        states = squeue_states(remaining)
        for job_id in list(remaining):
            job, sj = remaining[job_id]
            outcome = None
            if sj.paths.result_pickle.exists():
                try:
                    outcome = sj.result()
                except Exception as exc:  # the task raised (a bug, not a run failure)
                    outcome = _record_death(job, f"slurm task {job_id} raised {_exception_reason(exc)}")
            elif states is not None and job_id not in states:
                # no result and not queued: give the result file one more poll to appear
                if job_id in gone_once:
                    outcome = _record_death(job, f"slurm task {job_id} ended without a result "
                                                 f"(killed or out of time; log {sj.paths.stderr})")
                gone_once.add(job_id)
            if outcome is not None:
                remaining.pop(job_id)
                outcomes.append(outcome)
                echo(_outcome_line(outcome, len(outcomes), total))
        if remaining:
            summary = _count_states(states or {}, remaining)
            if summary != last:
                echo(f"  [{len(outcomes)}/{total}] slurm: {summary}")
                last = summary
            time.sleep(poll_s)
    return outcomes


def _count_states(states: dict[str, str], remaining: dict) -> str:
    counts: dict[str, int] = {}
    for job_id in remaining:
        state = states.get(job_id, "finishing").lower()
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


# =========================================================================== the sweep
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


def _preflight(runs: list[RunSpec], results_dir: Path, data_sha: str | None) -> None:
    """Refuse before anything starts when a run directory of this name holds another
    configuration or other data: names show only the swept settings, so a second sweep
    with, say, other --steps into the same directory would otherwise mix studies."""
    from disentangle.config import differing_keys
    problems = []
    for run in runs:
        path = results_dir / run.name / CONFIG_FILE
        saved = _read_json_or_none(path) if path.is_file() else None
        if saved is None:
            if path.is_file():
                problems.append(f"{path}: unreadable")
            continue
        diff = differing_keys(saved.get("config") or {}, run.config)
        if diff:
            shown = ", ".join(f"{k} {(saved.get('config') or {}).get(k)!r} there vs {run.config.get(k)!r}"
                              for k in diff)
            problems.append(f"{results_dir / run.name} holds other settings ({shown})")
        sha = (saved.get("data") or {}).get("content_sha256")
        if data_sha and sha and sha != data_sha:
            problems.append(f"{results_dir / run.name} was trained on other data (sha256 {sha[:12]}...)")
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ParameterError("results", f"{'; '.join(problems[:3])}{more}; use another results directory "
                             f"for a study with other fixed settings", value=results_dir)


def _record_study(results_dir: Path, study: Study, runs: list[RunSpec], executor: dict) -> None:
    """Merge this sweep's runs into study.json (several sweeps may share a directory)."""
    with _study_lock(results_dir):
        record = _read_json_or_none(results_dir / STUDY_FILE)
        if not isinstance(record, dict) or record.get("format") != STUDY_FORMAT:
            record = {"format": STUDY_FORMAT, "created": _now(), "runs": {}, "sweeps": []}
        record.update({"name": study.name or record.get("name") or results_dir.name, "grid": study.grid,
                       "fixed": study.fixed, "metrics": list(study.metrics), "eval_seed": study.eval_seed,
                       "eval_params": study.eval_params, "swept": swept_axes(study), "updated": _now()})
        for run in runs:
            record["runs"][run.name] = {"config": run.config, "metrics": list(study.metrics),
                                        "eval_seed": study.eval_seed}
        record["sweeps"] = (record.get("sweeps") or [])[-49:] + [{"started": _now(), "host": socket.gethostname(),
                                                                  "pid": os.getpid(), **executor}]
        write_json_atomic(results_dir / STUDY_FILE, record)


def run_sweep(study: Study, results_dir: str | os.PathLike, *, executor: str = "local", jobs: int = 1,
              threads_per_job: int | None = None, retry_failed: bool = False, data: str | None = None,
              device: str = "auto", slurm: SlurmOptions | None = None, report: bool = True,
              echo: Callable[[str], None] = print, progress_every: float = 30.0) -> SweepResult:
    """Expand, train, evaluate and report a study in ``results_dir``. Idempotent; see the
    module docstring. Raises UserError only for problems found before any run starts."""
    from disentangle.data.dsprites import DSpritesData, resolve_data_path
    results_dir = Path(results_dir)
    if executor not in ("local", "slurm"):
        raise ParameterError("executor", "choose local or slurm", value=executor)
    if jobs < 1:
        raise ParameterError("jobs", "must be at least 1", value=jobs)
    if threads_per_job is not None and threads_per_job < 1:
        raise ParameterError("threads_per_job", "must be at least 1", value=threads_per_job)
    # options every run would fail on: refused before any run starts (and so never
    # recorded as a run's failure, which a corrected rerun would then skip)
    check_eval_seed(study.eval_seed, "--eval-seed" if study.source == "command line"
                    else f"{study.source}: [evaluate] seed (or --eval-seed)")
    check_evaluation_options(study)
    if executor == "local" and device not in (None, "auto"):
        resolve_device(device)
    # one dataset for the whole study, pinned by absolute path (workers and Slurm tasks
    # may start in other directories)
    data_path = resolve_data_path(data).resolve()
    data_sha = DSpritesData(data_path, load_images=False).attrs.get("content_sha256")
    slurm = slurm or SlurmOptions()
    if executor == "slurm":
        threads = threads_per_job or slurm.cpus_per_task
    else:
        threads = threads_per_job or max(1, cpu_count() // jobs)
    runs = expand(study, data=str(data_path), device=device, threads=threads)
    names = metric_names(study.metrics)
    from disentangle.results import check_writable
    check_writable(results_dir / STUDY_FILE)
    _preflight(runs, results_dir, data_sha)
    _record_study(results_dir, study, runs,
                  {"executor": executor, "jobs": jobs, "threads_per_job": threads,
                   "retry_failed": retry_failed, "data": str(data_path)})

    outcomes: list[dict] = []
    todo: list[dict] = []
    for run in runs:
        run_dir = results_dir / run.name
        status = RunDir(run_dir).status()
        if RunDir(run_dir).training_finished(status) and not missing_metrics(run_dir, names):
            outcomes.append({"name": run.name, "result": "done", "action": "already done", "reason": None})
        elif status and status.get("state") == "failed" and not retry_failed:
            outcomes.append({"name": run.name, "result": "failed",
                             "action": "not retried (--retry-failed retries it)", "reason": status.get("reason")})
        else:
            todo.append({"name": run.name, "run_dir": str(run_dir.resolve()), "config": run.config,
                         "metrics": list(study.metrics), "eval_seed": study.eval_seed,
                         "eval_params": study.eval_params, "retry_failed": retry_failed})
    echo(f"sweep {results_dir}: {len(runs)} run(s); {len(todo)} to do, "
         f"{sum(o['result'] == 'done' for o in outcomes)} done, "
         f"{sum(o['result'] == 'failed' for o in outcomes)} failed earlier"
         + (" (not retried; --retry-failed)" if any(o['result'] == 'failed' for o in outcomes) else ""))
    for outcome in outcomes:
        if outcome["result"] == "failed":
            echo(f"  failed  {outcome['name']}: {outcome['reason']}")
    result = SweepResult(results_dir, runs, outcomes)
    if todo:
        if executor == "local":
            n = min(jobs, len(todo))
            echo(f"  local executor: {n} process(es) at once, {threads} thread(s) each "
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
        result.report, result.figures = write_study_report(results_dir, [r.name for r in runs], echo=echo)
    echo(f"sweep {results_dir}: {result.count('done')} done, {result.count('failed')} failed, "
         f"{result.count('busy')} running elsewhere"
         + (f"; report {result.report}" if result.report else ""))
    return result


# =========================================================================== status
def _study_runs(results_dir: Path) -> tuple[list[str], dict]:
    record = _read_json_or_none(results_dir / STUDY_FILE)
    record = record if isinstance(record, dict) else {}
    names = list((record.get("runs") or {}).keys())
    # run directories not (or no longer) in the study record still count
    if results_dir.is_dir():
        for child in sorted(results_dir.iterdir()):
            if child.is_dir() and (child / CONFIG_FILE).is_file() and child.name not in names:
                names.append(child.name)
    return names, record


def study_status(results_dir: str | os.PathLike) -> list[dict]:
    """One row per run of the study: name, state (see STATES), step, steps, detail.

    Sources: each run's status.json and lock, study.json for the runs' metrics, and
    squeue for Slurm jobs still queued or running (never sacct)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise UserError(f"{results_dir}: no such results directory")
    names, record = _study_runs(results_dir)
    if not names:
        raise UserError(f"{results_dir}: no study here (no {STUDY_FILE} and no run directories)")
    job_ids = _read_json_or_none(results_dir / SLURM_JOBS_FILE) or {}
    queue = squeue_states(job_ids.values()) if job_ids else {}
    rows = []
    for name in names:
        run_dir = results_dir / name
        entry = (record.get("runs") or {}).get(name) or {}
        steps = (entry.get("config") or {}).get("steps")
        if steps is None:
            steps = ((_read_json_or_none(run_dir / CONFIG_FILE) or {}).get("config") or {}).get("steps")
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
            detail = "; ".join(x for x in ("evaluating" if finished else "", holder,
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


# =========================================================================== report
def write_study_report(results_dir: str | os.PathLike, run_names: Sequence[str] | None = None,
                       echo: Callable[[str], None] = print) -> tuple[Path, list[Path]]:
    """report.md (tables over seeds and per run, every failed run with its reason) and
    figures/ (rate–distortion, metrics against β, a traversal per β) for the study."""
    import warnings

    results_dir = Path(results_dir)
    with _study_lock(results_dir):
        with warnings.catch_warnings():
            # unfinished runs have no scores yet: the status table says so once
            warnings.simplefilter("ignore")
            from disentangle.results import collect
            df = collect(results_dir)
        names, record = _study_runs(results_dir)
        status_rows = study_status(results_dir)
        figures, figure_notes = _study_figures(results_dir, df, record)
        text = _report_markdown(results_dir, df, record, status_rows, figures, figure_notes)
        out = results_dir / REPORT_FILE
        write_text_atomic(out, text)
    for note in figure_notes:
        echo(f"  note: {note}")
    return out, figures


def _scored(df):
    cols = [c for c in df.columns if c.startswith("info.") or "." in c]
    return df[df[cols].notna().any(axis=1)] if cols else df.iloc[0:0]


def _study_figures(results_dir: Path, df, record: dict) -> tuple[list[Path], list[str]]:
    """Each figure on its own: one that cannot be drawn (e.g. no run has info scores yet)
    is noted in the report, the others are still written."""
    import matplotlib
    matplotlib.use("Agg")
    from disentangle import plots
    from disentangle.evaluation import figure_data
    from disentangle.report import headline_column

    fig_dir = results_dir / FIGURES_DIR
    written: list[Path] = []
    notes: list[str] = []

    def attempt(label: str, make: Callable[[], Any], out: Path) -> None:
        import matplotlib.pyplot as plt
        try:
            fig = make()
            paths = plots.save_figure(fig, out)
            plt.close(fig)
            written.append(Path(paths[0]))
        except Exception as exc:  # one figure's problem must not lose the report
            notes.append(f"{label}: not drawn ({_exception_reason(exc)})")

    scored = _scored(df)
    if scored.empty:
        return written, ["no run has scores yet: no figures"]
    if "info.rate_nats" in scored.columns:
        attempt("rate–distortion", lambda: plots.rate_distortion(scored), fig_dir / "rate_distortion.png")
    from disentangle.evaluation.metrics import metrics_of_kind
    metrics = []
    for metric in metrics_of_kind("disentanglement"):
        try:
            if scored[headline_column(scored, metric)].notna().any():
                metrics.append(metric)
        except Exception:
            continue
    if metrics and (scored["objective"] == "beta-h").any():
        attempt("metric vs β", lambda: plots.metric_vs_beta(scored, metrics), fig_dir / "metric_vs_beta.png")
    # a traversal per β (first seed): what each β's latents came to encode
    finished = df[df["status"] == "finished"].sort_values(["objective", "beta", "gamma", "capacity_max", "seed"])
    firsts = finished.drop_duplicates(subset=["objective", "beta", "gamma", "capacity_max"])
    for _, row in firsts.head(8).iterrows():
        run_dir = Path(row["path"])
        attempt(f"traversal {run_dir.name}", lambda rd=run_dir: plots.traversal(figure_data.traversals(rd)),
                fig_dir / f"traversal_{run_dir.name}.png")
    return written, notes


def _report_markdown(results_dir: Path, df, record: dict, status_rows: list[dict], figures: list[Path],
                     notes: list[str]) -> str:
    from disentangle.report import make_report
    lines = [f"# Study {record.get('name') or results_dir.name}", ""]
    grid = record.get("grid") or {}
    fixed = record.get("fixed") or {}
    if grid:
        lines.append("Grid: " + "; ".join(f"{k} ∈ {{{', '.join(format_value(v) for v in vals)}}}"
                                           for k, vals in grid.items()) + ".  ")
    if fixed:
        lines.append("Fixed: " + ", ".join(f"{k} = {format_value(v)}" for k, v in fixed.items()) + ".  ")
    if "data_label" in df.columns and df["data_label"].notna().any():
        lines.append(f"Data: {'; '.join(sorted(df['data_label'].dropna().unique()))}.  ")
    lines.append(f"Metrics: {', '.join(record.get('metrics') or ['all'])} (evaluation seed "
                 f"{record.get('eval_seed', 0)}). Written {_now()} by `disentangle sweep`.")
    lines.append("")
    counts = {s: sum(r["state"] == s for r in status_rows) for s in STATES}
    lines += ["## Runs", "", ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(status_rows)}.", ""]
    lines += ["| run | state | step | detail |", "|---|---|---:|---|"]
    for r in status_rows:
        steps = f"{r['step']}/{r['steps']}" if r["steps"] is not None else str(r["step"])
        detail = str(r["detail"]).replace("|", "\\|")
        lines.append(f"| {r['name']} | {r['state']} | {steps} | {detail} |")
    lines.append("")
    scored = _scored(df)
    if not scored.empty:
        swept = [k for k in (record.get("swept") or []) if k in df.columns]
        group_by = list(dict.fromkeys(["objective"] + swept))
        lines += ["## Scores, mean ± std over seeds", ""]
        lines.append(_safe(lambda: make_report(scored, "markdown", group_by=group_by)))
        lines += ["", "## Scores per run", ""]
        lines.append(_safe(lambda: make_report(scored, "markdown")))
        lines.append("")
    if figures or notes:
        lines += ["## Figures", ""]
        for path in figures:
            rel = path.relative_to(results_dir).as_posix()
            pdf = Path(rel).with_suffix(".pdf").as_posix()
            lines += [f"![{path.stem}]({rel})", f"*{_caption(path.stem)}* ([PDF]({pdf}))", ""]
        for note in notes:
            lines.append(f"- {note}")
        lines.append("")
    return "\n".join(lines)


def _caption(stem: str) -> str:
    if stem == "rate_distortion":
        return "Rate–distortion plane: each run's rate R and distortion D (nats), coloured by β."
    if stem == "metric_vs_beta":
        return "Disentanglement scores against β: mean ± std over seeds, each seed a dot."
    if stem.startswith("traversal_"):
        return (f"Latent traversals of {stem[len('traversal_'):]}: each row one latent dimension "
                f"swept over ±3 prior standard deviations, sorted by KL.")
    return stem.replace("_", " ")


def _safe(make: Callable[[], str]) -> str:
    try:
        return make().rstrip()
    except UserError as exc:
        return f"(no table: {exc})"
