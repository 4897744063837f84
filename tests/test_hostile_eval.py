"""Issue 22, the evaluation items: every size a metric draws is checked against the
dataset before any image is encoded; run files that are not regular files are refused
before the work; DCI on wide codes is bounded; crafted codes files are refused before they
are read; a metric's warnings never abort it; constant codes give a defined score.

Each CLI case asserts exit 1, one "Error:" line naming the parameter or file, no
traceback, and that nothing was written (sha256 of every file before and after)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from disentangle.data.ground_truth import GroundTruth
from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics import METRICS, DataSummary
from disentangle.io import CODES_FILE, SCORES_FILE, SCORES_LOCK_FILE
from cli_checks import file_hashes as _hashes, invoke as _invoke, one_line as _one_line

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- 1. sizes vs the dataset
@pytest.mark.parametrize("param, named", [
    ("beta_vae.num_train=1", "--param beta_vae.num_train"),
    ("mig.num_train=1", "--param mig.num_train"),
    ("dci.num_train=1", "--param dci.num_train"),
    ("infomec.num_train=5", "--param infomec.num_train"),          # the largest tiny factor has 8 values
    ("unsupervised.num_train=4", "--param unsupervised.num_train"),  # the tiny run has 6 code dimensions
])
def test_a_size_the_dataset_cannot_meet_is_refused_before_encoding(run_dir, tiny_data_path, param, named):
    before = _hashes(run_dir)
    line = _one_line(_invoke("evaluate", run_dir, "--data", tiny_data_path, "--metric", "all", "--param", param))
    assert named in line, line
    assert not (run_dir / CODES_FILE).exists() and not (run_dir / SCORES_FILE).exists()
    assert _hashes(run_dir) == before


@pytest.fixture(scope="module")
def one_image_data(tmp_path_factory):
    from disentangle.data.dsprites import render_dataset
    keep = {"shape": [0], "scale": [0], "orientation": [0], "pos_x": [0], "pos_y": [0]}
    return render_dataset(tmp_path_factory.mktemp("one") / "one.h5", GroundTruth.dsprites().subgrid(keep))


@pytest.mark.parametrize("metric", ["mig", "factor_vae", "beta_vae", "dci", "irs", "all"])
def test_a_one_image_dataset_is_refused_before_any_metric(tmp_path, one_image_data, metric):
    codes = tmp_path / "one.npy"
    np.save(codes, np.zeros((1, 4), np.float32))
    out = tmp_path / "out"
    line = _one_line(_invoke("score", codes, "--out", out, "--data", one_image_data, "--metric", metric))
    assert "takes a single value" in line or "at least 2 factors" in line, line
    assert not out.exists()


TWO_VALUED = GroundTruth.dsprites().subgrid({"shape": [0, 1], "scale": [0], "orientation": [0], "pos_x": [0],
                                              "pos_y": [0]})


@pytest.mark.parametrize("metric, params", [
    ("mig", {"num_train": 2}), ("sap", {"num_train": 2, "num_test": 2}), ("dci", {"num_train": 2, "num_test": 2}),
    ("modularity_explicitness", {"num_train": 2, "num_test": 2}),
    ("dci_es", {"num_train": 2, "num_test": 2, "num_trees": 2}),
])
def test_the_replayed_draw_is_the_metrics_own(metric, params):
    """On a grid where only one factor (2 values) varies, 2 points share its value half
    the time: the data check must refuse exactly the seeds on which the metric itself
    would find nothing to score (same Generator, same first draw)."""
    spec = METRICS[metric]
    codes = np.random.default_rng(0).normal(size=(TWO_VALUED.num_images, 3)).astype(np.float32)
    refused = 0
    for seed in range(12):
        summary = DataSummary(TWO_VALUED.num_images, TWO_VALUED, code_dim=3, seed=seed)
        try:
            spec.check_inputs(spec.params(params), summary)
            checked = True
        except ParameterError as exc:
            assert exc.parameter == f"{metric}.num_train"
            checked = False
        try:
            spec(codes, TWO_VALUED, np.random.default_rng(seed), **params)
            ran = True
        except UserError as exc:
            assert "single value" in str(exc)
            ran = False
        assert checked == ran, seed
        refused += not checked
    assert 0 < refused < 12      # both outcomes occur: the test can fail


def test_beta_vae_replays_its_labels():
    gt = GroundTruth.dsprites().subgrid({"scale": [0, 1], "orientation": [0], "pos_x": [0], "pos_y": [0]})
    codes = np.random.default_rng(0).normal(size=(gt.num_images, 2)).astype(np.float32)
    spec = METRICS["beta_vae"]
    params = {"num_train": 2, "num_eval": 2, "batch_size": 2}
    outcomes = set()
    for seed in range(15):
        try:
            spec.check_inputs(spec.params(params), DataSummary(gt.num_images, gt, 2, seed))
            checked = True
        except ParameterError:
            checked = False
        try:
            spec(codes, gt, np.random.default_rng(seed), **params)
            ran = True
        except UserError:
            ran = False
        assert checked == ran, seed
        outcomes.add(checked)
    assert outcomes == {True, False}


# ----------------------------------------------------------------------------- 2. --param messages
def test_a_study_level_metrics_param_names_evaluate_study(run_dir, tiny_data_path):
    before = _hashes(run_dir)
    line = _one_line(_invoke("evaluate", run_dir, "--data", tiny_data_path, "--param", "udr.x=1"))
    assert "study-level" in line and "evaluate-study" in line and "udr.num_data_points" in line, line
    assert _hashes(run_dir) == before


def test_an_unknown_parameter_lists_the_metrics_parameters(run_dir, tiny_data_path):
    line = _one_line(_invoke("evaluate", run_dir, "--data", tiny_data_path, "--param", "mig.x=1"))
    assert "--param mig.x" in line and "num_train, batch_size, num_bins" in line, line


# ----------------------------------------------------------------------------- 3. run files
def _fifo(path):
    os.mkfifo(path)


def _directory(path):
    path.mkdir()
    (path / "inside").write_text("kept")


def _link(path):
    target = path.parent.parent / "notes.txt"
    target.write_text("my notes\n")
    os.symlink(target, path)


@pytest.mark.parametrize("name", [SCORES_FILE, SCORES_LOCK_FILE, CODES_FILE])
@pytest.mark.parametrize("make", [_directory, _fifo, _link], ids=["directory", "fifo", "link"])
def test_a_run_file_that_is_not_a_regular_file_is_refused_before_encoding(run_dir, tiny_data_path, name, make):
    make(run_dir / name)
    before = _hashes(run_dir.parent)
    line = _one_line(_invoke("evaluate", run_dir, "--data", tiny_data_path, "--metric", "mig"))
    assert name in line and "cannot write" in line, line
    assert _hashes(run_dir.parent) == before
    if name != CODES_FILE:
        assert not (run_dir / CODES_FILE).exists()     # refused before the encoding


# ----------------------------------------------------------------------------- 4. DCI on wide codes
def test_dci_on_3000_columns_is_refused_up_front_naming_the_parameter(tmp_path, tiny_data_path):
    wide = tmp_path / "wide.npy"
    np.save(wide, np.zeros((1536, 3000), np.float32))
    out = tmp_path / "out"
    line = _one_line(_invoke("score", wide, "--out", out, "--data", tiny_data_path, "--metric", "dci"))
    assert "--param dci.max_minutes" in line and "3,000 code columns" in line and "minutes" in line, line
    assert not out.exists()


def test_dci_estimate_scales_with_columns_trees_and_points(tiny_ground_truth):
    from disentangle.evaluation.metrics import dci
    params = dci.DEFAULTS
    at = {d: dci.estimate_seconds(params, DataSummary(1536, tiny_ground_truth, d)) for d in (10, 20, 3000)}
    per_tree = dci.SECONDS_PER_TREE["lightgbm"] * dci.num_trees(tiny_ground_truth.factor_sizes)
    assert at[20] - per_tree == pytest.approx(2 * (at[10] - per_tree))
    assert at[10] < 60 * params["max_minutes"] < at[3000]
    # shape 3, scale 2, orientation 4, pos 8 + 8 classes: 3 + 1 + 4 + 8 + 8 trees a stage, 100 stages
    assert dci.num_trees(tiny_ground_truth.factor_sizes) == 2400
    assert dci.estimate_seconds(params, DataSummary(1536, tiny_ground_truth, None)) is None


def test_dci_reports_its_progress_per_factor(tiny_ground_truth):
    from disentangle.progress import reporting
    seen = []
    codes = np.random.default_rng(0).normal(size=(tiny_ground_truth.num_images, 3)).astype(np.float32)
    with reporting(lambda phase, done, total, unit: seen.append((phase, done, total))):
        METRICS["dci"](codes, tiny_ground_truth, np.random.default_rng(0), num_train=60, num_test=20)
    assert [p for p, _, _ in seen] == [f"metric dci: factor {n}" for n in tiny_ground_truth.factor_names]
    assert [d for _, d, _ in seen] == list(range(5)) and {t for _, _, t in seen} == {5}


# ----------------------------------------------------------------------------- 5. crafted codes files
def _npz_with_member(path, header_shape, payload: bytes):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("codes.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f4", "fortran_order": False,
                                                      "shape": header_shape})
            fh.write(payload)


def _bomb(path):      # a header declaring 2.4 GB of float32 columns, a few bytes stored
    _npz_with_member(path, (1536, 400_000), b"\0" * 64)


def _stuffed(path):   # a (1536, 4) header, 64 MB of zeros behind it (a few hundred kB deflated)
    _npz_with_member(path, (1536, 4), b"\0" * (1536 * 4 * 4 + (64 << 20)))


def _short_member(path):
    _npz_with_member(path, (1536, 4), b"\0" * 100)


def _bad_crc(path):
    np.savez(path, codes=np.random.default_rng(0).normal(size=(1536, 4)).astype(np.float32))
    raw = bytearray(path.read_bytes())
    raw[300] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncated_npy(path):
    np.save(path, np.zeros((1536, 4), np.float32))
    path.write_bytes(path.read_bytes()[:5000])


def _empty_npy(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("make, suffix, says", [
    (_bomb, ".npz", "declares 400,000 columns"), (_stuffed, ".npz", "crafted"),
    (_short_member, ".npz", "truncated"), (_bad_crc, ".npz", "CRC"),
    (_truncated_npy, ".npy", "truncated"), (_empty_npy, ".npy", "an empty file: 0 bytes"),
])
def test_a_crafted_or_damaged_codes_file_is_one_line(tmp_path, tiny_data_path, make, suffix, says):
    codes = tmp_path / f"codes{suffix}"
    make(codes)
    out = tmp_path / "out"
    result = _invoke("score", codes, "--out", out, "--data", tiny_data_path, "--metric", "mig")
    line = _one_line(result)
    assert str(codes) in line and says in line, line
    assert "Aborted" not in result.output
    assert not out.exists()


# ----------------------------------------------------------------------------- 6. warnings as errors
def test_pythonwarnings_error_records_a_metrics_warning_instead_of_a_traceback(tmp_path, tiny_data, tiny_data_path):
    """Codes on wildly different scales make the explicitness classifier (LogisticRegression,
    100 iterations, as dlib) stop before convergence; with PYTHONWARNINGS=error that
    warning used to end the command in a traceback. The score is the protocol's, the
    warning is recorded beside it and shown as a note."""
    classes = tiny_data.ground_truth.all_classes().astype(np.float64)
    noise = np.random.default_rng(0).normal(size=(len(classes), 5)) * 5
    codes = tmp_path / "exp.npy"
    np.save(codes, np.exp(np.concatenate([classes * 3, noise], axis=1)).astype(np.float32))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "disentangle", "score", str(codes), "--out", str(out),
                           "--data", str(tiny_data_path), "--metric", "modularity_explicitness"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "note: ConvergenceWarning" in proc.stderr
    entry = json.loads((out / SCORES_FILE).read_text())["modularity_explicitness"]
    assert any(w.startswith("ConvergenceWarning: lbfgs failed to converge") for w in entry["warnings"])
    # the same score as without the escalation (the filter changes nothing computed)
    from disentangle.evaluation.score import read_codes_file
    import warnings
    mean, _ = read_codes_file(codes, tiny_data.num_images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = METRICS["modularity_explicitness"](mean, tiny_data.ground_truth, np.random.default_rng(0))
    assert entry["values"] == pytest.approx(expected, rel=0, abs=0)


# ----------------------------------------------------------------------------- 7. constant codes
def test_constant_codes_give_dci_the_references_prior_model_with_either_backend(tiny_ground_truth):
    codes = np.zeros((tiny_ground_truth.num_images, 4), np.float32)
    values = {b: METRICS["dci"](codes, tiny_ground_truth, np.random.default_rng(0), num_train=300, num_test=100,
                                backend=b) for b in ("sklearn-gbt", "lightgbm")}
    assert values["lightgbm"] == values["sklearn-gbt"]
    assert values["lightgbm"]["disentanglement"] == 0.0 and values["lightgbm"]["completeness"] == 0.0


def test_constant_codes_through_every_metric_are_scored_not_a_traceback(tmp_path, tiny_data_path):
    codes = tmp_path / "const.npy"
    np.save(codes, np.zeros((1536, 4), np.float32))
    out = tmp_path / "out"
    result = _invoke("score", codes, "--out", out, "--data", tiny_data_path, "--metric", "all",
                     "--param", "dci_es.num_trees=5")
    assert result.exit_code == 0, result.output
    scores = json.loads((out / SCORES_FILE).read_text())
    assert scores["dci"]["values"]["disentanglement"] == 0.0
    assert scores["unsupervised"]["values"]["gaussian_total_correlation"] == 0.0
