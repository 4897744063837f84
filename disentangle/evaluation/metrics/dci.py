"""DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018), as
disentanglement_lib's ``dci`` computes them, with a fast gradient-boosting backend."""
from __future__ import annotations

import numpy as np

from disentangle.errors import UserError
from disentangle.evaluation.metrics.utils import (check_codes, check_positive_ints,
                                                  random_state_int, sample_points)

BACKENDS = ("lightgbm", "sklearn-gbt")
DEFAULTS = {"num_train": 10_000, "num_test": 5_000, "batch_size": 16, "backend": "lightgbm"}

# Hyper-parameters of the reference, sklearn.ensemble.GradientBoostingClassifier() with all
# defaults, which the fast backend mirrors: 100 stages, learning rate 0.1, depth-3 trees,
# one-sample leaves, no subsampling, no regularisation beyond those.
GBT_STAGES, GBT_LEARNING_RATE, GBT_DEPTH = 100, 0.1, 3


def _fit_sklearn_gbt(x_train, y_train, x_test, seed: int):
    """The reference: GradientBoostingClassifier() and its impurity-based importances."""
    from sklearn.ensemble import GradientBoostingClassifier
    model = GradientBoostingClassifier(random_state=seed)
    model.fit(x_train, y_train)
    return np.abs(model.feature_importances_), model.predict(x_train), model.predict(x_test)


def _fit_lightgbm(x_train, y_train, x_test, seed: int):
    """LightGBM with the reference's boosting settings; importance = total split gain,
    normalised to sum 1 like sklearn's ``feature_importances_``."""
    import lightgbm
    classes, y = np.unique(y_train, return_inverse=True)
    params = dict(n_estimators=GBT_STAGES, learning_rate=GBT_LEARNING_RATE,
                  max_depth=GBT_DEPTH, num_leaves=2 ** GBT_DEPTH, min_child_samples=1,
                  min_child_weight=1e-3, reg_lambda=0.0, reg_alpha=0.0, min_split_gain=0.0,
                  subsample=1.0, colsample_bytree=1.0, importance_type="gain",
                  random_state=seed, deterministic=True, force_row_wise=True, n_jobs=1,
                  verbose=-1)
    if classes.size == 2:
        model = lightgbm.LGBMClassifier(objective="binary", **params)
    else:
        model = lightgbm.LGBMClassifier(objective="multiclass", **params)
    model.fit(x_train, y)
    gain = np.abs(np.asarray(model.booster_.feature_importance(importance_type="gain"),
                             dtype=np.float64))
    total = gain.sum()
    importance = gain / total if total > 0 else gain
    return importance, classes[model.predict(x_train)], classes[model.predict(x_test)]


_FITTERS = {"sklearn-gbt": _fit_sklearn_gbt, "lightgbm": _fit_lightgbm}


def _entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy (base ``base``) of each column of non-negative weights, normalised to sum 1
    per column (scipy.stats.entropy's convention)."""
    p = p / p.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(p > 0, np.log(p), 0.0)
    return -(p * logs).sum(axis=0) / np.log(base)


def disentanglement(importance: np.ndarray) -> float:
    """dlib's disentanglement of a (D, K) importance matrix: per code dimension, 1 - entropy
    (base K) of its importances over factors (1e-11 added), weighted by its share of the
    total importance (uniform if the matrix is all zero)."""
    dims, factors = importance.shape
    if factors < 2:
        return 1.0   # one factor: every dimension is trivially about that factor
    per_code = 1.0 - _entropy(importance.T + 1e-11, base=factors)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def completeness(importance: np.ndarray) -> float:
    """dlib's completeness: per factor, 1 - entropy (base D) of its importances over code
    dimensions (1e-11 added), weighted by the factor's share of the total importance."""
    dims, factors = importance.shape
    if dims < 2:
        return 1.0   # one code dimension captures every factor completely
    per_factor = 1.0 - _entropy(importance + 1e-11, base=dims)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))


def dci_score(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
              num_test: int = 5_000, batch_size: int = 16,
              backend: str = "lightgbm") -> dict[str, float]:
    """DCI: per factor, a gradient-boosted tree classifier predicts the factor's class from
    the raw codes; its feature importances form a (D, K) matrix, from which
    ``disentanglement`` (headline) and ``completeness`` follow (dlib's formulas);
    ``informativeness_train`` / ``informativeness_test`` are the mean classification
    accuracies (dlib's names say "error" but hold accuracy; so do these).

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``.
    ``num_train`` then ``num_test`` points are drawn uniformly (``batch_size`` is dlib's
    sampling granularity only).

    ``backend``:
    - ``"sklearn-gbt"``: the reference, ``sklearn.ensemble.GradientBoostingClassifier()``
      with all defaults and its impurity importances. Minutes per model on dSprites (one
      tree per class per stage: 40 for orientation).
    - ``"lightgbm"`` (default): LightGBM with the same boosting settings (100 stages,
      learning rate 0.1, depth 3, one-sample leaves, no subsampling), histogram splits
      (255 bins) and split-gain importances normalised to sum 1. Much faster; the scores
      track the reference's closely (benchmarks/bench_dci.py measures both on the same
      codes) but are not bit-identical, so record the backend with the scores.

    Deviations from dlib: the classifiers get ``random_state`` drawn from ``rng`` (dlib
    leaves it unset, so its tie-breaking is not reproducible); a factor that takes a
    single value in the training sample (no classifier can be fitted: dlib crashes) is
    dropped and counted in ``num_factors_dropped``; D = 1 or K = 1 give 1.0 for the
    trivially perfect score instead of a 0/0 entropy base.
    """
    check_positive_ints(num_train=num_train, num_test=num_test)
    if backend not in _FITTERS:
        raise UserError(f"dci: unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    dims = check_codes(codes, ground_truth)
    x_train, y_train = sample_points(codes, ground_truth, num_train, rng)
    x_test, y_test = sample_points(codes, ground_truth, num_test, rng)
    fit = _FITTERS[backend]
    columns, train_acc, test_acc = [], [], []
    for k in range(ground_truth.num_factors):
        seed = random_state_int(rng)
        if np.unique(y_train[:, k]).size < 2:
            continue
        importance, pred_train, pred_test = fit(x_train, y_train[:, k], x_test, seed)
        columns.append(importance)
        train_acc.append(np.mean(pred_train == y_train[:, k]))
        test_acc.append(np.mean(pred_test == y_test[:, k]))
    if not columns:
        raise UserError("dci: every factor took a single value in the sample; nothing to score")
    importance = np.stack(columns, axis=1).reshape(dims, len(columns))
    return {"disentanglement": disentanglement(importance),
            "completeness": completeness(importance),
            "informativeness_train": float(np.mean(train_acc)),
            "informativeness_test": float(np.mean(test_acc)),
            "num_factors_scored": float(len(columns)),
            "num_factors_dropped": float(ground_truth.num_factors - len(columns))}
