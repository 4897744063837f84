"""`disentangle score`: a codes table made anywhere scored like a run, its bad inputs
refused in one line, and the warning flags where scores are shown."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from disentangle.cli import main
from disentangle.evaluation.codes import get_codes
from disentangle.evaluation.evaluate import evaluate_run
from disentangle.io import read_json

# the same small sample counts as evaluate's tests, so the two commands compare alike
from test_evaluate import FIVE, SMALL  # noqa: E402
SMALL_IQ = {"iq_min_samples": 200, "iq_max_samples": 400}


def params_args(params):
    return [a for m, p in params.items() for k, v in p.items() for a in ("--param", f"{m}.{k}={json.dumps(v)}")]


def without_seconds(values):
    return {k: v for k, v in values.items() if not k.startswith("seconds")}


def test_scoring_a_runs_codes_table_gives_the_evaluate_scores(run_dir, tiny_data, tiny_data_path, tmp_path):
    evaluated = evaluate_run(run_dir, metrics=(*FIVE, "info"), seed=3, data=tiny_data, progress=False,
                             params={**SMALL, "info": {**SMALL_IQ, "distortion_images": 64}})
    codes = get_codes(run_dir, tiny_data, progress=False)
    assert codes.path == run_dir / "codes.h5"
    out = tmp_path / "scored" / "mine"
    result = CliRunner().invoke(main, ["score", str(codes.path), "--out", str(out), "--data", str(tiny_data_path),
                                       "--seed", "3", "--label", "mine", "--setting", "beta=4",
                                       *sum((["--metric", m] for m in (*FIVE, "info_posterior")), []),
                                       *params_args({**SMALL, "info_posterior": SMALL_IQ})])
    assert result.exit_code == 0, result.output
    scores = read_json(out / "scores.json")
    for name in FIVE:
        assert scores[name]["values"] == evaluated[name]["values"], name
        assert scores[name]["params"] == evaluated[name]["params"]
        assert scores[name]["codes"] == "file" and "model_sha256" not in scores[name]
        assert set(scores[name]) - {"codes_sha256"} == set(evaluated[name]) - {"model_sha256"}
    from disentangle.io import file_sha256
    assert scores["mig"]["codes_sha256"] == file_sha256(codes.path)
    # the posterior-only part of info is info's own numbers (same I_q draws)
    posterior, info = without_seconds(scores["info_posterior"]["values"]), evaluated["info"]["values"]
    assert posterior and all(posterior[k] == info[k] for k in posterior), posterior
    assert 0 < posterior["i_q_nats"] <= posterior["rate_nats"] + posterior["i_q_se_nats"]
    # report takes it like any run: label as the method, settings as columns
    from disentangle.results import collect
    df = collect(out.parent)
    assert list(df["method"]) == ["mine"] and float(df["beta"].iloc[0]) == 4.0
    assert df["mig.discrete_mig"].iloc[0] == evaluated["mig"]["values"]["discrete_mig"]
    report = CliRunner().invoke(main, ["report", str(out.parent), "--format", "csv"])
    assert report.exit_code == 0 and "mine" in report.output and "info_posterior.rate_nats" in report.output


def _perfect_codes(gt, scale=1.0):
    # one code dimension per factor: the class, normalised to [0, 1]
    classes = gt.all_classes().astype(np.float32)
    return classes / np.maximum(np.array(gt.factor_sizes, np.float32) - 1, 1) * scale


@pytest.mark.parametrize("case, message", [
    ("rows", "has 10 rows, the dataset"),
    ("nan", "NaN or infinite values (as float32) in 1 row(s), first row 5"),
    ("3d", "expected a 2-D array"),
    ("npz_key", "no array named codes or mean (it holds: z)"),
    ("factors", "rows are not in the dataset's index order"),
    ("info", "--metric info: needs the model's decoder"),
    ("no_logvar", "--metric info_posterior: needs each image's log-variance"),
    ("setting", "--setting 'colour=red': unknown setting"),
])
def test_bad_inputs_are_one_line_naming_the_file(case, message, tiny_ground_truth, tiny_data_path, tmp_path):
    codes = _perfect_codes(tiny_ground_truth)
    path, extra = tmp_path / "codes.npy", []
    if case == "rows":
        codes = codes[:10]
    elif case == "nan":
        codes[5, 1] = np.nan
    elif case == "3d":
        codes = codes[:, :, None]
    elif case == "factors":
        factors = tiny_ground_truth.all_classes()[::-1].copy()
        np.save(tmp_path / "factors.npy", factors)
        extra = ["--factors", str(tmp_path / "factors.npy")]
        path = tmp_path / "factors.npy"
    elif case == "info":
        extra = ["--metric", "info"]
    elif case == "no_logvar":
        extra = ["--metric", "info_posterior"]
    elif case == "setting":
        extra = ["--setting", "colour=red"]
    if case == "npz_key":
        path = tmp_path / "codes.npz"
        np.savez(path, z=codes)
        target = path
    else:
        target = tmp_path / "codes.npy"
        np.save(target, codes)
    result = CliRunner().invoke(main, ["score", str(target), "--out", str(tmp_path / "out"),
                                       "--data", str(tiny_data_path), *extra])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    if case not in ("info", "no_logvar", "setting"):
        assert str(path) in lines[0]
    assert not (tmp_path / "out" / "scores.json").exists()


def test_factors_in_index_order_are_accepted_and_a_perfect_code_scores_high(tiny_ground_truth, tiny_data_path,
                                                                           tmp_path):
    codes = _perfect_codes(tiny_ground_truth)
    np.savez(tmp_path / "codes.npz", mean=codes, logvar=np.full_like(codes, -4.0))
    latents = np.concatenate([np.zeros((len(codes), 1), np.int64),
                              np.stack([tiny_ground_truth.official_classes[k][tiny_ground_truth.all_classes()[:, k]]
                                        for k in range(tiny_ground_truth.num_factors)], axis=1)], axis=1)
    np.save(tmp_path / "factors.npy", latents)
    result = CliRunner().invoke(main, ["score", str(tmp_path / "codes.npz"), "--out", str(tmp_path / "out"),
                                       "--data", str(tiny_data_path), "--factors", str(tmp_path / "factors.npy"),
                                       "--metric", "mig", "--metric", "info_posterior",
                                       *params_args({"mig": {"num_train": 400}, "info_posterior": SMALL_IQ})])
    assert result.exit_code == 0, result.output
    scores = read_json(tmp_path / "out" / "scores.json")
    assert scores["mig"]["values"]["discrete_mig"] > 0.5
    assert scores["info_posterior"]["values"]["rate_nats"] > 0


def test_a_pruned_factor_vae_is_flagged_in_the_console_and_the_reports(tiny_ground_truth, tiny_data_path,
                                                                        tmp_path):
    # a perfect code scaled by 0.01: every std is below the protocol's prune threshold 0.05
    np.save(tmp_path / "codes.npy", _perfect_codes(tiny_ground_truth, scale=0.01))
    runs = tmp_path / "runs"
    small = {"factor_vae": {"num_train": 60, "num_eval": 30, "num_variance_estimate": 200, "batch_size": 8},
             "mig": {"num_train": 400}}
    result = CliRunner().invoke(main, ["score", str(tmp_path / "codes.npy"), "--out", str(runs / "pruned"),
                                       "--data", str(tiny_data_path), "--metric", "factor_vae", "--metric", "mig",
                                       *params_args(small)])
    assert result.exit_code == 0, result.output
    scores = read_json(runs / "pruned" / "scores.json")
    assert scores["factor_vae"]["values"]["all_dims_pruned"] == 1.0
    table = result.stdout.splitlines()
    assert "0.0000†" in table[1] and "factor_vae" in table[0]
    mig_col = table[0].split().index("mig.discrete_mig")
    assert not table[1].split()[mig_col].endswith("†")      # only the flagged metric is marked
    assert any(line.startswith("† factor_vae (") and "every code dimension was pruned" in line for line in table)
    for fmt in ("markdown", "latex", "csv"):
        out = CliRunner().invoke(main, ["report", str(runs), "--format", fmt])
        assert out.exit_code == 0, out.output
        text = out.stdout
        if fmt == "markdown":
            assert re.search(r"\| +0† +\|", text) and "† factor_vae (pruned): every code dimension was pruned" in text
        elif fmt == "latex":
            assert r" 0$^\dagger$ " in text and r"$^\dagger$ factor\_vae (pruned)" in text
        else:
            import io

            import pandas as pd
            df = pd.read_csv(io.StringIO(text))
            assert df["warnings"].iloc[0].startswith("factor_vae: every code dimension was pruned")
    grouped = CliRunner().invoke(main, ["report", str(runs), "--group-by", "method"])
    assert re.search(r"\| +0† +\|", grouped.stdout) and "† factor_vae (pruned)" in grouped.stdout


def test_registry_warning_conditions():
    from disentangle.evaluation.metrics import METRICS
    assert METRICS["factor_vae"].warnings({"eval_accuracy": 0.0, "all_dims_pruned": 1.0})
    assert not METRICS["factor_vae"].warnings({"eval_accuracy": 0.0, "all_dims_pruned": 0.0})
    for name in ("mig", "sap", "dci"):
        assert METRICS[name].warnings({"num_factors_dropped": 2.0})[0].startswith("2 factor(s) dropped")
        assert not METRICS[name].warnings({"num_factors_dropped": 0.0})
        assert not METRICS[name].warnings({"num_factors_dropped": float("nan")})   # a table's missing value
    info = {"i_q_nats": 5.0, "i_q_se_nats": 0.1, "rate_nats": 4.0, "entropy_x_nats": 7.0,
            "i_gen_lower_nats": 1.0, "distortion_se_nats": 0.1, "is_bound": True}
    assert "exceeds R" in METRICS["info"].warnings(info)[0]
    assert not METRICS["info"].warnings({**info, "rate_nats": 5.05})       # within one standard error
    assert "exceeds R" in METRICS["info_posterior"].warnings(
        {k: info[k] for k in ("i_q_nats", "i_q_se_nats", "rate_nats")})[0]
    assert METRICS["info"].warnings({"rate_nats": 1.0}) == []              # keys missing: nothing to say
