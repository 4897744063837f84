"""DCI-ES probe targets (issue 23): the reference's mixed probes (ordered factors
regressed, categorical ones classified) against the classification-only option, with
known answers computed from the definition for a code that is the factors themselves."""
from __future__ import annotations

import numpy as np
import pytest

from disentangle.data.ground_truth import GroundTruth
from disentangle.errors import UserError
from disentangle.evaluation.metrics import dci_es, get_metric


def _blocks(n: int, depth: int) -> list[int]:
    # a regression tree on n equally likely ordered values splits each block at its middle
    return [n] if depth == 0 or n <= 1 else _blocks(n // 2, depth - 1) + _blocks(n - n // 2, depth - 1)


def regression_loss(k: int, depth: int) -> float:
    """1 − R² of a depth-``depth`` tree predicting a uniform factor of ``k`` ordered values
    from itself: within-block variance over total variance (block of m values: (m²−1)/12)."""
    return sum(m * (m * m - 1) for m in _blocks(k, depth)) / (k * (k * k - 1))


def classification_loss(k: int, depth: int) -> float:
    """1 − accuracy at best: 2^depth leaves name at most 2^depth of the k classes."""
    return 1 - min(2 ** depth, k) / k


def predicted(k: int, kind: str) -> float:
    depths = dci_es.DEPTHS
    if kind == "regression":
        return dci_es.explicitness(depths, [regression_loss(k, d) for d in depths], 1.0)
    return dci_es.explicitness(depths, [classification_loss(k, d) for d in depths], 1 - 1 / k)


@pytest.fixture(scope="module")
def grid():
    # dSprites' factor sizes but one position: 3 × 6 × 40 × 32 = 23,040 points
    return GroundTruth(("shape", "scale", "orientation", "pos_x"),
                       (np.arange(3.0), np.arange(6.0), np.arange(40.0), np.arange(32.0)))


@pytest.fixture(scope="module")
def scores(grid):
    classes = grid.all_classes().astype(np.float32)
    noise = 0.01 * np.random.default_rng(0).standard_normal(classes.shape, dtype=np.float32)
    code = np.concatenate([classes + noise, np.zeros_like(classes)], axis=1)   # + 4 dead dimensions
    p = dict(num_train=3000, num_test=1500, num_trees=10)
    return {t: get_metric("dci_es")(code, grid, np.random.default_rng(0), targets=t, **p)
            for t in ("mixed", "classification")}


def test_the_default_follows_the_reference_probes():
    assert dci_es.DEFAULTS["targets"] == "mixed"
    assert dci_es.categorical_factors(GroundTruth.dsprites()) == ("shape",)


def test_mixed_probes_match_the_definition_on_the_factor_code(scores):
    mixed = scores["mixed"]
    assert mixed["num_factors_regressed"] == 3.0
    # regressed (ordered) factors: the median-split loss curve, E ≈ 0.993–0.995
    for name, k in (("scale", 6), ("orientation", 40), ("pos_x", 32)):
        assert mixed[f"explicitness_{name}"] == pytest.approx(predicted(k, "regression"), abs=0.004)
    # shape is categorical in both modes: the same classifier, the same number
    assert mixed["explicitness_shape"] == pytest.approx(predicted(3, "classification"), abs=0.004)
    assert scores["classification"]["explicitness_shape"] == mixed["explicitness_shape"]


def test_classification_is_bounded_by_leaves_per_class(scores):
    cls = scores["classification"]
    assert cls["num_factors_regressed"] == 0.0
    for name, k in (("scale", 6), ("orientation", 40), ("pos_x", 32)):
        bound = predicted(k, "classification")
        # a tree of depth d names at most 2^d classes: E at most the bound, far below regression's
        assert cls[f"explicitness_{name}"] <= bound + 0.005
        assert cls[f"explicitness_{name}"] < scores["mixed"][f"explicitness_{name}"] - 0.05
    assert scores["mixed"]["explicitness"] - cls["explicitness"] > 0.15


def test_noise_scores_about_zero_in_both_modes():
    gt = GroundTruth(("shape", "pos_x"), (np.arange(3.0), np.arange(32.0)))
    # a noise code that is no function of the factors: fresh noise per drawn point
    rng = np.random.default_rng(1)

    class FreshNoise:
        shape = (gt.num_images, 4)

        def __getitem__(self, idx):
            return rng.standard_normal((len(np.atleast_1d(idx)), 4)).astype(np.float32)
    for targets in ("mixed", "classification"):
        s = get_metric("dci_es")(FreshNoise(), gt, np.random.default_rng(0), targets=targets,
                                 num_train=800, num_test=400, num_trees=10)
        assert abs(s["explicitness"]) < 0.06


def test_targets_is_checked():
    with pytest.raises(UserError, match=r"dci_es\.targets"):
        get_metric("dci_es").params({"targets": "regression-only"})
