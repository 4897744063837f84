"""InfoMEC: InfoM (modularity), InfoC (compactness) and InfoE (explicitness) of Hsu et
al. 2023 ("Disentanglement via Latent Quantization"), as the authors' reference
kylehkhsu/latent_quantization (disentangle/metrics/infomec.py) computes them for
continuous latents."""
from __future__ import annotations

import numpy as np

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics.utils import check_codes, random_state_int, sample_points

NAME = "infomec"
DEFAULTS = {"num_train": 10_000, "batch_size": 16, "n_neighbors": 10, "prune_fraction": 0.05}
HEADLINE = ("infom", "infoc", "infoe")
LABELS = {"infom": "InfoM", "infoc": "InfoC", "infoe": "InfoE",
          "num_active_latents": "Active latents (InfoMEC)"}
NEEDS = "factors"


def check_params(params) -> None:
    """ParameterError naming ``infomec.<param>`` for a bad value."""
    for key in ("num_train", "n_neighbors"):
        value = params.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{NAME}.{key}", "must be a positive integer", value=repr(value))
    frac = params.get("prune_fraction", DEFAULTS["prune_fraction"])
    if isinstance(frac, bool) or not isinstance(frac, (int, float, np.floating)) or not 0.0 <= frac < 1.0:
        raise ParameterError(f"{NAME}.prune_fraction", "must be a number in [0, 1)", value=repr(frac))


def check_data(params: dict, summary) -> None:
    """With the dataset in hand: a factor with two values in the draw, and more points
    than the largest factor has values, so every factor has a value drawn twice (sklearn's
    kNN estimator of I(z; factor) needs two points of one class)."""
    from disentangle.evaluation.metrics.utils import require_factor_sample
    require_factor_sample(NAME, params, summary)
    largest = max(summary.factor_sizes, default=0)
    if summary.ground_truth is not None and params["num_train"] <= largest:
        raise ParameterError(f"{NAME}.num_train", f"more than the largest factor's {largest} values (a kNN "
                             f"estimate needs a value drawn twice)", value=repr(params["num_train"]))


def _standardise(z: np.ndarray) -> np.ndarray:
    """sklearn's StandardScaler: a constant column's scale is 1 (it becomes 0)."""
    std = z.std(axis=0)
    return (z - z.mean(axis=0)) / np.where(std > 0, std, 1.0)


def normalised_mi(classes: np.ndarray, z: np.ndarray, n_neighbors: int, seed: int) -> np.ndarray:
    """(K, D) NMI: I(s_k; z_j) / H(s_k), I by sklearn's kNN estimator
    ``mutual_info_classif(n_neighbors=10)`` on each standardised latent alone, H plug-in
    (the reference's compute_nmi). A constant latent has no neighbours structure: its MI
    is 0 (the estimator would only see its jitter)."""
    from sklearn.feature_selection import mutual_info_classif
    from disentangle.evaluation.metrics.utils import entropy_discrete
    zs = _standardise(z)
    live = z.std(axis=0) > 0
    nmi = np.zeros((classes.shape[1], z.shape[1]))
    for k in range(classes.shape[1]):
        entropy = entropy_discrete(classes[:, k])
        for j in np.flatnonzero(live):
            mi = mutual_info_classif(zs[:, j:j + 1], classes[:, k], discrete_features=False,
                                     n_neighbors=n_neighbors, random_state=seed)[0]
            nmi[k, j] = mi / entropy
    return nmi


def _concentration(nmi: np.ndarray, axis: int, count: int) -> float:
    """mean over the other axis of (max / sum along ``axis`` − 1/count) / (1 − 1/count);
    an all-zero row counts as spread evenly (0 after normalising), count = 1 as 1."""
    if count < 2:
        return 1.0
    total = nmi.sum(axis=axis)
    ratio = np.where(total > 0, nmi.max(axis=axis) / np.where(total > 0, total, 1.0), 1.0 / count)
    return float((np.mean(ratio) - 1.0 / count) / (1.0 - 1.0 / count))


def predictive_information(x: np.ndarray, y: np.ndarray) -> float:
    """(H_null − CE) / H_null for one factor: CE = training log-loss of an unpenalised,
    class-balanced multinomial LogisticRegression (lbfgs, 100 iterations) of the factor
    on ``x``; H_null = the same fitted on zeros (the reference's logistic_regression)."""
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    def cross_entropy(features):
        model = LogisticRegression(C=np.inf, tol=1e-4, fit_intercept=True, class_weight="balanced",
                                   solver="lbfgs", max_iter=100)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)   # 100 iterations, as the reference
            model.fit(features, y)
        return log_loss(y, model.predict_proba(features), labels=model.classes_)

    null = cross_entropy(np.zeros_like(x))
    return float((null - cross_entropy(x)) / null) if null > 0 else 0.0


def infomec_score(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
                  batch_size: int = 16, n_neighbors: int = 10,
                  prune_fraction: float = 0.05) -> dict[str, float]:
    """InfoM / InfoC / InfoE on ``num_train`` sampled points.

    NMI (K, D) by :func:`normalised_mi`. Pruning: a latent is active if its range (max −
    min over the sample) exceeds ``prune_fraction`` (the reference's 1/20) of the largest
    range. Over the D' active latents: ``infom`` = (mean_j max_k NMI / Σ_k NMI − 1/K) /
    (1 − 1/K); ``infoc`` = (mean_k max_j NMI / Σ_j NMI − 1/D') / (1 − 1/D'). ``infoe`` =
    mean over factors of :func:`predictive_information` from all standardised latents
    (unpruned, as the reference).

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``
    (``batch_size``: sampling granularity only). Also returns ``num_active_latents``.

    Deviations from the reference (which gives NaN or divides by zero): an active latent
    with zero NMI for every factor, or a factor with zero NMI for every active latent,
    counts as evenly spread (contributes 0); D' = 1 gives infoc 1 (trivially compact);
    no active latent (a collapsed code) gives infom = infoc = 0; a factor with one value
    in the sample (entropy 0) is dropped and counted. A constant latent's MI is 0 instead
    of the kNN estimate of sklearn's added jitter. ``penalty=None`` is spelled ``C=inf``
    (same model; newer sklearn deprecates the former); ``n_jobs`` and ``multi_class`` are
    left out (no effect on the result with lbfgs in current sklearn).
    """
    del batch_size
    check_params({"num_train": num_train, "n_neighbors": n_neighbors, "prune_fraction": prune_fraction})
    check_codes(codes, ground_truth)
    z, classes = sample_points(codes, ground_truth, num_train, rng)
    seed = random_state_int(rng)
    keep = [k for k in range(classes.shape[1]) if np.unique(classes[:, k]).size > 1]
    if not keep:
        raise UserError(f"{NAME}: every factor took a single value in the sample; nothing to score")
    classes = classes[:, keep]
    ranges = z.max(axis=0) - z.min(axis=0)
    active = (ranges > prune_fraction * ranges.max()) & (ranges > 0)
    result = {"num_active_latents": float(active.sum()),
              "num_factors_dropped": float(ground_truth.num_factors - len(keep))}
    if active.any():
        nmi = normalised_mi(classes, z[:, active], n_neighbors, seed)
        result["infom"] = _concentration(nmi, axis=0, count=len(keep))
        result["infoc"] = _concentration(nmi, axis=1, count=int(active.sum()))
    else:
        result["infom"] = result["infoc"] = 0.0
    zs = _standardise(z)
    result["infoe"] = float(np.mean([predictive_information(zs, classes[:, k])
                                     for k in range(classes.shape[1])]))
    return result
