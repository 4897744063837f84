"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib computes
them (evaluation/metrics/modularity_explicitness.py with the unsupervised_study_v1
metric configs; PROTOCOLS.md section 6)."""
from __future__ import annotations

import numpy as np

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics.utils import (check_codes, histogram_discretize, mutual_info_matrix,
                                                  sample_points)

NAME = "modularity_explicitness"
DEFAULTS = {"num_train": 10_000, "num_test": 5_000, "batch_size": 16, "num_bins": 20}
HEADLINE = ("modularity_score", "explicitness_score_test")
LABELS = {"modularity_score": "Modularity", "explicitness_score_train": "Explicitness (train)",
          "explicitness_score_test": "Explicitness"}
NEEDS = "factors"      # codes + ground-truth factors


def check_params(params) -> None:
    """ParameterError naming ``modularity_explicitness.<param>`` for a bad value."""
    for key in ("num_train", "num_test", "num_bins"):
        value = params.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{NAME}.{key}", "must be a positive integer", value=repr(value))
    if params.get("num_bins", DEFAULTS["num_bins"]) < 2:
        raise ParameterError(f"{NAME}.num_bins", "must be at least 2", value=repr(params['num_bins']))


def check_data(params: dict, summary) -> None:
    """With the dataset in hand: a factor with two values in the training draw."""
    from disentangle.evaluation.metrics.utils import require_factor_sample
    require_factor_sample(NAME, params, summary)


def modularity(mutual_information: np.ndarray) -> float:
    """dlib's modularity of a (D, K) MI matrix: per code dimension, 1 - (sum m^2 - max m^2)
    / (max m^2 (K - 1)); a dimension whose MI is all 0 scores 0 (and stays in the mean).

    Fixes: dlib computes 0/0 for such a dimension (a NaN warning, then overwritten with
    0); here it is never computed. K = 1: every informative dimension is trivially
    modular (1.0) instead of dividing by K - 1 = 0.
    """
    squared = np.square(np.asarray(mutual_information, dtype=np.float64))
    best = squared.max(axis=1)
    factors = squared.shape[1]
    score = np.zeros(squared.shape[0])
    live = best > 0
    if factors < 2:
        score[live] = 1.0
    else:
        deviation = (squared[live].sum(axis=1) - best[live]) / (best[live] * (factors - 1))
        score[live] = 1.0 - deviation
    return float(np.mean(score))


def _standardise(train: np.ndarray, test: np.ndarray):
    """dlib's normalize_data (training mean / std) with a constant column's std taken as 1
    (the column becomes 0 instead of NaN: dlib divides by 0 and the classifier raises)."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (train - mean) / std, (test - mean) / std


def _roc_auc_one_vs_rest(y: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> float:
    """Macro ROC-AUC of the binarised labels against the class probabilities (dlib:
    MultiLabelBinarizer + roc_auc_score). The binarisation uses the classifier's classes
    (dlib re-fits the binariser on each split, so a test split missing a class shifts its
    columns against predict_proba's); a class with no positive or no negative example in
    the split has no ROC curve and is left out of the mean (dlib: roc_auc_score raises)."""
    from sklearn.metrics import roc_auc_score
    aucs = []
    for c, cls in enumerate(classes):
        truth = (y == cls)
        if truth.all() or not truth.any():
            continue
        aucs.append(roc_auc_score(truth, proba[:, c]))
    return float(np.mean(aucs)) if aucs else 0.5


def modularity_explicitness(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
                            num_test: int = 5_000, batch_size: int = 16,
                            num_bins: int = 20) -> dict[str, float]:
    """Modularity: discretise the training codes (``num_bins`` equal-width bins), (D, K)
    plug-in MI matrix as in MIG, :func:`modularity` (dead / noise dimensions score 0 and
    pull the mean down, as in dlib). Explicitness: standardise the codes with the training
    mean / std; per factor one ``LogisticRegression()`` (installed defaults) on all code
    dimensions; one-vs-rest macro ROC-AUC of its class probabilities on the train and the
    test points; mean over factors.

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``.
    ``num_train`` then ``num_test`` points are drawn uniformly (``batch_size``: dlib's
    sampling granularity only).

    Returns ``modularity_score`` (headline), ``explicitness_score_train``,
    ``explicitness_score_test`` (headline), ``explicitness_<factor>`` (test AUC).

    Deviations from dlib (reference bugs fixed): a constant code dimension (std 0) makes
    dlib's standardisation divide by zero, and LogisticRegression raises on the NaN
    features; here its std is taken as 1 (the feature is constant 0, carries nothing). A
    factor with a single value in the training sample is skipped (no classifier can be
    fitted) and counted in ``num_factors_dropped``. See :func:`modularity` and
    :func:`_roc_auc_one_vs_rest` for the other two fixes. The classifiers get
    ``random_state`` from ``rng`` (lbfgs ignores it; other solvers would not).
    """
    del batch_size
    check_params({"num_train": num_train, "num_test": num_test, "num_bins": num_bins})
    check_codes(codes, ground_truth)
    from sklearn.linear_model import LogisticRegression
    x_train, y_train = sample_points(codes, ground_truth, num_train, rng)
    x_test, y_test = sample_points(codes, ground_truth, num_test, rng)
    result = {"modularity_score": modularity(
        mutual_info_matrix(histogram_discretize(x_train, num_bins), y_train))}
    x_train, x_test = _standardise(x_train, x_test)
    train_auc, test_auc = [], []
    for k, name in enumerate(ground_truth.factor_names):
        seed = int(rng.integers(0, 2**31 - 1))
        if np.unique(y_train[:, k]).size < 2:
            continue
        clf = LogisticRegression(random_state=seed).fit(x_train, y_train[:, k])
        train_auc.append(_roc_auc_one_vs_rest(y_train[:, k], clf.predict_proba(x_train), clf.classes_))
        test_auc.append(_roc_auc_one_vs_rest(y_test[:, k], clf.predict_proba(x_test), clf.classes_))
        result[f"explicitness_{name}"] = test_auc[-1]
    if not test_auc:
        raise UserError(f"{NAME}: every factor took a single value in the sample; nothing to score")
    result["explicitness_score_train"] = float(np.mean(train_auc))
    result["explicitness_score_test"] = float(np.mean(test_auc))
    result["num_factors_dropped"] = float(ground_truth.num_factors - len(test_auc))
    return result
