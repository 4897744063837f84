"""Sweeps: grid expansion and naming, run locks, and real tiny training runs through the
local executor: a finished run skipped, a worker killed by SIGKILL recorded as failed
and retried only when asked, an interrupted sweep resumed from its checkpoint, and two
sweep processes on one directory sharing the work without training a run twice."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from disentangle import sweep as sw
from disentangle.cli import user_message
from disentangle.errors import UserError
from disentangle.rundir import RunDir

RUN_B1, RUN_B4 = "beta-vae_b1_s0", "beta-vae_b4_s0"


# --------------------------------------------------------------------------- grid and names
def test_parse_values():
    assert sw.parse_values("1,2,4", "--beta") == [1.0, 2.0, 4.0]
    assert sw.parse_values("0-4", "--seeds", int) == [0, 1, 2, 3, 4]
    assert sw.parse_values("0,3-5, 9", "--seeds", int) == [0, 3, 4, 5, 9]
    assert sw.parse_values("beta-h,beta-b", "--objective", str) == ["beta-h", "beta-b"]
    for bad, kind in (("1,x", float), ("4-2", int), ("1,1", float), ("", float), ("1.5", int)):
        with pytest.raises(UserError):
            sw.parse_values(bad, "--opt", kind)


def test_format_value_is_short_and_exact():
    assert [sw.format_value(v) for v in (4.0, 4, 0.5, 1e-4, 3e-4, 25.0, "bernoulli")] == \
        ["4", "4", "0.5", "0.0001", "0.0003", "25", "bernoulli"]
    assert sw.format_value(0.1) != sw.format_value(0.1000001)


def test_expand_names_order_and_configs():
    study = sw.Study(grid={"beta": [1, 4, 16], "seed": [0, 1]}, fixed={"steps": 300})
    runs = sw.expand(study, data="/d.h5", threads=3)
    # seed outermost: a study stopped early has every β of its first seed
    assert [r.name for r in runs] == ["beta-vae_b1_s0", "beta-vae_b4_s0", "beta-vae_b16_s0",
                                      "beta-vae_b1_s1", "beta-vae_b4_s1", "beta-vae_b16_s1"]
    cfg = runs[4].config
    assert (cfg["beta"], cfg["seed"], cfg["steps"], cfg["method"]) == (4.0, 1, 300, "beta-vae")
    assert (cfg["data"], cfg["threads"]) == ("/d.h5", 3)
    # a swept setting other than the objective's own joins the name; fixed ones do not
    runs = sw.expand(sw.Study(grid={"beta": [4], "lr": [1e-4, 3e-4]}, fixed={"latent_dim": 6}))
    assert [r.name for r in runs] == ["beta-vae_b4_lr0.0001_s0", "beta-vae_b4_lr0.0003_s0"]
    # the capacity objective is named by its own settings (γ, C), both objectives mixed in blocks
    runs = sw.expand(sw.Study(grid={"seed": [0]}, blocks=[{"method": "beta-h", "beta": 4},
                                                          {"method": "beta-b", "gamma": 100,
                                                           "capacity_max": [5, 25]}]))
    names = [r.name for r in runs]
    assert names == ["beta-h_b4_s0", "beta-b_g100_c5_s0", "beta-b_g100_c25_s0"]
    assert len(set(names)) == len(names)
    # crossing the objective with an axis one of them ignores would train beta-h twice
    with pytest.raises(UserError, match=r"\[grid\] capacity_max: not a hyper-parameter of method beta-h"):
        sw.expand(sw.Study(grid={"method": ["beta-h", "beta-b"], "capacity_max": [5, 25]}))
    # every name a directory name, every config a valid TrainConfig round trip
    from disentangle.config import TrainConfig
    for run in runs:
        assert "/" not in run.name and " " not in run.name
        assert TrainConfig.from_dict(run.config).validate().to_dict() == run.config


def test_expand_refuses_bad_grids():
    cases = [
        (sw.Study(grid={}), "grid is empty"),
        (sw.Study(grid={"beta": [1], "wobble": [1]}), "unknown run setting 'wobble'"),
        (sw.Study(grid={"threads": [1, 2]}), "cannot be a grid axis"),
        (sw.Study(grid={"beta": [1, 1.0]}), "repeats a value"),
        (sw.Study(grid={"beta": [1, -2]}), "beta: must be >= 0"),
        (sw.Study(grid={"beta": [1]}, fixed={"method": "beta-x"}), "unknown method .beta-x."),
    ]
    for study, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(")):
            sw.expand(study)


def test_spec_file_and_command_line_overrides(tmp_path):
    spec = tmp_path / "study.toml"
    spec.write_text('name = "s"\n[fixed]\nsteps = 50\nlatent_dim = 6\n'
                    '[grid]\nbeta = [1, 4]\nseed = [0, 1]\n[evaluate]\nmetrics = ["mig", "sap"]\nseed = 3\n')
    study = sw.load_spec(spec)
    assert (study.grid, study.fixed, study.metrics, study.eval_seed) == (
        {"beta": [1, 4], "seed": [0, 1]}, {"steps": 50, "latent_dim": 6}, ("mig", "sap"), 3)
    # options override the file: a new β axis, a fixed seed taking the seed axis's place
    study = study.with_overrides(grid={"beta": [2.0, 8.0], "gamma": None}, fixed={"seed": 7, "steps": None})
    assert [r.name for r in sw.expand(study)] == ["beta-vae_b2_s7", "beta-vae_b8_s7"]
    assert all(r.config["steps"] == 50 and r.config["latent_dim"] == 6 for r in sw.expand(study))
    # the shipped study specs expand
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    assert len(sw.expand(sw.load_spec(bench / "studies" / "beta_study.toml"))) == 25
    for text, message in (("[grid]\nbeta = [1\n", "not a readable TOML"), ("colour = 1\n", "unknown top-level"),
                          ("[evaluate]\nmetric = 'mig'\n", r"unknown key\(s\) in \[evaluate\]")):
        spec.write_text(text)
        with pytest.raises(UserError, match=message):
            sw.load_spec(spec)
    with pytest.raises(UserError, match="no such file"):
        sw.load_spec(tmp_path / "missing.toml")


def test_parse_time():
    assert [sw.parse_time(t) for t in ("90", "1:30:00", "0:45", "1-00:00:00", 30)] == [90, 90, 1, 1440, 30]
    for bad in ("soon", "0", ""):
        with pytest.raises(UserError) as info:
            sw.parse_time(bad)
        assert re.search("--time", user_message(info.value))   # the CLI names the flag


# --------------------------------------------------------------------------- locks
def test_run_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    first, second = sw.RunLock(tmp_path), sw.RunLock(tmp_path)
    assert first.acquire()
    assert not second.acquire(tries=1)
    assert sw.is_locked(tmp_path)
    assert f"pid {os.getpid()}" in second.holder()
    first.release()
    assert not sw.is_locked(tmp_path)
    assert second.acquire(tries=1)
    second.release()
    # a holder killed by SIGKILL leaves no stale lock behind
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from disentangle.sweep import RunLock; "
                               f"assert RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert sw.is_locked(tmp_path)
        assert not sw.RunLock(tmp_path).acquire(tries=1)
    finally:
        holder.kill()
        holder.wait()
    assert not sw.is_locked(tmp_path)


def test_sweep_status_shows_what_a_running_run_is_doing(tmp_path):
    """A running run's row says its phase from progress.json (any host that sees the
    directory), not only "evaluating"; without a record, the step from status.json."""
    from disentangle.progress import RunProgress, report, reporting
    run_dir = tmp_path / "study" / "beta-vae_b4_s0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"config": {"steps": 1500}}))
    lock = sw.RunLock(run_dir)
    assert lock.acquire()
    try:
        assert sw.study_status(tmp_path / "study")[0]["detail"].startswith("training 0/1500")
        with reporting(RunProgress(RunDir(run_dir), lambda line: None)):
            report("encoding", 12288, 73728, "images")
        row = sw.study_status(tmp_path / "study")[0]
        assert row["state"] == "running"
        assert row["detail"].startswith("encoding 12,288/73,728 images (17%); pid "), row
        job = {"name": run_dir.name, "run_dir": str(run_dir), "config": {"steps": 1500}}
        assert sw.running_progress([job]) == "beta-vae_b4_s0 encoding 12,288/73,728 images (17%)"
    finally:
        lock.release()


def test_refuses_a_directory_holding_other_settings(tmp_path, tiny_data_path):
    """Names show only the swept settings: a second study with other fixed settings in
    the same directory is refused before anything runs, naming what differs."""
    results = tmp_path / "study"
    (results / RUN_B1).mkdir(parents=True)
    cfg = sw.expand(sw.Study(grid={"beta": [1]}, fixed={"steps": 999}))[0].config
    (results / RUN_B1 / "config.json").write_text(json.dumps({"config": cfg}))
    with pytest.raises(UserError, match=r"beta-vae_b1_s0 holds other settings \(steps 999 there vs 20"):
        sw.run_sweep(sw.Study(grid={"beta": [1, 4]}, fixed={"steps": 20}), results,
                     data=str(tiny_data_path), echo=lambda m: None)
    assert not (results / RUN_B4).exists()
    assert not (results / RUN_B1 / "status.json").exists()


# --------------------------------------------------------------------------- real runs
STEPS = 120


def _spec(tmp_path: Path, steps: int) -> Path:
    # checkpoints every 10 steps, so a killed run has something to resume from
    spec = tmp_path / "tiny.toml"
    spec.write_text(f"[fixed]\nsteps = {steps}\nbatch_size = 8\ncheckpoint_every = 10\nlog_every = 10\n"
                    f"[grid]\nbeta = [1, 4]\n[evaluate]\nmetrics = ['mig']\n")
    return spec


def _sweep_cmd(spec: Path, results: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "disentangle", "sweep", "--spec", str(spec), "--results", str(results),
            "--data", str(data), "--threads-per-job", "1", "--no-report", *extra]


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"sweep exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _lock_pid(run_dir: Path) -> int:
    return int((run_dir / sw.LOCK_FILE).read_text().split()[1])


def _log_steps(run_dir: Path) -> list[int]:
    lines = (run_dir / "train_log.csv").read_text().splitlines()
    return [int(line.split(",")[0]) for line in lines[1:]]


def _assert_intact(run_dir: Path, steps: int) -> None:
    """Every file of a finished run parses; the log has each step once, in order."""
    for name in ("config.json", "status.json", "scores.json", "study.json"):
        path = run_dir / name if name != "study.json" else run_dir.parent / name
        json.loads(path.read_text())
    assert _log_steps(run_dir) == list(range(10, steps + 1, 10))
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_killed_run_fails_then_retries_and_an_interrupted_sweep_resumes(tmp_path, tiny_data_path):
    results = tmp_path / "study"
    spec = _spec(tmp_path, STEPS)
    b1, b4 = results / RUN_B1, results / RUN_B4

    # 1. two workers; the one training β=4 is killed by SIGKILL after its first checkpoint
    proc = subprocess.Popen(_sweep_cmd(spec, results, tiny_data_path, "--jobs", "2"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    _wait_for(lambda: _status(b4).get("state") == "running" and _status(b4).get("step", 0) >= 10,
              proc, "the first checkpoint of β=4")
    os.kill(_lock_pid(b4), signal.SIGKILL)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, out
    assert f"FAILED {RUN_B4}: killed" in out and "SIGKILL" in out
    status = _status(b4)
    assert status["state"] == "failed" and "killed by SIGKILL at step" in status["reason"]
    killed_at = status["step"]
    assert 10 <= killed_at < STEPS
    # ... and it did not stop the other run
    assert _status(b1)["state"] == "finished"
    assert "mig" in json.loads((b1 / "scores.json").read_text())
    model_stamp = (b1 / "model.pt").stat().st_mtime_ns

    # 2. again, without --retry-failed: the finished run is skipped, the failed one reported
    lines: list[str] = []
    result = sw.run_sweep(sw.load_spec(spec), results, data=str(tiny_data_path), threads_per_job=1,
                          echo=lines.append)
    by_name = {o["name"]: o for o in result.outcomes}
    assert by_name[RUN_B1]["action"] == "already done"
    assert by_name[RUN_B4]["result"] == "failed" and "SIGKILL" in by_name[RUN_B4]["reason"]
    assert (b1 / "model.pt").stat().st_mtime_ns == model_stamp
    assert _status(b4)["step"] == killed_at
    # the report shows the failure and its reason, and the figures of the finished run
    report = (results / "report.md").read_text()
    assert f"| {RUN_B4} | failed | {killed_at}/{STEPS} | worker process killed by SIGKILL" in report
    assert f"| {RUN_B1} | done | {STEPS}/{STEPS} |" in report
    for fig in result.figures:
        assert fig.is_file() and fig.stat().st_size > 1000 and f"]({fig.relative_to(results).as_posix()})" in report
    assert results / "figures" / f"traversal_{RUN_B1}.png" in result.figures
    rows = {r["name"]: r for r in sw.study_status(results)}
    assert (rows[RUN_B1]["state"], rows[RUN_B4]["state"]) == ("done", "failed")

    # 3. --retry-failed resumes β=4 from its checkpoint; this time the whole sweep (its
    #    process group) is killed, as by a lost terminal or a node going down
    proc = subprocess.Popen(_sweep_cmd(spec, results, tiny_data_path, "--retry-failed"), env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    _wait_for(lambda: _status(b4).get("state") == "running" and _status(b4).get("step", 0) >= killed_at + 10,
              proc, "a checkpoint of the retried run")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    interrupted_at = _status(b4)["step"]
    assert _status(b4)["state"] == "running" and killed_at < interrupted_at < STEPS
    deadline = time.monotonic() + 10
    while sw.is_locked(b4) and time.monotonic() < deadline:  # the worker's death frees its lock
        time.sleep(0.05)
    rows = {r["name"]: r for r in sw.study_status(results)}
    assert rows[RUN_B4]["state"] == "interrupted"

    # 4. an interrupted run is resumed without being asked (it did not fail)
    result = sw.run_sweep(sw.load_spec(spec), results, data=str(tiny_data_path), threads_per_job=1,
                          report=False, echo=lines.append)
    by_name = {o["name"]: o for o in result.outcomes}
    assert by_name[RUN_B4]["result"] == "done", by_name[RUN_B4]
    resumed_from = int(by_name[RUN_B4]["action"].split("resumed from step ")[1].split(",")[0])
    assert resumed_from >= interrupted_at  # from a checkpoint, not from scratch
    assert _status(b4)["state"] == "finished"
    for run_dir in (b1, b4):
        _assert_intact(run_dir, STEPS)
    assert [r["state"] for r in sw.study_status(results)] == ["done", "done"]


def test_two_sweeps_on_one_directory_share_the_work(tmp_path, tiny_data_path):
    results = tmp_path / "study"
    spec = _spec(tmp_path, 40)
    procs = [subprocess.Popen(_sweep_cmd(spec, results, tiny_data_path), env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out
    both = "\n".join(outs)
    for name in (RUN_B1, RUN_B4):
        # trained by exactly one process; the other found it running or already done
        assert both.count(f"done   {name}: trained") == 1, both
        logs = (results / name / sw.LOG_FILE).read_text()
        assert logs.count("done: trained") == 1, logs
        # what each long step was doing reached the run's log
        for phase in ("training 0/40 steps", "encoding 0/", "metric mig (1/1)"):
            assert logs.count(phase) == 1, (phase, logs)
        _assert_intact(results / name, 40)
        assert not sw.is_locked(results / name)
    assert "running elsewhere" in both or "already done" in both
    assert sorted(json.loads((results / "study.json").read_text())["runs"]) == [RUN_B1, RUN_B4]


def test_failed_evaluation_is_recorded_and_retried_without_retraining(tmp_path, tiny_data_path):
    """In-process: a run whose evaluation fails (its dataset file vanished) is failed with
    the reason; --retry-failed evaluates it again without training it again."""
    import shutil
    data = tmp_path / "data.h5"
    shutil.copy(tiny_data_path, data)
    run = sw.expand(sw.Study(grid={"beta": [2]}, fixed={"steps": 20, "batch_size": 8, "checkpoint_every": 10}),
                    data=str(data), threads=1)[0]
    job = {"name": run.name, "run_dir": str(tmp_path / run.name), "config": run.config, "metrics": ["mig"],
           "eval_seed": 0, "retry_failed": False}
    run_dir = Path(job["run_dir"])
    # train, then take the data away before the evaluation reads it
    from disentangle.config import TrainConfig
    from disentangle.train import train
    train(TrainConfig.from_dict(run.config), run_dir)
    model_stamp = (run_dir / "model.pt").stat().st_mtime_ns
    data.rename(tmp_path / "elsewhere.h5")
    outcome = sw.execute_run(job)
    assert outcome["result"] == "failed" and outcome["reason"].startswith("evaluation failed:")
    assert str(data) in outcome["reason"]
    assert _status(run_dir)["state"] == "failed" and _status(run_dir)["reason"] == outcome["reason"]
    # not retried unless asked
    assert sw.execute_run(job)["action"].startswith("not retried")
    (tmp_path / "elsewhere.h5").rename(data)
    outcome = sw.execute_run({**job, "retry_failed": True})
    assert (outcome["result"], outcome["action"]) == ("done", "retried evaluation, evaluated (mig)")
    assert (run_dir / "model.pt").stat().st_mtime_ns == model_stamp
    assert _status(run_dir)["state"] == "finished" and _status(run_dir)["reason"] is None
    assert sw.execute_run(job)["action"] == "already done"
    assert not sw.is_locked(run_dir)


# --------------------------------------------------------------------------- issue 10/12: identity and options
def test_a_grid_over_precision_gets_one_name_per_point():
    # used to stop with "two grid points get the run name ...; this is a naming bug"
    runs = sw.expand(sw.Study(grid={"precision": ["float32", "bf16-mixed"]}, fixed={"beta": 4}))
    assert [r.name for r in runs] == ["beta-vae_b4_float32_s0", "beta-vae_b4_bf16-mixed_s0"]
    assert [r.config["precision"] for r in runs] == ["float32", "bf16-mixed"]


def test_train_and_sweep_name_a_run_alike():
    # train's default directory used to be "beta-h-b4-s0", the sweep's "beta-vae_b4_s0"
    from disentangle.config import TrainConfig
    from disentangle.train import default_run_dir
    for fixed in ({"beta": 4}, {"method": "beta-b", "gamma": 100, "capacity_max": 5}):
        (run,) = sw.expand(sw.Study(grid={"seed": [3]}, fixed=fixed))
        assert default_run_dir(TrainConfig(**fixed, seed=3), "results") == Path("results") / run.name
    assert default_run_dir(TrainConfig(beta=4, seed=0)).name == "beta-vae_b4_s0"


def test_bad_evaluation_options_stop_a_sweep_before_anything_trains(tmp_path, tiny_data_path):
    # issue 12 item 2: a bad eval seed used to train every run, then mark it failed
    results = tmp_path / "study"
    for study, named in ((sw.Study(grid={"beta": [1, 4]}, fixed={"steps": 20}, eval_seed=-1), "eval-seed"),
                         (sw.Study(grid={"beta": [1]}, fixed={"steps": 20}, metrics=("mig", "nope")), "nope")):
        with pytest.raises(UserError, match=named):
            sw.run_sweep(study, results, data=str(tiny_data_path), threads_per_job=1, report=False,
                         echo=lambda msg: None)
        assert not results.exists()
    for evaluate, named in (("seed = -3", r"\[evaluate\] seed"), ('seed = "x"', r"\[evaluate\] seed"),
                            ('metrics = ["mig", "nope"]', "nope"),
                            ("[evaluate.params.mig]\nnum_train = -5", r"mig\.num_train"),
                            ('[evaluate.params.dci]\nbackend = "nosuch"', r"dci\.backend"),
                            ("[evaluate.params.info]\niq_min_samples = 1", r"info\.iq_min_samples")):
        spec = tmp_path / "spec.toml"
        spec.write_text(f"[grid]\nbeta = [1, 4]\n[evaluate]\n{evaluate}\n")
        with pytest.raises(UserError, match=named):
            sw.load_spec(spec)
    spec.write_text("[grid]\nbeta = [1, 4]\n[evaluate]\nseed = 2\n[evaluate.params.mig]\nnum_train = 300\n")
    study = sw.load_spec(spec)
    assert (study.eval_seed, study.eval_params) == (2, {"mig": {"num_train": 300}})
    with pytest.raises(UserError, match=r"sap\.num_test"):
        sw.run_sweep(dataclasses.replace(study, eval_params={"sap": {"num_test": 0}}), results,
                     data=str(tiny_data_path), threads_per_job=1, report=False, echo=lambda msg: None)
    assert not results.exists()


# --------------------------------------------------------------------------- blocks (chained grids)
BENCH_STUDIES = Path(__file__).resolve().parents[1] / "benchmarks" / "studies"
# dlib's unsupervised_study_v1 (disentanglement_lib/config/unsupervised_study_v1/sweep.py),
# written out here: method -> (its hyper-parameter, the six values)
DLIB_STUDY = {"beta-vae": ("beta", [1, 2, 4, 6, 8, 16]),
              "annealed-vae": ("capacity_max", [5, 10, 25, 50, 75, 100]),
              "factor-vae": ("gamma", [10, 20, 30, 40, 50, 100]),
              "dip-vae-i": ("lambda_od", [1, 2, 5, 10, 20, 50]),
              "dip-vae-ii": ("lambda_od", [1, 2, 5, 10, 20, 50]),
              "beta-tcvae": ("beta", [1, 2, 4, 6, 8, 10])}


# dlib's seven datasets (its sweep.py), in the study file's order
DLIB_DATASETS = ["dsprites", "color-dsprites", "noisy-dsprites", "scream-dsprites", "smallnorb", "cars3d", "shapes3d"]


def test_unsupervised_study_v1_is_dlibs_36_configurations_on_its_seven_datasets():
    runs = sw.expand(sw.load_spec(BENCH_STUDIES / "unsupervised_study_v1.toml"))
    assert len(runs) == 7 * 36 and len({r.name for r in runs}) == 7 * 36
    by_dataset: dict[str, dict[str, list]] = {}
    for run in runs:
        cfg = run.config
        key, _ = DLIB_STUDY[cfg["method"]]
        by_dataset.setdefault(cfg["dataset"], {}).setdefault(cfg["method"], []).append(cfg[key])
        # preset dlib: dlib's network and training settings, one seed unless --seeds says more
        assert (cfg["architecture"], cfg["steps"], cfg["batch_size"], cfg["lr"], cfg["latent_dim"],
                cfg["likelihood"], cfg["seed"]) == ("dlib", 300_000, 64, 1e-4, 10, "bernoulli", 0)
        if cfg["method"] == "annealed-vae":
            assert (cfg["gamma"], cfg["capacity_steps"]) == (1000.0, 100_000)
    assert sorted(by_dataset) == sorted(DLIB_DATASETS)
    for by_method in by_dataset.values():
        assert by_method == {m: [float(v) for v in values] for m, (_, values) in DLIB_STUDY.items()}
    # each name says the method and its own strength (and, for AnnealedVAE, γ); the dataset
    # leads it unless it is dSprites (whose runs keep their names)
    names = {r.name for r in runs}
    assert {"beta-vae_b16_s0", "annealed-vae_g1000_c75_s0", "factor-vae_g100_s0", "dip-vae-i_l50_s0",
            "dip-vae-ii_l1_s0", "beta-tcvae_b10_s0", "shapes3d_beta-vae_b16_s0",
            "scream-dsprites_dip-vae-ii_l1_s0", "smallnorb_annealed-vae_g1000_c75_s0"} <= names


def test_blocks_cross_with_the_shared_axes_and_seeds_come_first():
    per_seed = 7 * 36
    study = sw.load_spec(BENCH_STUDIES / "unsupervised_study_v1.toml").with_overrides(grid={"seed": [0, 1, 2]})
    runs = sw.expand(study)
    assert len(runs) == 3 * per_seed and len({r.name for r in runs}) == 3 * per_seed
    # seed outermost across blocks: a study stopped early has all configurations of seed 0
    assert [r.config["seed"] for r in runs] == [0] * per_seed + [1] * per_seed + [2] * per_seed
    assert [r.name.rsplit("_s", 1)[0] for r in runs[:per_seed]] == \
        [r.name.rsplit("_s", 1)[0] for r in runs[per_seed:2 * per_seed]]
    # a command-line axis that a block holds replaces it in that block only
    runs = sw.expand(study.with_overrides(grid={"beta": [3.0], "dataset": ["dsprites"]}, fixed={"seed": 5}))
    assert sorted(r.name for r in runs if r.config["method"] in ("beta-vae", "beta-tcvae")) == \
        ["beta-tcvae_b3_s5", "beta-vae_b3_s5"]
    assert len(runs) == 26 and {r.config["beta"] for r in runs if r.config["method"] == "factor-vae"} == {1.0}
    # the Python API: scalars are a block's settings, lists its axes
    runs = sw.expand(sw.Study(grid={"seed": [0, 1]}, fixed={"steps": 50},
                              blocks=[{"method": "beta-vae", "beta": [1, 4]},
                                      {"method": "dip-vae-ii", "lambda_od": 2, "latent_dim": [4, 6]}]))
    assert [r.name for r in runs] == ["beta-vae_b1_s0", "beta-vae_b4_s0", "dip-vae-ii_l2_z4_s0",
                                      "dip-vae-ii_l2_z6_s0", "beta-vae_b1_s1", "beta-vae_b4_s1",
                                      "dip-vae-ii_l2_z4_s1", "dip-vae-ii_l2_z6_s1"]
    assert all(r.config["steps"] == 50 for r in runs)
    assert sw.swept_axes(sw.load_spec(BENCH_STUDIES / "unsupervised_study_v1.toml")) == \
        [k for k in sw.grid_axis_order() if k in ("dataset", "beta", "gamma", "capacity_max", "lambda_od")]


def test_dry_run_lists_every_block(tmp_path):
    from click.testing import CliRunner
    from disentangle.cli import main
    result = CliRunner().invoke(main, ["sweep", "--spec", str(BENCH_STUDIES / "unsupervised_study_v1.toml"),
                                       "--results", str(tmp_path / "r"), "--seeds", "0-1", "--dry-run"])
    assert result.exit_code == 0, result.output
    names = result.output.split()
    assert len(names) == 2 * 7 * 36 and len(set(names)) == len(names) and names[0] == "beta-vae_b1_s0"
    assert {n.split("_")[0] for n in names if not n.startswith(tuple(DLIB_STUDY))} == set(DLIB_DATASETS[1:])
    assert not (tmp_path / "r").exists()


def test_block_errors_name_the_file_the_block_and_the_key(tmp_path):
    spec = tmp_path / "s.toml"
    head = '[grid]\nseed = [0]\n[[blocks]]\nmethod = "beta-vae"\nbeta = [1, 2]\n'
    cases = [
        ('blocks = 3\n', r"s.toml: blocks must be an array of tables"),
        (head + '[[blocks]]\nmethod = "factor-vae"\n[blocks.gamma]\nx = 1\n',
         r"s.toml: block 2: gamma: expected a value or a list of values, got a table"),
        (head + '[[blocks]]\nmethod = "factor-vae"\ngama = [10]\n', r"s.toml: block 2: unknown run setting 'gama'"),
        (head + '[[blocks]]\nmethod = "factor-vae"\ngamma = [10, 10.0]\n',
         r"s.toml: block 2: grid axis 'gamma' repeats a value"),
        (head + '[[blocks]]\nmethod = "factor-vae"\ngamma = [10]\nthreads = [1, 2]\n',
         r"s.toml: block 2: 'threads' says how runs execute"),
        (head + '[[blocks]]\nmethod = "factor-vae"\nbeta = [4]\n',
         r"s.toml: block 2: beta: not a hyper-parameter of method factor-vae \(it uses gamma\)"),
        (head + '[[blocks]]\nmethod = "dip-vae-i"\nlambda_od = [-1]\n', r"s.toml: block 2: --lambda-od: must be"),
        (head + '[[blocks]]\nmethod = "beta-vae"\nseed = [1]\n', r"s.toml: block 2: seed: also set in \[grid\]"),
        (head + '[[blocks]]\nmethod = "beta-vae"\nbeta = [1]\nlr = 0.001\n',
         r"s.toml: block 1 and block 2 both give the run name 'beta-vae_b1_s0' \(they differ in lr\)"),
        (head + '[[blocks]]\nmethod = "wobble"\n', r"s.toml: block 2: .*unknown method 'wobble'"),
        # a shared hyper-parameter reaches every block: each block's method must read it
        ('[fixed]\ngamma = 10.0\n[grid]\nseed = [0]\n[[blocks]]\nmethod = "factor-vae"\n'
         '[[blocks]]\nmethod = "beta-vae"\nbeta = [1]\n',
         r"s.toml: \[fixed\] gamma \(shared by block 2\): not a hyper-parameter of method beta-vae "
         r"\(it uses beta\); set it in the blocks whose methods use it"),
        ('[fixed]\nmethod = "factor-vae"\n[grid]\nbeta = [1, 4]\n',
         r"s.toml: \[grid\] beta: not a hyper-parameter of method factor-vae \(it uses gamma\)$"),
    ]
    for text, message in cases:
        spec.write_text(text)
        with pytest.raises(UserError) as info:
            sw.expand(sw.load_spec(spec))
        text_of_error = user_message(info.value)
        assert "\n" not in text_of_error and re.search(message, text_of_error), (text, text_of_error)


def test_the_run_bound_counts_every_block():
    seeds = list(range(60_000))
    two = sw.Study(grid={"seed": seeds}, blocks=[{"method": "beta-vae"}, {"method": "beta-tcvae"}])
    assert 60_000 <= sw.MAX_RUNS < 120_000   # each block alone is within the bound, both are not
    with pytest.raises(UserError, match="the 2 blocks have 120,000 points; a study has at most 100,000 runs"):
        sw.expand(two)


def test_study_json_and_the_report_record_the_blocks(tmp_path):
    import pandas as pd

    from disentangle.study_report import _report_markdown
    from disentangle.sweep.runner import _record_study
    study = sw.Study(grid={"seed": [0]}, fixed={"steps": 50},
                     blocks=[{"method": "beta-vae", "beta": [1, 4]}, {"method": "factor-vae", "gamma": 10}])
    _record_study(tmp_path, study, sw.expand(study), {"executor": "local"})
    record = json.loads((tmp_path / sw.STUDY_FILE).read_text())
    assert record["blocks"] == study.blocks and record["swept"] == ["beta"]
    assert sorted(record["runs"]) == ["beta-vae_b1_s0", "beta-vae_b4_s0", "factor-vae_g10_s0"]
    text = _report_markdown(tmp_path, pd.DataFrame(), record, [], [], [])
    assert "Block 1: method = beta-vae; beta ∈ {1, 4}.  " in text.splitlines()
    assert "Block 2: method = factor-vae; gamma = 10.  " in text.splitlines()
    # a later sweep without blocks into the same directory drops them from the record
    _record_study(tmp_path, sw.Study(grid={"beta": [2]}), [], {"executor": "local"})
    assert "blocks" not in json.loads((tmp_path / sw.STUDY_FILE).read_text())
