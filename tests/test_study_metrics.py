"""evaluate-study (UDR over the seeds of each configuration): grouping, scores.json
entries, reproducibility, and one-line errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from disentangle.cli import main
from disentangle.errors import UserError
from disentangle.rundir import RunDir
from disentangle.evaluation.study_metrics import configuration_key, evaluate_study, group_runs


def _copy_run(src, dst, flip: int | None = None, **config_changes):
    """A copy of run ``src``; ``flip``: a latent dimension whose sign the copy's model
    reverses (its mean head's row and the decoder's input column: the same model up to
    the sign of one code, so every score that ignores signs, UDR's included, is the same,
    while model.pt is another file, as another seed's would be)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("scores.json"))
    path = dst / "config.json"
    saved = json.loads(path.read_text())
    saved["config"].update(config_changes)
    path.write_text(json.dumps(saved))
    if flip is not None:
        import torch

        from disentangle.io import file_sha256
        state = torch.load(dst / "model.pt", weights_only=True)
        state["encoder.head.weight"][flip] *= -1
        state["encoder.head.bias"][flip] *= -1
        state["decoder.stem.0.weight"][:, flip] *= -1
        torch.save(state, dst / "model.pt")
        status = json.loads((dst / "status.json").read_text())
        status["model_sha256"] = file_sha256(dst / "model.pt")
        (dst / "status.json").write_text(json.dumps(status))
        (dst / "codes.h5").unlink(missing_ok=True)
    return dst


@pytest.fixture
def study(tiny_trained_run, tmp_path):
    """Three seeds of one configuration (copies of one trained model, two with the sign of
    one code reversed; seed and the execution fields relabelled) and one run of another
    configuration."""
    root = tmp_path / "study"
    runs = [_copy_run(tiny_trained_run, root / "b4-s0"),
            _copy_run(tiny_trained_run, root / "b4-s1", flip=0, seed=1, threads=2),
            _copy_run(tiny_trained_run, root / "b4-s2", flip=1, seed=2, device="cuda"),
            _copy_run(tiny_trained_run, root / "b8-s0", beta=8.0)]
    return root, runs


def test_grouping_ignores_seed_and_execution_fields(study):
    root, runs = study
    groups = list(group_runs(runs).values())
    assert groups == [runs[:3], runs[3:]]


def test_unfinished_runs_are_left_out(study, tiny_data_path):
    root, runs = study
    (runs[2] / "model.pt").unlink()
    notes = []
    out = evaluate_study(root, data=str(tiny_data_path), device="cpu", params={"num_data_points": 100},
                         progress=False, echo=notes.append)
    assert set(out) == set(runs[:2]) and out[runs[0]]["group"] == ["b4-s0", "b4-s1"]
    assert any("b4-s2" in n and "left out" in n for n in notes)
    assert "seed" not in configuration_key(runs[1]) and '"beta": 4.0' in configuration_key(runs[0])


def test_udr_entries_written_and_reproducible(study, tiny_data_path):
    root, runs = study
    RunDir(runs[0]).merge_scores({"mig": {"values": {"discrete_mig": 0.5}}})   # other entries are kept
    out = evaluate_study(root, data=str(tiny_data_path), device="cpu", params={"num_data_points": 300},
                         progress=False)
    assert set(out) == set(runs[:3])                     # the lone configuration is skipped
    assert not (runs[3] / "scores.json").exists()
    first = RunDir(runs[0]).read_scores()
    assert first["mig"]["values"]["discrete_mig"] == 0.5
    entry = first["udr"]
    for key in ("values", "params", "seed", "seconds", "data", "codes", "model_sha256", "package", "evaluated"):
        assert key in entry
    assert entry["group"] == ["b4-s0", "b4-s1", "b4-s2"] and entry["params"]["num_data_points"] == 300
    values = [RunDir(r).read_scores()["udr"]["values"] for r in runs[:3]]
    # identical models: every pair gets the same score, so every model the same UDR
    for v in values:
        assert all(np.isfinite(x) for x in v.values())
        assert v["udr_lasso"] == pytest.approx(values[0]["udr_lasso"], abs=1e-9)
        assert 0.0 <= v["udr_spearman"] <= 1.0 and v["num_models"] == 3
    if values[0]["num_active_dims"] > 0:
        assert values[0]["udr_spearman"] > 0.5
    again = evaluate_study(root, data=str(tiny_data_path), device="cpu", params={"num_data_points": 300},
                           progress=False)
    assert again[runs[1]]["values"] == out[runs[1]]["values"]


def test_errors(study, tmp_path, tiny_data_path):
    root, runs = study
    with pytest.raises(UserError, match=r"udr\.lasso_alpha"):
        evaluate_study(root, params={"lasso_alpha": -1})
    with pytest.raises(UserError, match="no parameter"):
        evaluate_study(root, params={"alpha": 1})
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no run directory"):
        evaluate_study(tmp_path / "empty")
    result = CliRunner().invoke(main, ["evaluate-study", str(root), "--param", "udr.num_data_points=0"])
    assert result.exit_code == 1 and "udr.num_data_points" in result.output
    assert "Traceback" not in result.output


def test_cli_prints_the_table(study, tiny_data_path):
    root, runs = study
    result = CliRunner().invoke(main, ["evaluate-study", str(root), "--data", str(tiny_data_path),
                                       "--device", "cpu", "--threads", "1",
                                       "--param", "udr.num_data_points=200"])
    assert result.exit_code == 0, result.output
    assert "udr.udr_lasso" in result.output and "b4-s2" in result.output and "b8-s0" not in result.stdout


def test_new_scores_reach_the_report(study, tiny_data_path):
    """evaluate (a per-model metric of issue 13) and evaluate-study (udr) entries show up
    in the report's table like any score."""
    from disentangle.evaluation.evaluate import evaluate_run
    from disentangle.report import metric_columns
    from disentangle.results import collect
    root, runs = study
    evaluate_run(runs[0], metrics=["irs", "dci_es"], data=str(tiny_data_path), device="cpu",
                 params={"irs": {"num_train": 300}, "dci_es": {"num_train": 200, "num_test": 100,
                                                               "num_trees": 5}}, progress=False)
    evaluate_study(root, data=str(tiny_data_path), device="cpu", params={"num_data_points": 100},
                   progress=False)
    from disentangle.results import ResultsWarning
    with pytest.warns(ResultsWarning, match="b8-s0"):       # the lone run has no scores yet
        df = collect(root)
    columns = metric_columns(df)
    for column in ("irs.IRS", "dci_es.explicitness", "udr.udr_lasso", "udr.udr_spearman"):
        assert column in columns
