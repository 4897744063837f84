"""Metric tests: known answers derived from the protocols, invariances, the bug fixes,
the codes-access contract, and reproducibility.

Codes are synthetic and full-size (737,280 x 10 float32 in dataset index order, built
from the dSprites factor grid), so every metric runs exactly as on a real codes table.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from disentangle.data.ground_truth import GroundTruth
from disentangle.errors import UserError
from disentangle.evaluation.metrics import METRICS, get_metric
from disentangle.evaluation.metrics import dci as dci_module
from disentangle.evaluation.metrics.utils import (entropy_discrete, histogram_discretize,
                                                  index_of_columns, mutual_info_discrete,
                                                  sample_factor_columns)

K = 5
SMALL = {"beta_vae": dict(num_train=1000, num_eval=500),
         "factor_vae": dict(num_train=1000, num_eval=500, num_variance_estimate=2000),
         "mig": dict(num_train=3000),
         "dci": dict(num_train=400, num_test=200),
         "sap": dict(num_train=500, num_test=300),
         "modularity_explicitness": dict(num_train=500, num_test=300),
         "unsupervised": dict(num_train=2000),
         "irs": dict(num_train=2000),
         "dci_es": dict(num_train=400, num_test=200, num_trees=10),
         "infomec": dict(num_train=500)}


def normalised_factors(gt: GroundTruth) -> np.ndarray:
    """Each factor's class, scaled to zero mean and unit variance (uniform grid)."""
    classes = gt.all_classes().astype(np.float32)
    sizes = np.array(gt.factor_sizes, dtype=np.float32)
    return (classes - (sizes - 1) / 2) / np.sqrt(np.maximum(sizes ** 2 - 1, 1) / 12)


@pytest.fixture(scope="module")
def gt():
    return GroundTruth.dsprites()


@pytest.fixture(scope="module")
def ideal(gt):
    """Normalised true factors + small noise in dims 0-4, independent N(0,1) in dims 5-9."""
    rng = np.random.default_rng(1234)
    f = normalised_factors(gt)
    return np.concatenate([f + 0.01 * rng.standard_normal(f.shape, dtype=np.float32),
                           rng.standard_normal(f.shape, dtype=np.float32)], axis=1)


@pytest.fixture(scope="module")
def noise(gt):
    return np.random.default_rng(99).standard_normal((gt.num_images, 10), dtype=np.float32)


# the metrics computed from codes and factors alone (info also needs the model and images)
CODE_METRICS = [m for m, spec in METRICS.items() if spec.needs == ("codes", "ground_truth")]


def run(name, codes, gt, seed=0, **params):
    return get_metric(name)(codes, gt, np.random.default_rng(seed), **params)


# ------------------------------------------------------------------ registry
def test_registry_names_defaults_and_errors():
    assert list(METRICS) == ["beta_vae", "factor_vae", "mig", "dci", "sap", "modularity_explicitness",
                             "unsupervised", "irs", "dci_es", "infomec", "info", "info_posterior", "udr"]
    # udr is the one study-level entry (evaluate-study); evaluate and score see the rest
    from disentangle.evaluation.metrics import run_level, study_level
    assert study_level() == ["udr"] and "udr" not in run_level()
    assert METRICS["beta_vae"].defaults == {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000}
    assert METRICS["factor_vae"].defaults["prune_threshold"] == 0.05
    assert METRICS["factor_vae"].defaults["num_variance_estimate"] == 10_000
    assert METRICS["mig"].defaults == {"num_train": 10_000, "batch_size": 16, "num_bins": 20}
    assert METRICS["dci"].defaults["num_train"] == 10_000 and METRICS["dci"].defaults["num_test"] == 5_000
    assert METRICS["sap"].defaults["continuous_factors"] is False
    with pytest.raises(UserError, match="unknown metric 'nope'.*beta_vae.*sap"):
        get_metric("nope")
    with pytest.raises(UserError, match="no parameter"):
        METRICS["mig"].params({"bins": 3})
    recorded = METRICS["beta_vae"].record_params({"num_train": 7})
    assert recorded["num_train"] == 7 and recorded["batch_size"] == 64
    assert recorded["solver"] == "lbfgs" and recorded["sklearn_version"][0].isdigit()
    assert METRICS["dci"].record_params()["backend"] == "lightgbm"
    for spec in (METRICS[m] for m in CODE_METRICS):  # the function's defaults are the protocol's
        import inspect
        sig = inspect.signature(spec.fn)
        assert {k: sig.parameters[k].default for k in spec.defaults} == dict(spec.defaults)


