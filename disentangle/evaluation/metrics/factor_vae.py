"""FactorVAE score (Kim & Mnih 2018), as disentanglement_lib's ``factor_vae_score``."""
from __future__ import annotations

import numpy as np

from disentangle.errors import UserError
from disentangle.evaluation.metrics.utils import (check_codes, check_positive_ints, gather,
                                                  index_of_columns, require_int, require_number,
                                                  sample_factor_columns, sample_points)

DEFAULTS = {"batch_size": 64, "num_train": 10_000, "num_eval": 5_000,
            "num_variance_estimate": 10_000, "prune_threshold": 0.05}


def check_params(params: dict) -> None:
    """Every parameter's value (ParameterError naming ``factor_vae.KEY``); the variances use
    ddof = 1, so batch_size and num_variance_estimate need 2 points."""
    require_int("factor_vae", params, "batch_size", low=2)
    require_int("factor_vae", params, "num_train")
    require_int("factor_vae", params, "num_eval")
    require_int("factor_vae", params, "num_variance_estimate", low=2)
    require_number("factor_vae", params, "prune_threshold", low=0.0)


def _votes(codes, ground_truth, num_votes: int, batch_size: int, rng: np.random.Generator,
           global_var: np.ndarray, active: np.ndarray):
    """``num_votes`` votes (factor k, code dimension d), as two (n,) int arrays.

    One vote: pick factor k uniformly; sample ``batch_size`` factor vectors and give every
    row the class of factor k of the first row; per-dimension variance (ddof = 1) of their
    codes divided by the global variance; d = argmin over the active dimensions (first on
    ties). All draws of a set are made at once (factor choices, then every batch): the
    distribution of dlib's loop, a different stream order.
    """
    factors = ground_truth.num_factors
    labels = rng.integers(0, factors, size=num_votes)
    # factor-major draws of ground_truth.sample_classes(num_votes * batch_size, rng)
    columns = sample_factor_columns(ground_truth, num_votes * batch_size, rng)
    columns = columns.reshape(factors, num_votes, batch_size)
    rows = np.arange(num_votes)
    columns[labels, rows, :] = columns[labels, rows, 0][:, None]
    z = gather(codes, index_of_columns(ground_truth, columns, rng), dtype=None)   # (n, B, D)
    ratio = z.var(axis=1, ddof=1, dtype=np.float64)[:, active] / global_var[active]
    dims = np.flatnonzero(active)[np.argmin(ratio, axis=1)]
    return labels, dims


def factor_vae_score(codes, ground_truth, rng: np.random.Generator, *, batch_size: int = 64,
                     num_train: int = 10_000, num_eval: int = 5_000,
                     num_variance_estimate: int = 10_000,
                     prune_threshold: float = 0.05) -> dict[str, float]:
    """FactorVAE score: accuracy of a majority-vote classifier that maps each code
    dimension to the factor whose fixing most often makes that dimension the least
    variable (variance normalised by its global variance).

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``.
    Global variance: ddof = 1 on ``num_variance_estimate`` points drawn uniformly with
    replacement (dlib; disent draws without). A dimension is active iff its global std is
    ``>= prune_threshold`` (absolute, code units: it assumes codes on the N(0, I) prior
    scale, as dlib does). Classifier: each dimension -> the factor with most training
    votes (ties -> lowest factor index; a dimension without votes -> factor 0, as dlib).
    Train accuracy = sum of column maxima / votes; eval accuracy on ``num_eval`` fresh
    votes.

    Returns ``train_accuracy``, ``eval_accuracy`` (headline), ``num_active_dims`` and
    ``all_dims_pruned`` (1.0 when no dimension is active, else 0.0).

    Deviations from dlib (reference bugs fixed):
    - ``num_active_dims`` is the number of active dimensions; dlib and disent report the
      length of the mask, i.e. always D.
    - A dimension with zero global variance is never active, whatever the threshold, so
      ``prune_threshold=0`` (disent's setting) cannot produce 0/0 = NaN ratios whose
      argmin would capture nearly every vote.
    - Votes name absolute dimension indices (dlib stores the index within the active
      subset; that only relabels columns and does not change accuracy).
    - If no dimension is active, returns zeros with ``num_active_dims = 0`` and
      ``all_dims_pruned = 1`` without drawing votes (dlib returns the zeros silently).
    """
    check_positive_ints(batch_size=batch_size, num_train=num_train, num_eval=num_eval,
                        num_variance_estimate=num_variance_estimate)
    if batch_size < 2 or num_variance_estimate < 2:
        raise UserError("factor_vae: batch_size and num_variance_estimate must be >= 2 "
                        "(variances use ddof=1)")
    if not np.isfinite(prune_threshold) or prune_threshold < 0:
        raise UserError(f"factor_vae: prune_threshold must be >= 0, got {prune_threshold!r}")
    dims = check_codes(codes, ground_truth)
    sample, _ = sample_points(codes, ground_truth, num_variance_estimate, rng)
    global_var = sample.var(axis=0, ddof=1)
    active = (global_var > 0) & (np.sqrt(global_var) >= prune_threshold)
    num_active = int(active.sum())
    if num_active == 0:
        return {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0.0,
                "all_dims_pruned": 1.0}
    factors = ground_truth.num_factors
    train_k, train_d = _votes(codes, ground_truth, num_train, batch_size, rng, global_var, active)
    counts = np.zeros((factors, dims), dtype=np.int64)
    np.add.at(counts, (train_k, train_d), 1)
    classifier = np.argmax(counts, axis=0)          # argmax: ties -> lowest factor index
    train_accuracy = float(counts.max(axis=0).sum() / num_train)
    eval_k, eval_d = _votes(codes, ground_truth, num_eval, batch_size, rng, global_var, active)
    eval_accuracy = float(np.mean(classifier[eval_d] == eval_k))
    return {"train_accuracy": train_accuracy, "eval_accuracy": eval_accuracy,
            "num_active_dims": float(num_active), "all_dims_pruned": 0.0}
