"""The run directory's one owner (disentangle.rundir), device resolution
(disentangle.devices) and parameter errors: one policy each, used by every layer."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from disentangle import rundir as rundir_module
from disentangle.cli import flag_of, main, user_message
from disentangle.devices import resolve_device, thread_limit
from disentangle.errors import ParameterError, UserError
from disentangle.io import read_json, write_json_atomic
from disentangle.results import ResultsWarning, collect
from disentangle.rundir import RunDir

SMALL_MIG = {"mig": {"num_train": 400}}


# --------------------------------------------------------------------------- status
def test_status_writes_merge_and_keep_runtime_fields(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    assert run.status() is None                       # no status.json yet
    run.write_status("running", step=5, runtime={"pid": 1, "host": "h"})
    run.write_status("finished", step=10, model_sha256="abc")
    run.write_status("failed", reason="evaluation failed: x")   # step, runtime, checksum kept
    status = read_json(run.status_path)
    assert status["state"] == "failed" and status["reason"] == "evaluation failed: x"
    assert status["step"] == 10 and status["runtime"] == {"pid": 1, "host": "h"}
    assert status["model_sha256"] == "abc" and status["updated"]
    run.write_status("finished")                      # the reason is cleared unless given
    assert read_json(run.status_path)["reason"] is None and run.status()["step"] == 10


def test_an_unreadable_status_reads_as_unknown_everywhere(run_dir, tiny_data_path):
    from disentangle import sweep as sw
    from disentangle.config import TrainConfig
    from disentangle.train import train
    before = torch.load(run_dir / "model.pt", weights_only=True)
    (run_dir / "status.json").write_text("{not json")
    run = RunDir(run_dir)
    status = run.status()
    assert status["state"] == "unknown" and "status.json: unreadable" in status["reason"]
    assert not run.training_finished()
    # the model cannot be checked against its recorded sha256: refused, not trusted
    with pytest.raises(UserError, match="cannot check it against the sha256"):
        run.load_model()
    # the results table says "unknown" and warns once, naming the file
    with pytest.warns(ResultsWarning, match="status.json: unreadable"):
        df = collect(run_dir.parent)
    assert list(df["status"]) == ["unknown"]
    # the sweep's view is the same: not finished, so it would resume the run
    assert not RunDir(run_dir).missing_metrics([]) and sw.study_status(run_dir.parent)[0]["state"] == "interrupted"
    # training resumes from the last checkpoint and writes a fresh status: same weights
    config = TrainConfig.from_dict(run.config())
    train(config, run_dir)
    assert RunDir(run_dir).training_finished()
    after = torch.load(run_dir / "model.pt", weights_only=True)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert read_json(run_dir / "status.json")["state"] == "finished"


def test_finished_needs_the_status_and_the_model(run_dir):
    run = RunDir(run_dir)
    assert run.training_finished()
    run.write_status("running")
    assert not run.training_finished()
    run.write_status("finished")
    (run_dir / "model.pt").unlink()
    assert not run.training_finished()
    assert not run.training_finished({"state": "finished"})


# --------------------------------------------------------------------------- the model
def test_model_is_hashed_once_per_evaluation(run_dir, tiny_data, monkeypatch):
    from disentangle.evaluation.evaluate import evaluate_run
    hashed, config_reads = [], []
    real_hash, real_read = rundir_module.file_sha256, rundir_module.read_json
    monkeypatch.setattr(rundir_module, "file_sha256", lambda p: hashed.append(p) or real_hash(p))
    monkeypatch.setattr(rundir_module, "read_json",
                        lambda p: (config_reads.append(p) if p.name == "config.json" else None) or real_read(p))
    # info needs the model and the codes table: every path that hashes or reads the config runs
    evaluate_run(run_dir, metrics=["mig", "info"], data=None, progress=False,
                 params={**SMALL_MIG, "info": {"distortion_images": 64, "iq_min_samples": 100,
                                               "iq_max_samples": 200}})
    assert len(hashed) == 1 and len(config_reads) == 1


def test_a_changed_model_is_detected_and_refused(run_dir):
    run = RunDir(run_dir)
    sha = run.check_model()
    model, _ = run.load_model()
    state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, run_dir / "model.pt")          # in place: a new inode is not needed
    assert run.model_sha256() != sha                  # the cached hash is not reused
    with pytest.raises(UserError, match="model.pt: sha256 differs"):
        run.load_model()
    with pytest.raises(UserError, match="sha256 differs"):
        from disentangle.evaluation.evaluate import evaluate_run
        evaluate_run(run_dir, metrics=["mig"], params=SMALL_MIG, progress=False)
    assert not (run_dir / "scores.json").exists()


# --------------------------------------------------------------------------- the data rule
def _evaluated_on(run_dir, **kwargs) -> dict:
    from disentangle.evaluation.evaluate import evaluate_run
    return evaluate_run(run_dir, metrics=["mig"], params=SMALL_MIG, progress=False, **kwargs)["mig"]["data"]


def test_evaluate_and_plots_resolve_the_same_dataset(run_dir, tiny_data_path, tmp_path, monkeypatch):
    from disentangle.data.dsprites import render_dataset
    from disentangle.data.ground_truth import GroundTruth
    monkeypatch.delenv("DISENTANGLE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)                       # no data/ directory here
    # 1. the file the run recorded
    record = _evaluated_on(run_dir)
    assert record["path"] == str(tiny_data_path.resolve()) and record["matches_training_data"] is True
    assert RunDir(run_dir).dataset(require_training_data=True).path.resolve() == tiny_data_path.resolve()
    # 2. the recorded file is gone: the dataset rule, here a copy with the same content
    saved = read_json(run_dir / "config.json")
    saved["data"]["path"] = str(tmp_path / "moved-away.h5")
    write_json_atomic(run_dir / "config.json", saved)
    copy = shutil.copy(tiny_data_path, tmp_path / "copy.h5")
    monkeypatch.setenv("DISENTANGLE_DATA", str(copy))
    record = _evaluated_on(run_dir)
    assert record["path"] == str(copy.resolve()) and record["matches_training_data"] is True
    assert RunDir(run_dir).dataset(require_training_data=True).path.resolve() == copy.resolve()
    other = render_dataset(tmp_path / "other.h5", GroundTruth.dsprites().subgrid(
        {"scale": [1], "orientation": [0], "pos_x": range(0, 32, 8), "pos_y": range(0, 32, 8)}))
    # 2b. the recorded path now holds other content: not used, by either (plots used to
    # take the recorded path and refuse, while evaluate went on to the dataset rule)
    saved["data"]["path"] = str(other)
    write_json_atomic(run_dir / "config.json", saved)
    record = _evaluated_on(run_dir)
    assert record["path"] == str(copy.resolve()) and record["matches_training_data"] is True
    assert RunDir(run_dir).dataset(require_training_data=True).path.resolve() == copy.resolve()
    # 3. the rule finds other data: evaluate records and notes it, figures refuse it
    monkeypatch.setenv("DISENTANGLE_DATA", str(other))
    notes = []
    from disentangle.evaluation.evaluate import evaluate_run
    out = evaluate_run(run_dir, metrics=["mig"], params=SMALL_MIG, progress=False, echo=notes.append)
    assert out["mig"]["data"]["path"] == str(other.resolve())
    assert out["mig"]["data"]["matches_training_data"] is False
    assert any("not the data the model trained on" in n for n in notes)
    with pytest.raises(UserError, match="not the dataset"):
        RunDir(run_dir).dataset(require_training_data=True)
    # 4. an explicit dataset wins over everything, for both
    assert _evaluated_on(run_dir, data=str(tiny_data_path))["path"] == str(tiny_data_path.resolve())
    chosen = RunDir(run_dir).dataset(tiny_data_path, require_training_data=True)
    assert chosen.path.resolve() == tiny_data_path.resolve()


# --------------------------------------------------------------------------- devices and errors
def test_device_resolution_errors_name_the_parameter():
    assert resolve_device("cpu") == "cpu" and resolve_device(None) == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ParameterError) as info:
        resolve_device("tpu")
    assert info.value.parameter == "device" and "--" not in str(info.value)
    assert user_message(info.value) == "--device 'tpu': expected cpu, cuda or auto"
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError) as info:
            resolve_device("cuda:0")
        assert "\n" not in str(info.value) and str(info.value).startswith("device cuda:0: no CUDA GPU")


def test_cuda_without_gpu_is_one_cli_line(run_dir):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--metric", "mig", "--device", "cuda"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --device cuda: no CUDA GPU")
    assert not (run_dir / "scores.json").exists()


def test_thread_limit_sets_and_restores_and_checks():
    before = torch.get_num_threads()
    with thread_limit(1) as inside:
        assert inside == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with thread_limit(None) as inside:
        assert inside == before
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ParameterError, match="threads"):
            with thread_limit(bad):
                pass


def test_library_errors_name_parameters_and_the_cli_maps_them(run_dir):
    from disentangle.evaluation.evaluate import evaluate_run
    with pytest.raises(ParameterError) as info:
        evaluate_run(run_dir, metrics=["mig"], seed=-1)
    assert info.value.parameter == "seed" and "--seed" not in str(info.value)
    assert user_message(info.value).startswith("--seed: must be a non-negative integer")
    assert flag_of("threads_per_job") == "--threads-per-job"
    assert flag_of("mig.num_train") == "--param mig.num_train"
    # user input to the ground truth is a ParameterError (and still a ValueError)
    from disentangle.data.ground_truth import GroundTruth
    with pytest.raises(ParameterError, match="unknown factor"):
        GroundTruth.dsprites().subgrid({"colour": [0]})
    with pytest.raises(ValueError, match="image index out of range"):
        GroundTruth.dsprites().classes_of(np.array([-1]))


def test_config_json_is_read_once_and_errors_name_it(tmp_path):
    run = RunDir(tmp_path / "r")
    run.path.mkdir()
    with pytest.raises(UserError, match="config.json: no run configuration"):
        run.config()
    (run.config_path).write_text(json.dumps({"nothing": 1}))
    with pytest.raises(UserError, match="not a disentangle run configuration"):
        run.saved()
    (run.config_path).write_text(json.dumps({"config": {"beta": 4.0}, "data": {"path": "x.h5"}}))
    assert run.config() == {"beta": 4.0} and run.training_data() == {"path": "x.h5"}
    (run.config_path).write_text("{broken")
    assert run.config() == {"beta": 4.0}                 # cached: read once per RunDir
    with pytest.raises(UserError, match="unreadable run configuration"):
        RunDir(run.path).config()
