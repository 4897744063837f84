"""Interventional Robustness Score (Suter et al. 2019), as disentanglement_lib's
evaluation/metrics/irs.py computes it (with its gin defaults)."""
from __future__ import annotations

import numpy as np

from disentangle.errors import ParameterError
from disentangle.evaluation.metrics.utils import (check_codes, histogram_discretize,
                                                  sample_points)

NAME = "irs"
DEFAULTS = {"num_train": 10_000, "batch_size": 16, "diff_quantile": 0.99, "num_bins": 20}
HEADLINE = ("IRS",)
LABELS = {"IRS": "IRS", "num_active_dims": "Active dims (IRS)"}
NEEDS = "factors"


def check_params(params) -> None:
    """ParameterError naming ``irs.<param>`` for a bad value."""
    for key in ("num_train", "num_bins"):
        value = params.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{NAME}.{key}", "must be a positive integer", value=repr(value))
    q = params.get("diff_quantile", DEFAULTS["diff_quantile"])
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating)) or not 0.0 <= q <= 1.0:
        raise ParameterError(f"{NAME}.diff_quantile", "must be a number in [0, 1]", value=repr(q))


def irs_matrix(factors: np.ndarray, latents: np.ndarray, diff_quantile: float):
    """dlib's scalable_disentanglement_score: (D, K) IRS matrix and the per-dimension max
    deviations. For factor k and each of its values v, the ``diff_quantile`` quantile of
    |z − E[z | g_k = v]| over the points with g_k = v, averaged over v; divided by the
    dimension's max |z − E z|; IRS = 1 − that."""
    max_dev = np.max(np.abs(latents - latents.mean(axis=0)), axis=0)          # (D,)
    cum = np.zeros((latents.shape[1], factors.shape[1]))
    for k in range(factors.shape[1]):
        values = np.unique(factors[:, k])
        for v in values:
            group = latents[factors[:, k] == v]
            diffs = np.abs(group - group.mean(axis=0))
            cum[:, k] += np.percentile(diffs, q=diff_quantile * 100, axis=0)
        cum[:, k] /= values.size
    return 1.0 - cum / max_dev[:, None], max_dev


def irs_score(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
              batch_size: int = 16, diff_quantile: float = 0.99,
              num_bins: int = 20) -> dict[str, float]:
    """IRS: sample ``num_train`` points; discretise the factor classes with dlib's
    histogram discretiser (``num_bins`` 20, as dlib's irs gin config: factors with more
    than 20 values are merged into 20 bins); drop constant code dimensions; per remaining
    dimension the best factor's IRS (:func:`irs_matrix`); the headline ``IRS`` is their
    mean weighted by each dimension's max deviation.

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``
    (``batch_size``: dlib's sampling granularity only).

    Returns ``IRS``, ``num_active_dims`` and ``irs_dim<i>`` (per active dimension, by its
    index in the codes).

    Deviation from dlib (reference bug fixed): dlib reports ``num_active_dims`` as
    ``np.sum`` of the active codes' *values*, not their count; here it is the count. As
    in dlib, a code with no active dimension scores 0.
    """
    del batch_size
    check_params({"num_train": num_train, "num_bins": num_bins, "diff_quantile": diff_quantile})
    check_codes(codes, ground_truth)
    z, classes = sample_points(codes, ground_truth, num_train, rng)
    active = z.std(axis=0) > 0
    result: dict[str, float] = {"num_active_dims": float(active.sum())}
    if not active.any():
        result["IRS"] = 0.0
        return result
    matrix, max_dev = irs_matrix(histogram_discretize(classes, num_bins), z[:, active],
                                 float(diff_quantile))
    per_dim = matrix.max(axis=1)
    result["IRS"] = float(np.average(per_dim, weights=max_dev) if max_dev.sum() > 0
                          else np.mean(per_dim))
    for i, score in zip(np.flatnonzero(active), per_dim):
        result[f"irs_dim{int(i)}"] = float(score)
    return result
