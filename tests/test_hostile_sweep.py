"""Issue 22, the sweep and study items: what a spec fixes is never replaced by a
command-line default (and a conflict is one line); a run that failed for an option is
retried when the option changes, and only then; Slurm's absence, or a user's file or
folder where a run directory goes, is refused before anything is written (study.json
included); evaluate-study never counts a copied run as a second seed, and names a run it
leaves out. Each refusal: exit 1, one "Error:" line, no traceback, every file unchanged."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from disentangle.errors import UserError
from disentangle.io import CODES_FILE, CONFIG_FILE, LOCK_FILE, MODEL_FILE, SCORES_FILE
from disentangle.rundir import RunDir
from cli_checks import file_hashes as _hashes, invoke as _invoke, one_line as _one_line

RUN = "beta-vae_b1_s0"
SMALL = 'steps = 2\nbatch_size = 8\nlatent_dim = 3\ncheckpoint_every = 2\nlog_every = 1\n'


def _spec(path: Path, fixed: str = "", evaluate: str = '[evaluate]\nmetrics = ["mig"]\n') -> Path:
    path.write_text(f"[fixed]\n{SMALL}{fixed}[grid]\nbeta = [1]\nseed = [0]\n{evaluate}")
    return path


def _threads_unlike_the_default() -> int:
    from disentangle.sweep import cpu_count
    return 1 if cpu_count() > 1 else 2   # the local default is cores // jobs


# ----------------------------------------------------------------------------- 1. [fixed] data, device, threads
def test_what_a_spec_fixes_is_not_replaced_by_command_line_defaults(tmp_path, tiny_data_path, monkeypatch):
    # no dataset by the path rule: only the spec's data can make this sweep work
    monkeypatch.delenv("DISENTANGLE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    threads = _threads_unlike_the_default()
    spec = _spec(tmp_path / "s.toml", f'data = "{tiny_data_path}"\ndevice = "cpu"\nthreads = {threads}\n')
    result = _invoke("sweep", "--results", tmp_path / "r", "--spec", spec, "--no-report")
    assert result.exit_code == 0, result.output
    config = RunDir(tmp_path / "r" / RUN).config()
    assert (config["data"], config["device"], config["threads"]) == (str(Path(tiny_data_path).resolve()), "cpu",
                                                                     threads)
    assert (RunDir(tmp_path / "r" / RUN).status() or {})["runtime"]["threads"] == threads


@pytest.mark.parametrize("key, value, flag, given", [
    ("data", "'{data}'", "--data", "{other}"),
    ("device", "'cpu'", "--device", "auto"),
    ("threads", "1", "--threads-per-job", "2"),
])
def test_a_spec_and_an_explicit_option_that_disagree_are_one_line(tmp_path, tiny_data_path, key, value, flag,
                                                                  given):
    other = tmp_path / "other.h5"
    shutil.copy(tiny_data_path, other)
    spec = _spec(tmp_path / "s.toml", f"{key} = {value.format(data=tiny_data_path)}\n")
    before = _hashes(tmp_path)
    line = _one_line(_invoke("sweep", "--results", tmp_path / "r", "--spec", spec, "--metric", "mig",
                             flag, given.format(other=other)))
    assert f"[fixed] {key} = " in line and flag in line and str(spec) in line
    assert _hashes(tmp_path) == before and not (tmp_path / "r").exists()
    dry = _one_line(_invoke("sweep", "--results", tmp_path / "r", "--spec", spec, "--dry-run",
                            flag, given.format(other=other)))
    assert dry == line


def test_a_spec_and_an_option_that_agree_are_one_setting(tmp_path, tiny_data_path, monkeypatch):
    from disentangle.sweep import Study
    from disentangle.sweep.grid import check_execution_settings
    monkeypatch.chdir(tiny_data_path.parent)
    study = Study(grid={"beta": [1]}, fixed={"data": tiny_data_path.name, "device": "cpu", "threads": 1},
                  blocks=[], source="s.toml")
    check_execution_settings(study, {"data": str(tiny_data_path), "device": "CPU", "threads": 1})
    with pytest.raises(UserError, match=r"s.toml: \[fixed\] threads = 1, but --threads-per-job 3"):
        check_execution_settings(study, {"threads": 3})
    blocks = Study(grid={"seed": [0]}, blocks=[{"method": "beta-vae", "device": "cpu"}], source="s.toml")
    with pytest.raises(UserError, match=r"block 1 device = 'cpu', but --device cuda"):
        check_execution_settings(blocks, {"device": "cuda"})


# ----------------------------------------------------------------------------- 3. failures and their options
def test_a_data_dependent_evaluation_option_stops_the_sweep_before_training(tmp_path, tiny_data_path):
    results, spec = tmp_path / "r", tmp_path / "s.toml"
    _spec(spec, evaluate='[evaluate]\nmetrics = ["beta_vae"]\n[evaluate.params.beta_vae]\nnum_train = 1\n')
    line = _one_line(_invoke("sweep", "--results", results, "--spec", spec, "--data", tiny_data_path, "--no-report"))
    assert "s.toml: dataset dsprites" in line and "beta_vae.num_train 1: at least 2 points" in line
    assert not results.exists()


def test_a_failure_caused_by_an_option_is_retried_when_the_option_changes(tmp_path, tiny_data_path, monkeypatch):
    results, spec = tmp_path / "r", tmp_path / "s.toml"
    bad = '[evaluate]\nmetrics = ["beta_vae"]\n[evaluate.params.beta_vae]\nnum_train = 1\nnum_eval = 50\n'
    _spec(spec, evaluate=bad)
    args = ("sweep", "--results", results, "--spec", spec, "--data", tiny_data_path, "--threads-per-job", "1",
            "--no-report")
    # the sweep now refuses this option before training (the test above); without that check
    # the worker's evaluation fails on it, which stands for any failure an option causes at run time
    import disentangle.sweep.runner as runner
    with monkeypatch.context() as patched:
        patched.setattr(runner, "_check_evaluation_on_data", lambda study, runs: None)
        first = _invoke(*args)
        before = _hashes(results / RUN)
        same = _invoke(*args)
    assert first.exit_code == 1 and "evaluation failed" in first.output, first.output
    status = RunDir(results / RUN).status()
    assert status["state"] == "failed" and status["failure"]["error"]
    assert status["failure"]["options"]["eval_params"] == {"beta_vae": {"num_train": 1, "num_eval": 50}}
    # the same options again: skipped, saying so, nothing of the run touched
    assert same.exit_code == 1 and "failed with these same options (--retry-failed retries it)" in same.output
    assert _hashes(results / RUN) == before
    assert _hashes(results / RUN) == before
    # the corrected option: retried by itself, the evaluation only (training had finished)
    _spec(spec, evaluate=bad.replace("num_train = 1", "num_train = 50"))
    fixed = _invoke(*args)
    assert fixed.exit_code == 0, fixed.output
    assert "options changed since it failed (eval_params)" in fixed.output and "retried evaluation" in fixed.output
    assert "trained" not in fixed.output.split("retried evaluation")[1].split("\n")[0]
    assert "beta_vae" in RunDir(results / RUN).read_scores()
    assert RunDir(results / RUN).status()["state"] == "finished" and "failure" not in RunDir(results / RUN).status()


def test_a_failure_record_tells_changed_options_by_name(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    options = {"config": {"threads": 1, "beta": 4.0}, "eval_params": {}, "eval_seed": 0}
    assert run.failure_options_changed(options) is None            # not failed
    run.write_status("failed", reason="old failure, no options")
    assert run.failure_options_changed(options) is None            # recorded none: --retry-failed only
    run.record_failure("training failed: x", options, "ValueError")
    assert run.failure_options_changed(json.loads(json.dumps(options))) == []
    assert run.failure_options_changed({**options, "config": {"threads": 2, "beta": 4.0}}) == ["config.threads"]
    run.write_status("running")                                     # a new attempt drops the old record
    assert "failure" not in run.status()


# ----------------------------------------------------------------------------- 4. Slurm absent
def test_slurm_absent_is_refused_before_anything_is_written(tmp_path, tiny_data_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    before = _hashes(tmp_path)
    line = _one_line(_invoke("sweep", "--results", tmp_path / "r", "--beta", "1", "--seeds", "0", "--steps", "2",
                             "--data", tiny_data_path, "--metric", "mig", "--executor", "slurm"))
    assert "--executor slurm" in line and "sbatch" in line
    assert _hashes(tmp_path) == before and not (tmp_path / "r").exists()
    # an existing study directory gets no study.json, no lock file either
    (tmp_path / "r").mkdir()
    line = _one_line(_invoke("sweep", "--results", tmp_path / "r", "--beta", "1", "--seeds", "0", "--steps", "2",
                             "--data", tiny_data_path, "--metric", "mig", "--executor", "slurm"))
    assert list((tmp_path / "r").iterdir()) == []


# ----------------------------------------------------------------------------- 5. a user's file in a run's place
@pytest.mark.parametrize("kind", ["file", "folder"])
def test_a_users_file_where_a_run_directory_goes_is_one_line(tmp_path, tiny_data_path, kind):
    results = tmp_path / "r"
    results.mkdir()
    if kind == "file":
        (results / RUN).write_text("my notes\n")
    else:
        (results / RUN).mkdir()
        (results / RUN / "notes.txt").write_text("my notes\n")
    before = _hashes(tmp_path)
    line = _one_line(_invoke("sweep", "--results", results, "--beta", "1", "--seeds", "0", "--steps", "2",
                             "--data", tiny_data_path, "--metric", "mig", "--threads-per-job", "1"))
    assert str(results / RUN) in line and "nothing was written" in line
    assert ("not a directory" in line) if kind == "file" else ("not a disentangle run directory" in line)
    assert _hashes(tmp_path) == before
    assert not (results / "study.json").exists() and not (results / RUN / LOCK_FILE).exists()


# ----------------------------------------------------------------------------- 2. evaluate-study: seeds
def _study_of(tiny_trained_run, root: Path) -> Path:
    run = root / "run_s0"
    shutil.copytree(tiny_trained_run, run, ignore=shutil.ignore_patterns(CODES_FILE, SCORES_FILE))
    return run


@pytest.mark.parametrize("relabel", [False, True])
def test_evaluate_study_refuses_a_copied_run(tiny_trained_run, tmp_path, tiny_data_path, relabel):
    root = tmp_path / "study"
    run = _study_of(tiny_trained_run, root)
    copy = root / "run_s0_copy"
    shutil.copytree(run, copy)                                    # cp -r study/run_s0 study/run_s0_copy
    if relabel:   # the copy claims another seed: its model.pt is still the same bytes
        saved = json.loads((copy / CONFIG_FILE).read_text())
        saved["config"]["seed"] = 1
        (copy / CONFIG_FILE).write_text(json.dumps(saved))
    before = _hashes(tmp_path)
    line = _one_line(_invoke("evaluate-study", root, "--data", tiny_data_path, "--device", "cpu", "--threads", "1"))
    assert str(run) in line and str(copy) in line and "nothing was written" in line
    assert ("identical model.pt" if relabel else "the same seed (0)") in line
    assert _hashes(tmp_path) == before and not (run / CODES_FILE).exists()


def test_evaluate_study_names_a_run_without_its_model(tiny_trained_run, tmp_path, tiny_data_path):
    root = tmp_path / "study"
    _study_of(tiny_trained_run, root)
    other = root / "run_s1"
    shutil.copytree(root / "run_s0", other)
    saved = json.loads((other / CONFIG_FILE).read_text())
    saved["config"]["seed"] = 1
    (other / CONFIG_FILE).write_text(json.dumps(saved))
    (other / MODEL_FILE).unlink()
    before = _hashes(tmp_path)
    line = _one_line(_invoke("evaluate-study", root, "--data", tiny_data_path, "--device", "cpu", "--threads", "1"))
    assert f"{other} has no {MODEL_FILE}" in line and "two or more finished runs" in line
    assert _hashes(tmp_path) == before


def test_slurm_threads_beyond_cpus_per_task_are_refused_before_anything_is_written(tmp_path, tiny_data_path):
    # a spec's threads = 4 on 1 CPU per task: four threads sharing one CPU run many times slower
    spec = _spec(tmp_path / "s.toml", fixed="threads = 4\n")
    before = _hashes(tmp_path)
    line = _one_line(_invoke("sweep", "--results", tmp_path / "r", "--spec", spec, "--data", tiny_data_path,
                             "--executor", "slurm"))
    assert line == (f"Error: --cpus-per-task 1: runs ask for 4 threads ({spec}: threads), more than the CPUs a "
                    f"Slurm task gets; raise --cpus-per-task to 4 or ask for fewer threads")
    line = _one_line(_invoke("sweep", "--results", tmp_path / "r", "--beta", "1", "--steps", "2", "--data",
                             tiny_data_path, "--executor", "slurm", "--threads-per-job", "2", "--cpus-per-task", "1"))
    assert "runs ask for 2 threads (--threads-per-job)" in line
    assert _hashes(tmp_path) == before
