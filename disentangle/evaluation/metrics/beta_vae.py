"""β-VAE metric (Higgins et al. 2017), as disentanglement_lib's ``beta_vae_sklearn``."""
from __future__ import annotations

import warnings

import numpy as np

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics.utils import (DataSummary, check_codes, check_positive_ints, gather,
                                                  index_of_columns, random_state_int, require_int,
                                                  sample_factor_columns)

DEFAULTS = {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000}


def check_params(params: dict) -> None:
    """Every parameter's value (ParameterError naming ``beta_vae.KEY``)."""
    for key in ("batch_size", "num_train", "num_eval"):
        require_int("beta_vae", params, key)


# a draw of at most this many labels is replayed (more: a single label has probability
# K**(1 - n) <= 2**-64)
_REPLAY_LABELS = 65


def check_data(params: dict, summary: DataSummary) -> None:
    """With the dataset in hand: two factors to tell apart, and num_train's labels (the
    first draw of the metric's Generator, replayed when few) holding two factors."""
    factors = len(summary.factor_sizes)
    if summary.ground_truth is not None and factors < 2:
        raise UserError(f"beta_vae needs at least 2 factors (it predicts which one was held fixed); "
                        f"{summary.label} has {factors} ({summary.sizes_text()})")
    n = params["num_train"]
    if n < 2:
        raise ParameterError("beta_vae.num_train", "at least 2 points (the classifier needs two held-fixed "
                             "factors to tell apart)", value=repr(n))
    if summary.ground_truth is not None and n <= _REPLAY_LABELS:
        labels = np.random.default_rng(summary.seed).integers(0, factors, size=n)
        if np.unique(labels).size < 2:
            raise ParameterError("beta_vae.num_train", f"with seed {summary.seed} all {n} points hold factor "
                                 f"{summary.factor_names[labels[0]]} fixed: the classifier needs two; use more "
                                 f"points", value=repr(n))


def _points(codes, ground_truth, num_points: int, batch_size: int, rng: np.random.Generator):
    """``num_points`` training points: features (n, D) and labels (n,).

    One point: pick factor k uniformly; draw two independent batches of ``batch_size``
    factor vectors; copy factor k of batch 1 into batch 2 row by row; feature = mean over
    the batch of |z1 - z2| (raw code units); label = k.
    All draws are made in one go (the factor choices, then every batch pair) rather than
    point by point: the same distribution as dlib's loop, a different stream order.
    """
    factors = ground_truth.num_factors
    labels = rng.integers(0, factors, size=num_points)
    # factor-major draws of ground_truth.sample_classes(num_points * 2 * batch_size, rng)
    columns = sample_factor_columns(ground_truth, num_points * 2 * batch_size, rng)
    columns = columns.reshape(factors, num_points, 2, batch_size)
    rows = np.arange(num_points)
    columns[labels, rows, 1, :] = columns[labels, rows, 0, :]
    z = gather(codes, index_of_columns(ground_truth, columns, rng), dtype=None)   # (n, 2, B, D)
    features = np.abs(z[:, 0] - z[:, 1]).mean(axis=1, dtype=np.float64)
    return features, labels


def beta_vae_score(codes, ground_truth, rng: np.random.Generator, *, batch_size: int = 64,
                   num_train: int = 10_000, num_eval: int = 5_000) -> dict[str, float]:
    """β-VAE metric: accuracy of a linear classifier predicting which factor was held
    fixed from the mean absolute code difference of ``batch_size`` pairs.

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``.
    Classifier: ``sklearn.linear_model.LogisticRegression`` with the installed sklearn's
    defaults (lbfgs, multinomial, C = 1, max_iter = 100 since sklearn 0.22) and
    ``random_state`` drawn from ``rng`` after the training points (where dlib passes its
    RandomState). Features are not standardised, as in dlib. The solver's convergence
    warnings are silenced (dlib shows them; they do not change the result). The solver and
    sklearn version are recorded by :meth:`MetricSpec.record_params`.

    Returns ``train_accuracy`` and ``eval_accuracy`` (headline). Chance = 1/K.
    Deviation from dlib: none in the algorithm; the random stream differs (numpy
    Generator, all draws of a set at once), so scores agree within sampling noise.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    check_positive_ints(batch_size=batch_size, num_train=num_train, num_eval=num_eval)
    check_codes(codes, ground_truth)
    train_x, train_y = _points(codes, ground_truth, num_train, batch_size, rng)
    if np.unique(train_y).size < 2:
        raise UserError(f"beta_vae: num_train={num_train} drew a single factor; use more points")
    model = LogisticRegression(random_state=random_state_int(rng))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(train_x, train_y)
    train_accuracy = float(np.mean(model.predict(train_x) == train_y))
    eval_x, eval_y = _points(codes, ground_truth, num_eval, batch_size, rng)
    eval_accuracy = float(np.mean(model.predict(eval_x) == eval_y))
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy}