# ------------------------------------------------------------------ helpers
def test_plugin_mutual_information_matches_sklearn():
    from sklearn.metrics import mutual_info_score
    rng = np.random.default_rng(0)
    a = rng.integers(0, 7, 3000)
    b = (a + rng.integers(0, 3, 3000)) % 11
    assert mutual_info_discrete(a, b) == pytest.approx(mutual_info_score(a, b), abs=1e-12)
    assert entropy_discrete(a) == pytest.approx(mutual_info_score(a, a), abs=1e-12)
    assert mutual_info_discrete(a, np.zeros_like(a)) == 0.0


def test_factor_major_sampling_is_ground_truth_sampling(gt, tiny_ground_truth):
    for grid in (gt, tiny_ground_truth):
        columns = sample_factor_columns(grid, 1000, np.random.default_rng(4))
        classes = grid.sample_classes(1000, np.random.default_rng(4))
        assert np.array_equal(columns.T, classes)
        assert np.array_equal(index_of_columns(grid, columns.reshape(-1, 10, 100)),
                              grid.index_of(classes).reshape(10, 100))


def test_histogram_discretizer_matches_dlib_definition():
    rng = np.random.default_rng(0)
    x = np.stack([rng.normal(size=500), np.full(500, 3.0)], axis=1)
    d = histogram_discretize(x, 20)
    assert d[:, 0].min() == 1 and d[:, 0].max() == 20 and d[np.argmax(x[:, 0]), 0] == 20
    expected = np.digitize(x[:, 0], np.histogram(x[:, 0], 20)[1][:-1])
    assert np.array_equal(d[:, 0], expected)
    assert np.unique(d[:, 1]).size == 1              # constant dimension -> one bin


# ------------------------------------------------------------------ known answers
def test_fast_metrics_at_protocol_defaults_on_ideal_code(gt, ideal):
    """Full protocol defaults. β-VAE metric and FactorVAE score are 1 for a code whose
    dimensions are the factors. MIG cannot exceed min(H_k, log 20) / H_k per factor
    (20 bins); noise dimensions' plug-in MI bias (~(19 (n_k - 1))/(2 N) nats) and the
    0.01 noise straddling bin edges take a little off."""
    assert run("beta_vae", ideal, gt) == {"train_accuracy": 1.0, "eval_accuracy": 1.0}
    fv = run("factor_vae", ideal, gt)
    assert fv["train_accuracy"] == 1.0 and fv["eval_accuracy"] == 1.0
    assert fv["num_active_dims"] == 10 and fv["all_dims_pruned"] == 0
    mig = run("mig", ideal, gt)
    ceilings = {n: min(math.log(s), math.log(20)) / math.log(s)
                for n, s in zip(gt.factor_names, gt.factor_sizes)}
    assert ceilings["orientation"] == pytest.approx(0.812, abs=1e-3)
    for name, ceiling in ceilings.items():
        assert ceiling - 0.06 <= mig[f"gap_{name}"] <= ceiling + 0.005, name
    assert mig["discrete_mig"] == pytest.approx(np.mean([mig[f"gap_{n}"] for n in gt.factor_names]))
    assert np.mean(list(ceilings.values())) - 0.04 <= mig["discrete_mig"] <= np.mean(list(ceilings.values()))
    assert mig["num_factors_dropped"] == 0


