"""SAP score (Kumar et al. 2018), as disentanglement_lib's ``sap_score``."""
from __future__ import annotations

import warnings

import numpy as np

from disentangle.errors import UserError
from disentangle.evaluation.metrics.utils import (DataSummary, check_codes, check_positive_ints, require_bool,
                                                  require_int, sample_points)

DEFAULTS = {"num_train": 10_000, "num_test": 5_000, "batch_size": 16,
            "continuous_factors": False}


def check_params(params: dict) -> None:
    """Every parameter's value (ParameterError naming ``sap.KEY``)."""
    for key in ("num_train", "num_test", "batch_size"):
        require_int("sap", params, key)
    require_bool("sap", params, "continuous_factors")


def check_data(params: dict, summary: DataSummary) -> None:
    """With the dataset in hand: two code dimensions and a factor with two values in the draw."""
    from disentangle.evaluation.metrics.utils import require_code_dims, require_factor_sample
    require_code_dims("sap", summary, 2, "the gap between the two best")
    require_factor_sample("sap", params, summary)


def _score_matrix_discrete(z_train, y_train, z_test, y_test) -> np.ndarray:
    """(D, K) test accuracy of LinearSVC(C=0.01, class_weight="balanced") fitted on one
    code dimension to predict one factor."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC
    dims, factors = z_train.shape[1], y_train.shape[1]
    scores = np.zeros((dims, factors))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i in range(dims):
            for j in range(factors):
                model = LinearSVC(C=0.01, class_weight="balanced")
                model.fit(z_train[:, i:i + 1], y_train[:, j])
                scores[i, j] = np.mean(model.predict(z_test[:, i:i + 1]) == y_test[:, j])
    return scores


def _score_matrix_continuous(z_train, y_train) -> np.ndarray:
    """(D, K) squared correlation cov^2 / (var_code var_factor) on the training points;
    0 where the code's or the factor's variance is <= 1e-12."""
    z = z_train - z_train.mean(axis=0)
    y = y_train - y_train.mean(axis=0)
    n = z.shape[0]
    cov = z.T @ y / (n - 1)
    var_z = (z ** 2).sum(axis=0) / (n - 1)
    var_y = (y ** 2).sum(axis=0) / (n - 1)
    denom = np.outer(var_z, var_y)
    ok = (var_z[:, None] > 1e-12) & (var_y[None, :] > 1e-12)
    return np.where(ok, cov ** 2 / np.where(ok, denom, 1.0), 0.0)


def sap_score(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
              num_test: int = 5_000, batch_size: int = 16,
              continuous_factors: bool = False) -> dict[str, float]:
    """SAP: for each (code dimension, factor) a score of how well that single dimension
    predicts the factor; per factor the gap between the best and second-best dimension;
    mean over factors (``sap_score``, headline).

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``;
    D >= 2. ``num_train`` then ``num_test`` points are drawn uniformly (``batch_size`` is
    dlib's sampling granularity only). With ``continuous_factors=False`` (the study
    setting) the score is the test accuracy of
    ``sklearn.svm.LinearSVC(C=0.01, class_weight="balanced")`` (installed sklearn's other
    defaults) fitted on the one dimension; with ``True``, the squared correlation on the
    training points. A 1-D linear classifier cannot separate 32-40 ordered classes, so
    even a perfect code gets a low SAP.

    Deviations from dlib (reference bugs fixed): a factor taking a single value in the
    training sample (LinearSVC cannot be fitted; dlib crashes; in the continuous mode its
    zero variance would divide by zero) is dropped from the mean and counted in
    ``num_factors_dropped``. Constant code dimensions score chance-level accuracy
    (discrete) or 0 (continuous) — never NaN. Convergence warnings of LinearSVC are
    silenced (they do not change the result).
    """
    check_positive_ints(num_train=num_train, num_test=num_test)
    dims = check_codes(codes, ground_truth)
    if dims < 2:
        raise UserError(f"sap needs at least 2 code dimensions (second-best gap), got {dims}")
    z_train, y_train = sample_points(codes, ground_truth, num_train, rng)
    z_test, y_test = sample_points(codes, ground_truth, num_test, rng)
    keep = [k for k in range(ground_truth.num_factors) if np.unique(y_train[:, k]).size > 1]
    if not keep:
        raise UserError("sap: every factor took a single value in the sample; nothing to score")
    if continuous_factors:
        scores = _score_matrix_continuous(z_train, y_train[:, keep].astype(np.float64))
    else:
        scores = _score_matrix_discrete(z_train, y_train[:, keep], z_test, y_test[:, keep])
    top_two = np.sort(scores, axis=0)[::-1][:2]
    return {"sap_score": float(np.mean(top_two[0] - top_two[1])),
            "num_factors_scored": float(len(keep)),
            "num_factors_dropped": float(ground_truth.num_factors - len(keep))}
