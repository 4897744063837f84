"""Studies: a grid of training configurations, expanded into named run directories,
trained and evaluated by local processes or a Slurm job array (submitit), and summed up
in a report with figures.

    study = Study(grid={"beta": [1, 4, 16], "seed": [0, 1]}, fixed={"steps": 5000})
    result = run_sweep(study, "results/study", executor="local", jobs=2)

The results directory::

    results/study/
      study.json               the grid, the fixed settings, every run's configuration
      beta-h_b4_s0/            one run directory per grid point (see disentangle.rundir)
        sweep.lock             held (fcntl.flock) by the process working on the run
        sweep.log              that process's output, progress lines included
        progress.json          what the running process is doing now (disentangle.progress)
      report.md, figures/      the study's tables and figures, rewritten by every sweep
      slurm/                   submitit's scripts and logs (Slurm executor)
      slurm_jobs.json          run name -> Slurm job id of its latest submission

Every run is independent and idempotent: a finished and evaluated run is skipped, an
interrupted one resumes from its checkpoint (``disentangle.train.train`` does that), a
failed one is retried when asked (``retry_failed``) or when the options it failed with
(recorded with the failure, :meth:`disentangle.rundir.RunDir.record_failure`) have
changed. A failure is written to the run's status.json with its reason and never stops
the other runs. A spec's fixed data, device and threads hold unless the caller gives them
(a disagreement is refused); Slurm's availability and every run directory's place are
checked before study.json is written. A run is worked on by
at most one process at a time: the one holding its lock; any other skips it as
"running elsewhere". So two sweeps on one directory (the same command started twice, or
a local sweep beside a Slurm one) share the work instead of duplicating it.

The package, one job a module::

    grid.py      Study, load_spec (the TOML spec), parse_values, expand -> RunSpec (names
                 from disentangle.config.run_name), the MAX_RUNS bound
    state.py     the study directory's files and lock, what a running run is doing (a
                 run's files, state and lock are disentangle.rundir's RunDir and RunLock)
    execute.py   one run: execute_run (train or resume, evaluate, record a failure)
    local.py     the local executor: spawned worker processes, parent-death signal, progress
    slurm.py     the Slurm executor: submitit job array, SlurmOptions, parse_time, squeue
    runner.py    run_sweep: expand, check, record study.json, execute, report
    status.py    study_status, format_status

The report and figures are the report layer's (disentangle.study_report), which is
handed the study's state (study.json, every run's status row) and imports nothing of the
sweep; the package imports neither plots nor report at module level.
"""
from __future__ import annotations

from disentangle.config import format_value, grid_axis_order, run_name
from disentangle.errors import exception_reason
from disentangle.io import LOCK_FILE, LOG_FILE
from disentangle.rundir import RUN_STATES as STATES
from disentangle.rundir import RunLock, is_locked
from disentangle.sweep.execute import execute_run, outcome_line, record_death
from disentangle.sweep.grid import (MAX_RUNS, RunSpec, Study, check_eval_seed, check_evaluation_options,
                                    check_execution_settings, expand, load_spec, parse_values, swept_axes)
from disentangle.sweep.local import cpu_count, run_local
from disentangle.sweep.runner import SweepResult, run_sweep
from disentangle.sweep.slurm import SlurmOptions, SlurmRun, parse_time, run_slurm, slurm_available, squeue_states
from disentangle.sweep.state import (SLURM_DIR, SLURM_JOBS_FILE, STUDY_FILE, STUDY_FORMAT, metric_names, run_phase,
                                     running_progress, study_lock, study_runs)
from disentangle.sweep.status import format_status, study_status
from disentangle.study_report import FIGURES_DIR, REPORT_FILE

__all__ = [
    "FIGURES_DIR",
    "LOCK_FILE",
    "LOG_FILE",
    "MAX_RUNS",
    "REPORT_FILE",
    "RunLock",
    "RunSpec",
    "SLURM_DIR",
    "SLURM_JOBS_FILE",
    "STATES",
    "STUDY_FILE",
    "STUDY_FORMAT",
    "SlurmOptions",
    "SlurmRun",
    "Study",
    "SweepResult",
    "check_eval_seed",
    "check_evaluation_options",
    "check_execution_settings",
    "cpu_count",
    "exception_reason",
    "execute_run",
    "expand",
    "format_status",
    "format_value",
    "grid_axis_order",
    "is_locked",
    "load_spec",
    "metric_names",
    "outcome_line",
    "parse_time",
    "parse_values",
    "record_death",
    "run_local",
    "run_name",
    "run_phase",
    "run_slurm",
    "run_sweep",
    "running_progress",
    "slurm_available",
    "squeue_states",
    "study_lock",
    "study_runs",
    "study_status",
    "swept_axes",
]

