"""Adding a method is its loss function and one registry entry: a throw-away eighth
method (tests/eighth_method.py) trains through `disentangle train` and `sweep`, and its
own hyper-parameter becomes an option, a run-name part and a column of the report."""
from __future__ import annotations

import csv
import importlib
import json
import sys

import pytest
from click.testing import CliRunner

from disentangle import methods as method_registry
from disentangle.cli import main


@pytest.fixture
def eighth(monkeypatch):
    monkeypatch.setenv("DISENTANGLE_PLUGINS", "eighth_method")   # the sweep's workers load it too
    sys.modules.pop("eighth_method", None)
    module = importlib.import_module("eighth_method")
    try:
        yield module
    finally:
        method_registry.unregister(module.NAME)
        sys.modules.pop("eighth_method", None)


def test_an_eighth_method_trains_through_train_and_sweep_and_reports_its_hyperparameter(eighth, tmp_path,
                                                                                         tiny_data_path):
    from disentangle.config import TrainConfig, identity_keys, run_name
    assert "l2_weight" in identity_keys() and TrainConfig().l2_weight == 0.0
    runner = CliRunner()
    common = ["--steps", "2", "--batch-size", "8", "--latent-dim", "3", "--data", str(tiny_data_path)]
    res = runner.invoke(main, ["train", "--method", eighth.NAME, "--l2-weight", "0.5", "--threads", "1",
                               "--log-every", "1", "--out", str(tmp_path / "results" / "one"), *common])
    assert res.exit_code == 0, res.output
    saved = json.loads((tmp_path / "results" / "one" / "config.json").read_text())["config"]
    assert (saved["method"], saved["l2_weight"]) == (eighth.NAME, 0.5)
    with open(tmp_path / "results" / "one" / "train_log.csv") as fh:
        log = list(csv.DictReader(fh))
    assert len(log) == 2 and all(float(r["mean_l2"]) >= 0 for r in log)   # its log term
    # its hyper-parameter is checked like the others, and refused for the other methods
    res = runner.invoke(main, ["train", "--method", "beta-vae", "--l2-weight", "1", *common])
    assert res.exit_code == 1 and "--l2-weight: not a hyper-parameter of method beta-vae" in res.output
    res = runner.invoke(main, ["train", "--method", eighth.NAME, "--l2-weight", "-1", *common])
    assert res.exit_code == 1 and "--l2-weight: must be >= 0, got -1.0" in res.output

    # the sweep: its hyper-parameter is an axis, named in the runs, in the workers' registry
    study = tmp_path / "results" / "study"
    res = runner.invoke(main, ["sweep", "--results", str(study), "--method", eighth.NAME, "--l2-weight", "0.1,1",
                               "--seeds", "0", "--metric", "mig", "--no-report", "--threads-per-job", "1",
                               "--device", "cpu", *common])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in study.iterdir() if (p / "model.pt").is_file())
    assert names == [f"{eighth.NAME}_b1_w0.1_s0", f"{eighth.NAME}_b1_w1_s0"]
    assert run_name({**TrainConfig(method=eighth.NAME, l2_weight=0.1).to_dict()}) == f"{eighth.NAME}_b1_w0.1_s0"

    res = runner.invoke(main, ["report", str(study), "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(res.output.splitlines()))
    assert sorted(float(r["l2_weight"]) for r in rows) == [0.1, 1.0]
    assert {r["method"] for r in rows} == {eighth.NAME}


def test_unregistering_restores_the_configuration(eighth):
    from disentangle import config
    assert "l2_weight" in config.identity_keys()
    method_registry.unregister(eighth.NAME)
    try:
        assert "l2_weight" not in config.identity_keys() and not hasattr(config.TrainConfig(), "l2_weight")
        assert eighth.NAME not in method_registry.names()
    finally:
        method_registry.register(eighth.ENTRY)