def test_pure_noise_is_at_chance(gt, noise):
    bv = run("beta_vae", noise, gt, num_train=3000, num_eval=2000)
    fv = run("factor_vae", noise, gt, num_train=3000, num_eval=2000, num_variance_estimate=3000)
    assert abs(bv["eval_accuracy"] - 1 / K) < 0.04
    assert abs(fv["eval_accuracy"] - 1 / K) < 0.04
    assert run("mig", noise, gt)["discrete_mig"] < 0.01


def test_rotation_lowers_mig_sharply(gt, ideal):
    rotation, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((10, 10)))
    rotated = (ideal @ rotation.astype(np.float32)).astype(np.float32)
    before = run("mig", ideal, gt, **SMALL["mig"])["discrete_mig"]
    after = run("mig", rotated, gt, **SMALL["mig"])["discrete_mig"]
    assert before > 0.85 and after < 0.3 * before


def test_permuting_code_dimensions_changes_nothing(gt, ideal):
    """Same seed -> same draws; MIG and FactorVAE treat dimensions independently and
    symmetrically, so they are exactly invariant; the β-VAE metric's classifier sees
    permuted features (same optimum, float summation order may differ)."""
    perm = np.random.default_rng(3).permutation(10)
    # a partly disentangled code, so the invariance is not trivially at 1.0
    codes = ideal.copy()
    codes[:, 0] = ideal[:, 0] + ideal[:, 3]
    permuted = np.ascontiguousarray(codes[:, perm])
    for name in ("mig", "factor_vae"):
        assert run(name, codes, gt, **SMALL[name]) == run(name, permuted, gt, **SMALL[name]), name
    a = run("beta_vae", codes, gt, **SMALL["beta_vae"])
    b = run("beta_vae", permuted, gt, **SMALL["beta_vae"])
    assert a["eval_accuracy"] == pytest.approx(b["eval_accuracy"], abs=0.005)


def test_scaled_codes_are_all_pruned_and_say_so(gt, ideal):
    fv = run("factor_vae", ideal * np.float32(0.01), gt)
    assert fv == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0,
                  "all_dims_pruned": 1.0}


def test_factor_vae_constant_dims_no_nan_and_real_active_count(gt, ideal):
    """Threshold 0 (disent's setting) with 3 exactly constant dimensions: dlib/disent
    would divide 0/0 and let NaN win every argmin; here they are inactive."""
    codes = ideal.copy()
    codes[:, [5, 7, 9]] = 0.5
    for threshold in (0.0, 0.05):
        fv = run("factor_vae", codes, gt, prune_threshold=threshold, **SMALL["factor_vae"])
        assert fv["num_active_dims"] == 7 and fv["eval_accuracy"] == 1.0
    # a dimension above the threshold is kept, one below is pruned (std is absolute)
    codes[:, 5] = 0.03 * np.random.default_rng(0).standard_normal(gt.num_images)
    assert run("factor_vae", codes, gt, **SMALL["factor_vae"])["num_active_dims"] == 7
    assert run("factor_vae", codes, gt, prune_threshold=0.01, **SMALL["factor_vae"])["num_active_dims"] == 8


def test_one_valued_factor_is_dropped_not_divided_by_zero():
    sub = GroundTruth.dsprites().subgrid({"shape": [2], "orientation": range(0, 40, 8)})
    codes = normalised_factors(sub)
    codes = np.concatenate([codes, np.random.default_rng(0).standard_normal(codes.shape,
                                                                           dtype=np.float32)], 1)
    mig = run("mig", codes, sub, num_train=2000)
    assert mig["num_factors_dropped"] == 1 and "gap_shape" not in mig
    assert all(np.isfinite(v) for v in mig.values()) and mig["discrete_mig"] > 0.8
    sap = run("sap", codes, sub, **SMALL["sap"])
    assert sap["num_factors_dropped"] == 1 and np.isfinite(sap["sap_score"])
    dci = run("dci", codes, sub, **SMALL["dci"])
    assert dci["num_factors_dropped"] == 1 and dci["disentanglement"] > 0.7


