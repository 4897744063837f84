"""Unsupervised Disentanglement Ranking (Duan et al. 2020), as disentanglement_lib's
evaluation/udr/metrics/udr.py computes it (``compute_udr_sklearn``). A study-level score:
each model is compared with the other models (the other seeds of its configuration) on
the same images; :mod:`disentangle.evaluation.study_metrics` runs it over a results tree."""
from __future__ import annotations

import numpy as np

from disentangle.errors import ParameterError, UserError

NAME = "udr"
# dlib's udr gin defaults: 1,000 images (in batches of 10), Lasso alpha 0.1, KL filter 0.01
DEFAULTS = {"num_data_points": 1000, "batch_size": 10, "kl_filter_threshold": 0.01,
            "lasso_alpha": 0.1}
HEADLINE = ("udr_lasso", "udr_spearman")
LABELS = {"udr_lasso": "UDR (Lasso)", "udr_spearman": "UDR (Spearman)",
          "num_active_dims": "Active dims (KL > 0.01)"}
NEEDS = "study"        # several runs of one configuration: codes mean + logvar of each


def check_params(params) -> None:
    """ParameterError naming ``udr.<param>`` for a bad value."""
    for key in ("num_data_points", "batch_size"):
        value = params.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{NAME}.{key}", "must be a positive integer", value=repr(value))
    for key in ("kl_filter_threshold", "lasso_alpha"):
        value = params.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) or value < 0:
            raise ParameterError(f"{NAME}.{key}", "must be a non-negative number", value=repr(value))
    if params.get("lasso_alpha", DEFAULTS["lasso_alpha"]) == 0:
        raise ParameterError(f"{NAME}.lasso_alpha", "must be positive (0 is unpenalised least squares)")


def mean_kl_per_dim(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean over the rows of KL(N(mu, sigma^2) || N(0, 1)) per latent dimension (nats)."""
    mean = np.asarray(mean, dtype=np.float64)
    logvar = np.asarray(logvar, dtype=np.float64)
    return np.mean(0.5 * (np.square(mean) + np.exp(logvar) - logvar - 1.0), axis=0)


def relative_strength_disentanglement(corr: np.ndarray) -> float:
    """dlib's score of a non-negative (D_i, D_j) similarity matrix: per column and per row
    max² / sum (0 where the sum is 0), mean over columns and over rows, averaged.
    Fix: an empty matrix (no active dimension in one model) gives 0 (dlib: NaN)."""
    if corr.size == 0:
        return 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        cols = np.nan_to_num(np.max(corr, axis=0) ** 2 / np.sum(corr, axis=0), nan=0.0)
        rows = np.nan_to_num(np.max(corr, axis=1) ** 2 / np.sum(corr, axis=1), nan=0.0)
    return float((np.mean(cols) + np.mean(rows)) / 2)


def spearman_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Spearman correlation| between every column of ``a`` and of ``b``: (D_a, D_b).
    Fix: a constant column has no rank correlation; dlib gets NaN, here 0."""
    from scipy.stats import rankdata
    ra = rankdata(a, axis=0)
    rb = rankdata(b, axis=0)
    ra = ra - ra.mean(axis=0)
    rb = rb - rb.mean(axis=0)
    norm = np.outer(np.sqrt((ra ** 2).sum(axis=0)), np.sqrt((rb ** 2).sum(axis=0)))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(norm > 0, (ra.T @ rb) / np.where(norm > 0, norm, 1.0), 0.0)
    return np.abs(corr)


def lasso_matrix(a: np.ndarray, b: np.ndarray, alpha: float, seed: int) -> np.ndarray:
    """|coefficients| of ``Lasso(alpha).fit(a, b)`` as (D_a, D_b) (dlib's
    lasso_correlation_matrix)."""
    from sklearn.linear_model import Lasso
    model = Lasso(alpha=alpha, random_state=seed).fit(a, b)
    return np.abs(np.asarray(model.coef_).reshape(b.shape[1], a.shape[1])).T


def udr_scores(means, kls, rng: np.random.Generator, *, kl_filter_threshold: float = 0.01,
               lasso_alpha: float = 0.1) -> list[dict[str, float]]:
    """UDR of each of M >= 2 models from their codes of the *same* images.

    ``means``: M arrays (n, D_m) of encoder means on the same n images; ``kls``: M arrays
    (D_m,) of the mean KL per latent dimension (:func:`mean_kl_per_dim`). Returns one dict
    per model: ``udr_lasso`` (dlib's default variant), ``udr_spearman``, ``num_active_dims``
    (KL > threshold), ``num_models``.

    As dlib: each model's codes are standardised (StandardScaler: a constant dimension
    becomes 0) and dimensions with KL <= 0.01 are zeroed; for every ordered pair (i, j), i
    != j, the (D_i, D_j) similarity matrix (|Lasso coefficients| of predicting j's codes
    from i's, or |Spearman correlations|) restricted to both models' dimensions with KL >
    ``kl_filter_threshold`` is scored by :func:`relative_strength_disentanglement`; model
    i's UDR is the median over j of the score of pair (j, i).

    Fixes: see :func:`relative_strength_disentanglement` and :func:`spearman_matrix`.
    dlib requires equal latent sizes; nothing here does.
    """
    if len(means) != len(kls):
        raise UserError(f"{NAME}: {len(means)} code tables but {len(kls)} KL vectors")
    if len(means) < 2:
        raise UserError(f"{NAME}: needs at least 2 models of one configuration, got {len(means)}")
    n = {np.asarray(m).shape[0] for m in means}
    if len(n) != 1:
        raise UserError(f"{NAME}: the models' codes cover different numbers of images {sorted(n)}")
    reps, masks = [], []
    for mean, kl in zip(means, kls):
        mean = np.asarray(mean, dtype=np.float64)
        kl = np.asarray(kl, dtype=np.float64)
        std = mean.std(axis=0)
        z = (mean - mean.mean(axis=0)) / np.where(std > 0, std, 1.0)
        reps.append(z * (kl > 0.01))          # dlib's fixed 0.01, whatever the filter threshold
        masks.append(kl > kl_filter_threshold)
    models = len(reps)
    pair = {"udr_lasso": np.zeros((models, models)), "udr_spearman": np.zeros((models, models))}
    for i in range(models):
        for j in range(models):
            if i == j:
                continue
            seed = int(rng.integers(0, 2**31 - 1))
            for key, corr in (("udr_lasso", lasso_matrix(reps[i], reps[j], lasso_alpha, seed)),
                              ("udr_spearman", spearman_matrix(reps[i], reps[j]))):
                pair[key][i, j] = relative_strength_disentanglement(corr[masks[i]][:, masks[j]])
    out = []
    for i in range(models):
        others = [j for j in range(models) if j != i]
        out.append({"udr_lasso": float(np.median(pair["udr_lasso"][others, i])),
                    "udr_spearman": float(np.median(pair["udr_spearman"][others, i])),
                    "num_active_dims": float(masks[i].sum()), "num_models": float(models)})
    return out
