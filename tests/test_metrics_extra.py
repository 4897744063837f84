"""Tests of the metrics of issue 13 (modularity_explicitness, unsupervised, irs, dci_es,
infomec, udr): known answers, the invariances each definition promises, and the edge
cases that break the reference implementations (constant code dimensions never give NaN).

Synthetic codes in dataset index order over the full dSprites grid, as tests/test_metrics.py.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from disentangle.data.ground_truth import GroundTruth
from disentangle.errors import UserError
from disentangle.evaluation.metrics import (dci_es, get_metric, infomec, irs,
                                            modularity_explicitness, udr, unsupervised)

MODULES = (modularity_explicitness, unsupervised, irs, dci_es, infomec, udr)
K = 5


def normalised_factors(gt: GroundTruth) -> np.ndarray:
    classes = gt.all_classes().astype(np.float32)
    sizes = np.array(gt.factor_sizes, dtype=np.float32)
    return (classes - (sizes - 1) / 2) / np.sqrt(np.maximum(sizes ** 2 - 1, 1) / 12)


def rotation(seed=3, dims=K) -> np.ndarray:
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((dims, dims)))
    return q.astype(np.float32)


@pytest.fixture(scope="module")
def gt():
    return GroundTruth.dsprites()


@pytest.fixture(scope="module")
def tiny(tiny_ground_truth):
    return tiny_ground_truth


def synthetic_codes(gt):
    """The synthetic codes of the table in docs/metrics_extra.md (10 dims each); also used
    by benchmarks/metrics_extra_table.py."""
    rng = np.random.default_rng(1234)
    f = normalised_factors(gt)
    eps = 0.01 * rng.standard_normal(f.shape, dtype=np.float32)
    dead = np.zeros_like(f)
    noise5 = rng.standard_normal(f.shape, dtype=np.float32)
    return {"ideal": np.concatenate([f + eps, dead], axis=1),
            "rotated": np.concatenate([(f + eps) @ rotation(), dead], axis=1),
            "partial": np.concatenate([f[:, :3] + eps[:, :3], noise5, dead[:, :2]], axis=1),
            "noise": rng.standard_normal((gt.num_images, 10), dtype=np.float32),
            "collapsed": np.zeros((gt.num_images, 10), dtype=np.float32),
            "scaled": np.concatenate([(f + eps) * np.array([1e-3, 1, 50, 7, 1e3], np.float32), dead], axis=1)}


@pytest.fixture(scope="module")
def codes(gt):
    return synthetic_codes(gt)


def run(name, x, gt, seed=0, **params):
    return get_metric(name)(x, gt, np.random.default_rng(seed), **params)


def finite(values: dict) -> bool:
    return all(isinstance(v, float) and math.isfinite(v) for v in values.values())


# ------------------------------------------------------------------ registry-ready module data
def test_every_module_has_registry_data_and_checks_its_params():
    import inspect
    fns = {"modularity_explicitness": modularity_explicitness.modularity_explicitness,
           "unsupervised": unsupervised.unsupervised_scores, "irs": irs.irs_score,
           "dci_es": dci_es.dci_es_score, "infomec": infomec.infomec_score}
    for module in MODULES:
        assert set(module.HEADLINE) <= set(module.LABELS) and module.NEEDS in ("factors", "codes", "study")
        module.check_params(dict(module.DEFAULTS))                       # defaults are valid
        bad = next(k for k in module.DEFAULTS if k != "batch_size")
        with pytest.raises(UserError, match=rf"{module.NAME}\.{bad}"):
            module.check_params({bad: -1})
        if module.NAME in fns:                                            # defaults = signature
            sig = inspect.signature(fns[module.NAME])
            assert {k: sig.parameters[k].default for k in module.DEFAULTS} == module.DEFAULTS
    assert modularity_explicitness.DEFAULTS == {"num_train": 10_000, "num_test": 5_000,
                                                "batch_size": 16, "num_bins": 20}
    assert irs.DEFAULTS["diff_quantile"] == 0.99 and irs.DEFAULTS["num_train"] == 10_000
    assert udr.DEFAULTS["kl_filter_threshold"] == 0.01
    with pytest.raises(UserError, match=r"dci_es\.depths"):
        dci_es.check_params({"depths": (4, 2)})
    with pytest.raises(UserError, match=r"irs\.diff_quantile"):
        run("irs", np.zeros((737_280, 2), np.float32), GroundTruth.dsprites(), diff_quantile=1.5)


# ------------------------------------------------------------------ modularity / explicitness
def test_modularity_formula_known_answers():
    mi = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # dim 0: perfectly modular (1); dim 1: deviation 1 / (1 * 2) -> 0.5; dim 2: dead -> 0
    assert modularity_explicitness.modularity(mi) == pytest.approx((1 + 0.5 + 0) / 3)
    assert modularity_explicitness.modularity(np.array([[2.0], [0.0]])) == 0.5     # K = 1


def test_modularity_explicitness_known_answers_and_invariances(tiny):
    rng = np.random.default_rng(0)
    f = normalised_factors(tiny)
    eps = 0.01 * rng.standard_normal(f.shape).astype(np.float32)
    p = dict(num_train=1500, num_test=800)
    ideal = run("modularity_explicitness", f + eps, tiny, **p)
    rotated = run("modularity_explicitness", (f + eps) @ rotation(), tiny, **p)
    noise = run("modularity_explicitness", rng.standard_normal(f.shape).astype(np.float32), tiny, **p)
    assert ideal["modularity_score"] > 0.95 and rotated["modularity_score"] < ideal["modularity_score"] - 0.05
    assert ideal["explicitness_score_test"] > 0.95 > noise["explicitness_score_test"] + 0.3
    assert abs(noise["explicitness_score_test"] - 0.5) < 0.06               # chance AUC
    # permutation and scale: the MI matrix is unchanged, the standardised features too
    perm = run("modularity_explicitness", (f + eps)[:, ::-1] * np.float32(40), tiny, **p)
    assert perm["modularity_score"] == pytest.approx(ideal["modularity_score"], abs=1e-9)
    assert perm["explicitness_score_test"] == pytest.approx(ideal["explicitness_score_test"], abs=2e-3)
    # dlib raises on a constant dimension (0/0 standardisation); here it is just empty
    dead = run("modularity_explicitness", np.concatenate([f + eps, np.zeros_like(f)], axis=1), tiny, **p)
    assert finite(dead)
    assert dead["modularity_score"] == pytest.approx(ideal["modularity_score"] / 2, abs=1e-9)
    assert dead["explicitness_score_test"] == pytest.approx(ideal["explicitness_score_test"], abs=2e-3)


# ------------------------------------------------------------------ unsupervised
def test_gaussian_total_correlation_known_answer_and_constant_dims(gt):
    rng = np.random.default_rng(5)
    rho = 0.8
    a = rng.standard_normal(gt.num_images)
    b = rho * a + math.sqrt(1 - rho ** 2) * rng.standard_normal(gt.num_images)
    x = np.stack([a, b, rng.standard_normal(gt.num_images)], axis=1).astype(np.float32)
    res = run("unsupervised", x, gt, num_train=10_000)
    assert res["gaussian_total_correlation"] == pytest.approx(-0.5 * math.log(1 - rho ** 2), abs=0.02)
    # W: 2 tr C - 2 tr sqrt(C diag C); for unit variances and correlation rho in 2-D the
    # eigenvalues of C are 1 +- rho, so the extra third dimension adds 0
    expected_w = 2 * 2 - 2 * (math.sqrt(1 + rho) + math.sqrt(1 - rho))
    assert res["gaussian_wasserstein_correlation"] == pytest.approx(expected_w, abs=0.03)
    # constant dimensions: dlib gives NaN; here they change nothing
    with_dead = run("unsupervised", np.concatenate([x, np.zeros((gt.num_images, 2), np.float32)], axis=1),
                    gt, num_train=10_000)
    assert finite(with_dead)
    for key in ("gaussian_total_correlation", "gaussian_wasserstein_correlation"):
        assert with_dead[key] == pytest.approx(res[key], rel=1e-9)
    # TC and MI are invariant to scaling and permuting the dimensions
    scaled = run("unsupervised", x[:, ::-1] * np.array([3, 0.01, 100], np.float32), gt, num_train=10_000)
    assert scaled["gaussian_total_correlation"] == pytest.approx(res["gaussian_total_correlation"], rel=1e-5)
    assert scaled["mutual_info_score"] == pytest.approx(res["mutual_info_score"], rel=1e-9)
    collapsed = run("unsupervised", np.zeros((gt.num_images, 4), np.float32), gt, num_train=1000)
    assert collapsed == {"gaussian_total_correlation": 0.0, "gaussian_wasserstein_correlation": 0.0,
                         "gaussian_wasserstein_correlation_norm": 0.0, "mutual_info_score": 0.0}


def test_unsupervised_independent_factor_codes_score_near_zero(gt, codes):
    ideal = run("unsupervised", codes["ideal"], gt, num_train=10_000)
    rotated = run("unsupervised", codes["rotated"], gt, num_train=10_000)
    assert ideal["gaussian_total_correlation"] < 0.01
    # a rotation of uncorrelated unit-variance dimensions keeps the covariance I: the
    # Gaussian scores cannot see it (by definition); the discrete MI between dimensions can
    assert rotated["gaussian_total_correlation"] < 0.01
    assert rotated["mutual_info_score"] > 5 * ideal["mutual_info_score"]
    sheared = codes["ideal"].copy()
    sheared[:, 1] += sheared[:, 0]                 # correlation 1/sqrt(2): TC = log(2) / 2
    assert run("unsupervised", sheared, gt, num_train=10_000)["gaussian_total_correlation"] == \
        pytest.approx(0.5 * math.log(2), abs=0.02)


# ------------------------------------------------------------------ IRS
def test_irs_known_answers_and_invariances(gt, codes):
    p = dict(num_train=5000)
    ideal = run("irs", codes["ideal"], gt, **p)
    assert ideal["num_active_dims"] == 5.0           # a count (dlib sums the codes' values)
    assert ideal["IRS"] > 0.9 and finite(ideal)
    noise = run("irs", codes["noise"], gt, **p)
    assert noise["IRS"] < 0.45
    scaled = run("irs", codes["scaled"], gt, **p)
    # every dimension's score is a ratio of its own deviations: scale-free; the weights
    # (max deviations) change, so compare the per-dimension scores
    for i in range(5):
        assert scaled[f"irs_dim{i}"] == pytest.approx(ideal[f"irs_dim{i}"], rel=1e-4)
    perm = run("irs", codes["ideal"][:, ::-1], gt, **p)
    assert perm["IRS"] == pytest.approx(ideal["IRS"], rel=1e-9)
    assert run("irs", codes["collapsed"], gt, **p) == {"num_active_dims": 0.0, "IRS": 0.0}


# ------------------------------------------------------------------ DCI-ES
def test_explicitness_curve_known_answers():
    depths = [1, 2, 4, 8]
    assert dci_es.explicitness(depths, [0.5, 0.5, 0.5, 0.5], baseline_loss=0.5) == pytest.approx(0.0)
    assert dci_es.explicitness(depths, [0.0, 0.0, 0.0, 0.0], baseline_loss=0.5) == 1.0
    # linear from baseline to 0 over the capacity range: half the area -> 0.5
    assert dci_es.explicitness([0, 1, 2], [1.0, 0.5, 0.0], baseline_loss=1.0) == pytest.approx(0.5)
    # the loss is the best reached so far: a worse deeper probe does not count
    assert (dci_es.explicitness([0, 1, 2], [1.0, 0.0, 0.7], 1.0)
            == dci_es.explicitness([0, 1, 2], [1.0, 0.0, 0.0], 1.0))


def test_truncated_forest_at_full_depth_is_the_forest(tiny):
    from sklearn.ensemble import RandomForestClassifier
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 3))
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    forest = RandomForestClassifier(n_estimators=5, max_depth=32, random_state=0).fit(x, y)
    assert np.allclose(dci_es._truncated_proba(forest, x, 32, 3), forest.predict_proba(x))
    stump = RandomForestClassifier(n_estimators=1, max_depth=1, bootstrap=False, max_features=None,
                                   random_state=0).fit(x, y)
    full = RandomForestClassifier(n_estimators=1, max_depth=32, bootstrap=False, max_features=None,
                                  random_state=0).fit(x, y)
    assert np.allclose(dci_es._truncated_proba(full, x, 1, 3), stump.predict_proba(x))


def test_dci_es_known_answers_and_invariances(tiny, gt, codes):
    rng = np.random.default_rng(0)
    f = normalised_factors(tiny)
    eps = 0.01 * rng.standard_normal(f.shape).astype(np.float32)
    p = dict(num_train=800, num_test=400, num_trees=20)
    ideal = run("dci_es", np.concatenate([f + eps, np.zeros_like(f)], axis=1), tiny, **p)
    # noise on the full grid: on the tiny one the test images are mostly training images,
    # and a deep forest reads the factors off a noise code that is a fixed function of them
    noise = run("dci_es", codes["noise"], gt, **p)
    assert ideal["explicitness"] > 0.85 and abs(noise["explicitness"]) < 0.1
    assert ideal["size"] == 0.5 and noise["size"] == 0.5 and finite(ideal)
    # trees split on thresholds: a positive scale of any dimension changes nothing
    scaled = run("dci_es", np.concatenate([(f + eps) * np.float32(1e3), np.zeros_like(f)], axis=1), tiny, **p)
    assert scaled["explicitness"] == pytest.approx(ideal["explicitness"], abs=1e-12)
    assert finite(run("dci_es", np.zeros((tiny.num_images, 3), np.float32), tiny, **p))


# ------------------------------------------------------------------ InfoMEC
def test_infomec_known_answers(tiny):
    rng = np.random.default_rng(0)
    f = normalised_factors(tiny)
    eps = 0.01 * rng.standard_normal(f.shape).astype(np.float32)
    p = dict(num_train=1500)
    dead = np.zeros_like(f)
    ideal = run("infomec", np.concatenate([f + eps, dead], axis=1), tiny, **p)
    assert ideal["num_active_latents"] == 5.0         # the dead dimensions are pruned
    # the kNN MI estimator's bias (~0.05 of H per unrelated pair at this size) keeps a
    # perfect code below 1
    assert ideal["infom"] > 0.75 and ideal["infoc"] > 0.75 and ideal["infoe"] > 0.99
    rotated = run("infomec", np.concatenate([(f + eps) @ rotation(), dead], axis=1), tiny, **p)
    assert rotated["infom"] < ideal["infom"] - 0.2 and rotated["infoe"] > 0.9   # linear info kept
    noise = run("infomec", rng.standard_normal(f.shape).astype(np.float32), tiny, **p)
    assert noise["infoe"] < 0.05
    scaled = run("infomec", np.concatenate([(f + eps)[:, ::-1] * np.float32(30), dead], axis=1), tiny, **p)
    for key in ("infom", "infoc", "infoe"):
        assert scaled[key] == pytest.approx(ideal[key], abs=0.02)
    # a tiny-range latent is pruned like a dead one (range below 1/20 of the largest)
    small = run("infomec", np.concatenate([f + eps, 1e-3 * rng.standard_normal(f.shape).astype(np.float32)],
                                          axis=1), tiny, **p)
    assert small["num_active_latents"] == 5.0
    collapsed = run("infomec", np.zeros((tiny.num_images, 4), np.float32), tiny, **p)
    assert finite(collapsed) and collapsed["infom"] == collapsed["infoc"] == 0.0
    assert abs(collapsed["infoe"]) < 1e-6


# ------------------------------------------------------------------ UDR
def test_relative_strength_known_answers():
    assert udr.relative_strength_disentanglement(np.eye(4)) == 1.0
    assert udr.relative_strength_disentanglement(np.ones((2, 2))) == 0.5
    assert udr.relative_strength_disentanglement(np.zeros((0, 3))) == 0.0
    assert udr.relative_strength_disentanglement(np.zeros((3, 3))) == 0.0


def test_udr_same_representation_up_to_permutation_sign_scale(gt):
    rng = np.random.default_rng(2)
    f = normalised_factors(gt)[gt.index_of(gt.sample_classes(1000, rng))].astype(np.float64)
    active, dead_lv = np.full((1000, 5), -4.0), np.zeros((1000, 3))
    base = np.concatenate([f, np.zeros((1000, 3))], axis=1)
    logvar = np.concatenate([active, dead_lv], axis=1)
    perm = [7, 2, 0, 5, 1, 6, 3, 4]
    means = [base, base[:, perm] * np.array([-2, 1, 3, 1, -1, 1, 5, 1.0]),
             base + 0.01 * rng.standard_normal(base.shape)]
    kls = [udr.mean_kl_per_dim(base, logvar), udr.mean_kl_per_dim(base, logvar)[perm],
           udr.mean_kl_per_dim(base, logvar)]
    out = udr.udr_scores(means, kls, np.random.default_rng(0))
    assert all(o["num_active_dims"] == 5 and o["num_models"] == 3 for o in out)
    for o in out:
        # spurious correlations of independent factors (~0.03 each at n = 1000) enter the sums
        assert o["udr_spearman"] > 0.8
        assert o["udr_lasso"] > 0.8               # Lasso shrinks each coefficient by ~alpha
    # independent random codes share nothing: a much lower score
    others = [rng.standard_normal((1000, 5)) for _ in range(3)]
    low = udr.udr_scores(others, [np.ones(5)] * 3, np.random.default_rng(0))
    assert all(o["udr_spearman"] < 0.3 and o["udr_lasso"] < 0.3 for o in low)
    # a model with no active dimension: 0, not NaN
    none = udr.udr_scores([base, base], [np.zeros(8), kls[0]], np.random.default_rng(0))
    assert none[0]["udr_lasso"] == 0.0 and none[1]["udr_spearman"] == 0.0
    with pytest.raises(UserError, match="at least 2 models"):
        udr.udr_scores([base], [kls[0]], np.random.default_rng(0))


# ------------------------------------------------------------------ agreement with the references' formulas
def test_unsupervised_and_explicitness_equal_the_reference_formulas_on_regular_codes(tiny, gt, codes):
    """Where no reference bug is triggered (no constant dimension, every class in both
    splits), the scores equal the references' formulas computed directly on the same
    samples: dlib's Gaussian TC / Wasserstein and its MultiLabelBinarizer + macro ROC-AUC."""
    import scipy.linalg
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import MultiLabelBinarizer
    from disentangle.evaluation.metrics.utils import sample_points
    x = codes["rotated"][:, :5] + 0.3 * codes["noise"][:, :5]
    got = run("unsupervised", x, gt, num_train=3000)
    z, _ = sample_points(x, gt, 3000, np.random.default_rng(0))
    cov = np.cov(z.T)
    tc = 0.5 * (np.sum(np.log(np.diag(cov))) - np.linalg.slogdet(cov)[1])
    w = 2 * np.trace(cov) - 2 * np.trace(scipy.linalg.sqrtm(cov * np.expand_dims(np.diag(cov), axis=1)))
    assert got["gaussian_total_correlation"] == pytest.approx(tc, rel=1e-9)
    assert got["gaussian_wasserstein_correlation"] == pytest.approx(float(np.real(w)), rel=1e-7)

    f = normalised_factors(tiny)
    y = f @ rotation() + 0.5 * np.random.default_rng(1).standard_normal(f.shape).astype(np.float32)
    got = run("modularity_explicitness", y, tiny, num_train=1200, num_test=800)
    rng = np.random.default_rng(0)
    x_train, c_train = sample_points(y, tiny, 1200, rng)
    x_test, c_test = sample_points(y, tiny, 800, rng)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    aucs = []
    for k in range(tiny.num_factors):
        rng.integers(0, 2**31 - 1)                       # the classifier seed the metric draws
        clf = LogisticRegression().fit((x_train - mean) / std, c_train[:, k])
        labels = MultiLabelBinarizer().fit_transform(np.expand_dims(c_test[:, k], 1))
        aucs.append(roc_auc_score(labels, clf.predict_proba((x_test - mean) / std)))
    assert got["explicitness_score_test"] == pytest.approx(np.mean(aucs), abs=1e-12)


def test_udr_spearman_matrix_equals_scipy_pairwise():
    from scipy.stats import spearmanr
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 3))
    b = np.stack([a[:, 1] ** 3, rng.standard_normal(200), np.round(a[:, 0], 1)], axis=1)
    expected = np.array([[abs(spearmanr(a[:, i], b[:, j])[0]) for j in range(3)] for i in range(3)])
    assert np.allclose(udr.spearman_matrix(a, b), expected, atol=1e-12)
    assert np.all(udr.spearman_matrix(a, np.zeros((200, 2))) == 0.0)      # scipy: NaN
