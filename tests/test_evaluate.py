"""evaluate_run and `disentangle evaluate`: table vs protocol-encode equivalence,
scores.json contents and merging, reproducibility, data provenance, and user errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from disentangle.cli import main
from disentangle.errors import UserError
from disentangle.evaluation.evaluate import ALL_METRICS, evaluate_run, metric_names, parse_param
from disentangle.evaluation.metrics import METRICS, get_metric
from disentangle.io import read_json
from disentangle.rundir import RunDir

FIVE = ("beta_vae", "factor_vae", "mig", "dci", "sap")
# Small sample counts: the protocol's defaults take minutes; these take a second.
# prune_threshold 0: a 20-step model's codes are still near-constant and the protocol's
# 0.05 would prune every dimension, making the FactorVAE comparison trivially equal.
SMALL = {
    "beta_vae": {"num_train": 120, "num_eval": 60, "batch_size": 8},
    "factor_vae": {"num_train": 120, "num_eval": 60, "num_variance_estimate": 300, "batch_size": 8,
                   "prune_threshold": 0.0},
    "mig": {"num_train": 400},
    "dci": {"num_train": 200, "num_test": 100},
    "sap": {"num_train": 200, "num_test": 100},
    "modularity_explicitness": {"num_train": 200, "num_test": 100},
    "unsupervised": {"num_train": 200},
    "irs": {"num_train": 200},
    "dci_es": {"num_train": 200, "num_test": 100, "num_trees": 5},
    "infomec": {"num_train": 200},
}
SMALL_INFO = {"distortion_images": 128, "iq_min_samples": 200, "iq_max_samples": 400}


def scores_only(values: dict) -> dict:
    """The values without timings (info reports its stages' seconds among its values)."""
    return {k: v for k, v in values.items() if not k.startswith("seconds")}


def test_every_metric_from_the_table_equals_the_protocol_encode(run_dir, tiny_data):
    """Same model, data and seed: identical scores, bit for bit. Exact (not approximate)
    because every image is encoded in a batch of the same shape on both paths
    (codes.py pads partial batches), so each code is the same float32 number, and the
    metrics draw the same samples from the same Generator."""
    table = evaluate_run(run_dir, metrics=FIVE, seed=7, data=tiny_data, params=SMALL, progress=False)
    assert (run_dir / "codes.h5").is_file()
    protocol = evaluate_run(run_dir, metrics=FIVE, seed=7, data=tiny_data, params=SMALL,
                            protocol_encode=True)
    for name in FIVE:
        assert table[name]["codes"] == "table" and protocol[name]["codes"] == "protocol-encode"
        assert table[name]["values"] == protocol[name]["values"], name
        assert table[name]["params"] == protocol[name]["params"]
    # the comparison is not between degenerate results
    assert table["factor_vae"]["values"]["num_active_dims"] > 0
    assert 0 < table["mig"]["values"]["discrete_mig"] < 1
    assert table["dci"]["values"]["informativeness_train"] > 0.2


def test_scores_json_entries_and_reproducibility(run_dir, tiny_data):
    # info is part of the package: a module that stops importing fails this test (it used
    # to skip the info checks then)
    # `all`: every registered metric, info last
    metrics = list(ALL_METRICS)
    assert metrics[:5] == list(FIVE) and metrics[-1] == "info"
    params = dict(SMALL, info=SMALL_INFO)
    first = evaluate_run(run_dir, metrics=["all"], seed=0, data=tiny_data, params=params, progress=False)
    assert list(first) == metrics
    scores = read_json(run_dir / "scores.json")
    assert list(scores) == metrics
    for name in metrics:
        entry = scores[name]
        assert set(entry) >= {"values", "params", "seed", "seconds", "data", "codes", "model_sha256"}
        assert entry["seed"] == 0 and entry["seconds"] >= 0 and entry["codes"] == "table"
        assert entry["data"]["source"] == "rendered"
        assert entry["data"]["content_sha256"] == tiny_data.provenance["content_sha256"]
        assert entry["data"]["matches_training_data"] is True
    for name in FIVE:
        spec = get_metric(name)
        assert spec.headline in scores[name]["values"]
        assert scores[name]["params"] == json.loads(json.dumps(spec.record_params(SMALL[name])))
    assert scores["info"]["values"]["rate_nats"] >= 0
    assert scores["info"]["params"]["distortion_images"] == 128

    again = evaluate_run(run_dir, metrics=["all"], seed=0, data=tiny_data, params=params, progress=False)
    for name in metrics:
        assert scores_only(again[name]["values"]) == scores_only(first[name]["values"]), name
    other_seed = evaluate_run(run_dir, metrics=["mig"], seed=1, data=tiny_data, params=SMALL, progress=False)
    assert other_seed["mig"]["values"] != first["mig"]["values"]
    # merging replaced mig only; the others keep their seed-0 entries
    scores = read_json(run_dir / "scores.json")
    assert scores["mig"]["seed"] == 1 and scores["sap"]["seed"] == 0 and list(scores) == metrics


def test_a_metric_on_any_code_array_is_the_registered_function(run_dir, tiny_data):
    """The Python API for foreign representations: call the metric on an (N, D) array
    in dataset index order. Through evaluate_run, the same call gives the same score."""
    from disentangle.evaluation.codes import get_codes
    result = evaluate_run(run_dir, metrics=["mig"], seed=3, data=tiny_data, params=SMALL, progress=False)
    codes = get_codes(run_dir, tiny_data, progress=False).mean
    direct = METRICS["mig"](codes, tiny_data.ground_truth, np.random.default_rng(3), **SMALL["mig"])
    assert direct == result["mig"]["values"]


def test_evaluating_on_other_data_is_allowed_and_recorded(run_dir, tiny_data, tiny_ground_truth, tmp_path):
    from disentangle.data.dsprites import render_dataset
    other_gt = tiny_ground_truth.dsprites().subgrid(
        {"shape": [0, 2], "scale": [1, 4], "orientation": [0, 20], "pos_x": range(0, 32, 8), "pos_y": range(0, 32, 8)})
    other_path = render_dataset(tmp_path / "other.h5", other_gt)
    out = evaluate_run(run_dir, metrics=["mig"], data=str(other_path), params=SMALL, progress=False)
    record = out["mig"]["data"]
    assert record["matches_training_data"] is False
    assert Path(record["path"]).resolve() == other_path.resolve()
    assert record["num_images"] == other_gt.num_images
    # default: the data the run trained on
    out = evaluate_run(run_dir, metrics=["mig"], params=SMALL, progress=False)
    assert out["mig"]["data"]["matches_training_data"] is True
    assert out["mig"]["data"]["content_sha256"] == tiny_data.provenance["content_sha256"]


def test_results_written_before_a_failure_are_kept(run_dir, tiny_data, monkeypatch):
    from dataclasses import replace

    def broken(*args, **kwargs):
        raise RuntimeError("metric crashed")
    monkeypatch.setitem(METRICS, "sap", replace(METRICS["sap"], fn=broken))
    with pytest.raises(RuntimeError):
        evaluate_run(run_dir, metrics=["mig", "sap"], data=tiny_data, params=SMALL, progress=False)
    assert list(read_json(run_dir / "scores.json")) == ["mig"]


def test_user_errors(run_dir, tiny_data, tmp_path):
    with pytest.raises(UserError, match="unknown metric"):
        metric_names(["mig", "nope"])
    assert metric_names(["all", "mig"]) == list(ALL_METRICS)
    with pytest.raises(UserError, match="no parameter"):
        evaluate_run(run_dir, metrics=["mig"], params={"mig": {"num_bin": 3}}, data=tiny_data)
    with pytest.raises(UserError, match="unknown metric"):
        evaluate_run(run_dir, metrics=["mig"], params={"migg": {"num_train": 3}}, data=tiny_data)
    with pytest.raises(UserError, match="no such run directory"):
        evaluate_run(tmp_path / "missing", data=tiny_data)
    (tmp_path / "untrained").mkdir()
    with pytest.raises(UserError, match="no model.pt"):
        evaluate_run(tmp_path / "untrained", data=tiny_data)
    (run_dir / "scores.json").write_text("{broken")
    with pytest.raises(UserError, match="unreadable scores file"):
        evaluate_run(run_dir, metrics=["mig"], params=SMALL, data=tiny_data, progress=False)
    assert (run_dir / "scores.json").read_text() == "{broken"   # never overwritten
    with pytest.raises(UserError, match="METRIC.KEY=VALUE"):
        parse_param("num_train=3")
    assert parse_param("mig.num_train=300") == ("mig", "num_train", 300)
    assert parse_param("dci.backend=sklearn") == ("dci", "backend", "sklearn")


def test_cli_scores_several_runs_from_a_glob(run_dir, tiny_data_path):
    second = run_dir.parent / "run-b"
    shutil.copytree(run_dir, second)
    runner = CliRunner()
    args = ["evaluate", str(run_dir.parent / "run-*"), "--metric", "mig", "--metric", "sap",
            "--data", str(tiny_data_path), "--device", "cpu", "--threads", "1",
            "--param", "mig.num_train=400", "--param", "sap.num_train=200", "--param", "sap.num_test=100"]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].split() == ["run", "mig.discrete_mig", "sap.sap_score"]
    assert len(lines) == 3 and str(run_dir) in lines[1] and str(second) in lines[2]
    for run in (run_dir, second):
        scores = RunDir(run).read_scores()
        assert set(scores) == {"mig", "sap"}
        shown = float(lines[1 if run == run_dir else 2].split()[1])
        assert shown == pytest.approx(scores["mig"]["values"]["discrete_mig"], abs=5e-5)