def test_constant_dimensions_no_nan_in_mig_and_sap(gt, ideal):
    codes = ideal.copy()
    codes[:, 5:] = 0.0
    mig = run("mig", codes, gt, **SMALL["mig"])
    assert all(np.isfinite(v) for v in mig.values()) and mig["discrete_mig"] > 0.85
    for continuous in (False, True):
        sap = run("sap", codes, gt, continuous_factors=continuous, **SMALL["sap"])
        assert np.isfinite(sap["sap_score"]) and sap["sap_score"] > 0


# ------------------------------------------------------------------ DCI and SAP
def test_dci_formulas():
    eye = np.eye(5)
    assert dci_module.disentanglement(eye) == pytest.approx(1.0, abs=1e-6)
    assert dci_module.completeness(eye) == pytest.approx(1.0, abs=1e-6)
    uniform = np.ones((10, 5))
    assert dci_module.disentanglement(uniform) == pytest.approx(0.0, abs=1e-9)
    assert dci_module.completeness(uniform) == pytest.approx(0.0, abs=1e-9)
    # one dimension explains every factor: perfectly complete, not disentangled
    one_dim = np.zeros((10, 5))
    one_dim[0] = 1.0
    assert dci_module.completeness(one_dim) == pytest.approx(1.0, abs=1e-6)
    assert dci_module.disentanglement(one_dim) == pytest.approx(0.0, abs=1e-9)
    # matches scipy.stats.entropy as dlib writes it
    from scipy.stats import entropy
    m = np.random.default_rng(0).random((10, 5))
    per_code = 1 - entropy(m.T + 1e-11, base=5)
    assert dci_module.disentanglement(m) == pytest.approx(np.sum(per_code * m.sum(1) / m.sum()))
    per_factor = 1 - entropy(m + 1e-11, base=10)
    assert dci_module.completeness(m) == pytest.approx(np.sum(per_factor * m.sum(0) / m.sum()))


def test_dci_ideal_vs_noise(tiny_ground_truth):
    # the small grid: DCI's cost grows with the number of classes (one tree per class)
    gt = tiny_ground_truth
    rng = np.random.default_rng(0)
    f = normalised_factors(gt)
    ideal = np.concatenate([f + 0.01 * rng.standard_normal(f.shape), rng.standard_normal(f.shape)], 1)
    noise = rng.standard_normal((gt.num_images, 10))
    good = run("dci", ideal, gt, **SMALL["dci"])
    bad = run("dci", noise, gt, **SMALL["dci"])
    assert good["disentanglement"] > 0.8 and good["completeness"] > 0.8
    # (test points can repeat training images on a 1,536-image grid, so noise codes are
    # somewhat predictable; compare with the informative code instead of chance)
    assert bad["disentanglement"] < 0.3 and bad["informativeness_test"] < good["informativeness_test"] - 0.3
    assert good["informativeness_test"] > 0.6 and good["informativeness_train"] >= good["informativeness_test"] - 0.05


def test_dci_backends_agree_on_a_small_grid(tiny_ground_truth):
    """The fast backend reproduces the reference GradientBoostingClassifier's algorithm
    (small grid so the reference is quick, with a two-valued factor for the binary path;
    benchmarks/bench_dci.py compares them at full size)."""
    gt = tiny_ground_truth
    rng = np.random.default_rng(0)
    f = normalised_factors(gt)
    codes = np.stack([f[:, 3] + 0.2 * rng.standard_normal(len(f)), f[:, 4] + 0.2 * rng.standard_normal(len(f)),
                      f[:, 1] + 0.5 * f[:, 0] + 0.3 * rng.standard_normal(len(f)),
                      np.sin(2 * f[:, 2]) + 0.3 * rng.standard_normal(len(f)),
                      rng.standard_normal(len(f)), 0.02 * rng.standard_normal(len(f))], axis=1).astype(np.float32)
    ref = run("dci", codes, gt, num_train=300, num_test=300, backend="sklearn-gbt")
    fast = run("dci", codes, gt, num_train=300, num_test=300, backend="lightgbm")
    for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert fast[key] == pytest.approx(ref[key], abs=0.02), key    # the target
    with pytest.raises(UserError, match="unknown backend"):
        run("dci", codes, gt, num_train=50, num_test=50, backend="xgb")


