"""The Slurm executor against a real Slurm cluster (.ci/start_slurm.sh starts a single-node
one in CI): a tiny sweep submitted as a job array through submitit, `sweep status` while
it runs, every run's results arriving, and a second sweep that submits only what is
missing and waits for it. Skipped, saying why, where no Slurm answers."""
from __future__ import annotations

import json
import time

import pytest

from disentangle import sweep as sw

pytestmark = pytest.mark.slurm

_AVAILABLE, _WHY = sw.slurm_available()


@pytest.fixture(scope="module", autouse=True)
def _need_slurm():
    if not _AVAILABLE:
        pytest.skip(f"no Slurm cluster answers here: {_WHY} (CI starts one with .ci/start_slurm.sh)")


def _study(betas):
    return sw.Study(grid={"beta": betas}, fixed={"steps": 20, "batch_size": 8, "checkpoint_every": 10,
                                                 "log_every": 10}, metrics=("mig",))


def test_sweep_through_a_slurm_job_array(tmp_path, tiny_data_path):
    results = tmp_path / "study"
    options = sw.SlurmOptions(time_min=10, cpus_per_task=1, mem="1G", poll_s=1.0, wait=False)
    lines: list[str] = []

    # 1. submit two runs and return at once
    result = sw.run_sweep(_study([1, 4]), results, executor="slurm", slurm=options, data=str(tiny_data_path),
                          echo=lines.append)
    assert result.submitted and not any("FAILED" in line for line in lines)
    jobs = json.loads((results / sw.SLURM_JOBS_FILE).read_text())
    assert sorted(jobs) == ["beta-vae_b1_s0", "beta-vae_b4_s0"]
    assert len({job_id.split("_")[0] for job_id in jobs.values()}) == 1  # one job array

    # 2. `sweep status` follows them from squeue and the run directories (no sacct)
    seen: set[str] = set()
    deadline = time.monotonic() + 240
    while True:
        rows = sw.study_status(results)
        seen.update(r["state"] for r in rows)
        if all(r["state"] in ("done", "failed") for r in rows) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [r["state"] for r in rows] == ["done", "done"], (sw.format_status(rows), lines)
    assert seen & {"queued", "running"}, seen
    for name in jobs:
        run_dir = results / name
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "finished" and status["step"] == 20
        assert status["runtime"]["threads"] == 1  # --cpus-per-task
        assert "mig" in json.loads((run_dir / "scores.json").read_text())
        assert (run_dir / "model.pt").is_file()
    # submitit's scripts and logs live in the results directory
    array_id = next(iter(jobs.values())).split("_")[0]
    assert (results / sw.SLURM_DIR / array_id / f"{array_id}_submission.sh").is_file()
    assert any((results / sw.SLURM_DIR).glob("*_0/*_log.out"))
    # each phase reached the run's sweep.log and the task's own log
    task_logs = "".join(p.read_text() for p in (results / sw.SLURM_DIR).glob("*/*_log.out"))
    for name in jobs:
        log = (results / name / sw.LOG_FILE).read_text()
        assert "slurm job" in log.splitlines()[0], log
        for phase in ("progress", "training 0/20 steps", "encoding 0/", "metric mig (1/1)"):
            assert phase in log, (phase, log)
        assert "metric mig (1/1)" in task_logs

    # 3. a wider grid: only the new run is submitted, and this time the sweep waits for it
    lines.clear()
    options.wait = True
    result = sw.run_sweep(_study([1, 4, 16]), results, executor="slurm", slurm=options, data=str(tiny_data_path),
                          report=False, echo=lines.append)
    by_name = {o["name"]: o for o in result.outcomes}
    assert by_name["beta-vae_b1_s0"]["action"] == by_name["beta-vae_b4_s0"]["action"] == "already done"
    assert by_name["beta-vae_b16_s0"]["result"] == "done", lines
    assert by_name["beta-vae_b16_s0"]["action"].startswith("trained")
    assert any("submitted job array" in line and "(1 task(s))" in line for line in lines)
    assert [r["state"] for r in sw.study_status(results)] == ["done"] * 3