@pytest.mark.parametrize("args, message", [
    (["evaluate", "RUN", "--metric", "nope"], "--metric 'nope': unknown metric"),
    (["evaluate", "MISSING"], "no such run directory"),
    (["evaluate", "EMPTY"], "no model.pt"),
    (["evaluate", "NOMATCH*"], "matches no run directory"),
])
def test_cli_errors_are_one_line(args, message, run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    subst = {"RUN": str(run_dir), "MISSING": str(tmp_path / "missing"), "EMPTY": str(tmp_path / "empty"),
             "NOMATCH*": str(tmp_path / "nomatch*")}
    result = CliRunner().invoke(main, [subst.get(a, a) for a in args])
    assert result.exit_code == 1
    err = result.output.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in result.output
    assert not (run_dir / "scores.json").exists()


@pytest.mark.parametrize("param, named", [
    ("info.iq_min_samples=1", "info.iq_min_samples"),
    ("mig.num_train=-5", "mig.num_train"),
    ("sap.num_train=0", "sap.num_train"),
    ("dci.backend=nosuch", "dci.backend"),
    ("info.distortion_images=1", "info.distortion_images"),
    ("beta_vae.batch_size=0", "beta_vae.batch_size"),
])
def test_bad_metric_parameters_are_refused_before_any_work(param, named, run_dir, tiny_data_path):
    # issue 12 item 1: these used to encode codes.h5 and score (and save) the other
    # metrics before failing, and with two runs the first was scored
    second = run_dir.parent / "run-b"
    shutil.copytree(run_dir, second)
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), str(second), "--data", str(tiny_data_path),
                                       "--device", "cpu", "--threads", "1", "--param", param])
    assert result.exit_code == 1, result.output
    err = result.output.strip().splitlines()
    assert len(err) == 1 and named in err[0] and "Traceback" not in result.output, result.output
    for run in (run_dir, second):
        assert not (run / "codes.h5").exists() and not (run / "scores.json").exists()