def test_sap_ideal_beats_noise(gt, ideal, noise):
    good = run("sap", ideal, gt, **SMALL["sap"])["sap_score"]
    bad = run("sap", noise, gt, **SMALL["sap"])["sap_score"]
    assert good > 0.1 and bad < 0.05
    cont = run("sap", ideal, gt, continuous_factors=True, **SMALL["sap"])["sap_score"]
    assert cont > 0.9     # each factor is linear in its own dimension


# ------------------------------------------------------------------ contract and reproducibility
class IndexOnlyCodes:
    """Supports exactly what metrics may use: .shape and [1-D int64 array]; logs calls."""

    def __init__(self, array):
        self._array = array
        self.shape = array.shape
        self.calls = []

    def __getitem__(self, idx):
        assert isinstance(idx, np.ndarray) and idx.ndim == 1 and idx.dtype == np.int64
        self.calls.append(idx.copy())
        return self._array[idx]

    def __array__(self, *args, **kwargs):
        raise AssertionError("metric touched the whole codes array")

    def __len__(self):
        raise AssertionError("metric used len(codes)")


@pytest.mark.parametrize("name", CODE_METRICS)
def test_metrics_read_codes_only_by_index_and_same_seed_same_numbers(name, gt, ideal, tiny_ground_truth):
    if name in ("dci", "sap", "modularity_explicitness", "dci_es", "infomec"):
        # the classifier metrics' cost grows with the number of classes; the access
        # contract does not depend on the grid, so check them on the small one
        gt = tiny_ground_truth
        ideal = normalised_factors(gt) + 0.1 * np.random.default_rng(0).standard_normal(
            (gt.num_images, K)).astype(np.float32)
    lazy = IndexOnlyCodes(ideal)
    via_lazy = run(name, lazy, gt, seed=7, **SMALL[name])
    assert lazy.calls and all(np.all(c < gt.num_images) for c in lazy.calls)
    assert via_lazy == run(name, ideal, gt, seed=7, **SMALL[name])
    again = IndexOnlyCodes(ideal)
    run(name, again, gt, seed=7, **SMALL[name])
    assert all(np.array_equal(a, b) for a, b in zip(lazy.calls, again.calls))   # same draws
    assert all(isinstance(v, float) and np.isfinite(v) for v in via_lazy.values())


def test_different_seeds_differ_slightly(gt):
    rng = np.random.default_rng(0)
    f = normalised_factors(gt)
    codes = np.stack([f[:, 3] + f[:, 4], f[:, 3] - 0.5 * f[:, 4], f[:, 1] + 0.3 * f[:, 0],
                      np.sin(f[:, 2]), rng.standard_normal(len(f))], axis=1).astype(np.float32)
    codes += 0.3 * rng.standard_normal(codes.shape).astype(np.float32)
    for name, key in (("mig", "discrete_mig"), ("factor_vae", "eval_accuracy"), ("beta_vae", "eval_accuracy")):
        a = run(name, codes, gt, seed=0, **SMALL[name])[key]
        b = run(name, codes, gt, seed=1, **SMALL[name])[key]
        assert a != b and abs(a - b) < 0.08, (name, a, b)


def test_bad_inputs_raise_user_errors(gt, ideal):
    with pytest.raises(UserError, match="rows"):
        run("mig", ideal[:100], gt)
    with pytest.raises(UserError, match="at least 2 code dimensions"):
        run("mig", ideal[:, :1], gt)
    with pytest.raises(UserError, match="positive integer"):
        run("beta_vae", ideal, gt, num_train=0)
    with pytest.raises(UserError, match="prune_threshold"):
        run("factor_vae", ideal, gt, prune_threshold=-1.0)