def test_every_registered_metric_checks_its_parameters_up_front():
    from disentangle.cli import user_message
    from disentangle.evaluation.evaluate import check_evaluation
    plan = check_evaluation(["all"], seed=3)
    assert plan.names == list(ALL_METRICS) and plan.seed == 3
    assert plan.recorded["info"]["iq_min_samples"] == 1000
    for bad, named in (({"factor_vae": {"prune_threshold": float("nan")}}, "factor_vae.prune_threshold"),
                       ({"sap": {"continuous_factors": "yes"}}, "sap.continuous_factors"),
                       ({"mig": {"num_bins": 2.5}}, "mig.num_bins"),
                       ({"info": {"iq_max_samples": 10, "iq_min_samples": 100}}, "info.iq_max_samples")):
        with pytest.raises(UserError, match=named.replace(".", r"\.")):
            check_evaluation(["all"], params=bad)
    # parameters of a metric that is not selected are not its business
    assert check_evaluation(["mig"], params={"sap": {"num_train": 0}}).names == ["mig"]
    for kwargs, named in (({"seed": -1}, "--seed"), ({"batch_size": 0}, "--batch-size"),
                          ({"threads": True}, "--threads")):
        # the library names the parameter; the CLI prints its flag
        with pytest.raises(UserError) as info:
            check_evaluation(["mig"], **kwargs)
        assert named in user_message(info.value)


def test_evaluate_table_flags_a_pruned_factor_vae(run_dir, tiny_data_path):
    """A 20-step model's codes are near-constant: the protocol's prune threshold 0.05
    prunes every dimension, and the 0 it scores is marked, with a footnote saying why."""
    small = {k: v for k, v in SMALL["factor_vae"].items() if k != "prune_threshold"}
    args = ["evaluate", str(run_dir), "--metric", "factor_vae", "--metric", "mig", "--data", str(tiny_data_path),
            *[a for k, v in {**small, }.items() for a in ("--param", f"factor_vae.{k}={v}")],
            "--param", "mig.num_train=400"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert read_json(run_dir / "scores.json")["factor_vae"]["values"]["all_dims_pruned"] == 1.0
    lines = result.stdout.splitlines()
    header = lines[0].split()
    row = lines[1].split()
    assert row[header.index("factor_vae.eval_accuracy")] == "0.0000†"
    assert not row[header.index("mig.discrete_mig")].endswith("†")
    assert lines[2].startswith("† factor_vae (") and "every code dimension was pruned" in lines[2]


def test_demo_metric_list_is_valid_and_covers_the_registry_but_dci_es():
    from disentangle.demo import demo_study
    from disentangle.evaluation.evaluate import check_evaluation, metric_names
    study = demo_study()
    check_evaluation(study.metrics, study.eval_seed, study.eval_params)
    assert set(metric_names(["all"])) - set(metric_names(study.metrics)) == {"dci_es"}
