"""Mutual Information Gap (Chen et al. 2018), as disentanglement_lib's ``mig`` computes it
(discretised encoder means, plug-in MI)."""
from __future__ import annotations

import numpy as np

from disentangle.errors import UserError
from disentangle.evaluation.metrics.utils import (DataSummary, check_codes, check_positive_ints, entropy_discrete,
                                                  histogram_discretize, mutual_info_matrix,
                                                  require_int, sample_points)

DEFAULTS = {"num_train": 10_000, "batch_size": 16, "num_bins": 20}


def check_params(params: dict) -> None:
    """Every parameter's value (ParameterError naming ``mig.KEY``)."""
    for key in ("num_train", "batch_size", "num_bins"):
        require_int("mig", params, key)


def check_data(params: dict, summary: DataSummary) -> None:
    """With the dataset in hand: two code dimensions and a factor with two values in the draw."""
    from disentangle.evaluation.metrics.utils import require_code_dims, require_factor_sample
    require_code_dims("mig", summary, 2, "the gap between the two most informative")
    require_factor_sample("mig", params, summary)


def mig_score(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
              batch_size: int = 16, num_bins: int = 20) -> dict[str, float]:
    """Discrete MIG: per factor, (largest - second largest) MI between a discretised code
    dimension and the factor, divided by the factor's entropy; mean over factors.

    ``codes``: (N, D) array-like in dataset index order, read only as ``codes[idx]``;
    D >= 2. ``num_train`` points are drawn uniformly; each code dimension is discretised
    into ``num_bins`` equal-width bins over its observed range (dlib's histogram
    discretiser); MI and factor entropies are plug-in estimates in nats (sklearn's
    ``mutual_info_score``). ``batch_size`` is dlib's sampling granularity only; all points
    are drawn at once, which has the same distribution. With 20 bins a perfect code cannot
    reach 1 for a factor with more than 20 values (ceiling log 20 / log n_values).

    Returns ``discrete_mig`` (headline), ``gap_<factor>`` (normalised gap per factor),
    ``num_factors_scored`` and ``num_factors_dropped``.

    Deviations from dlib (reference bugs fixed): a factor whose sampled entropy is 0 (one
    value, e.g. a sub-grid keeping one class, or dSprites' colour if it were a factor)
    would divide by zero; it is dropped from the mean and counted in
    ``num_factors_dropped`` (no ``gap_`` key). A constant code dimension falls in one bin
    and has MI 0 (no NaN).
    """
    del batch_size  # sampling granularity only (see docstring)
    check_positive_ints(num_train=num_train, num_bins=num_bins)
    dims = check_codes(codes, ground_truth)
    if dims < 2:
        raise UserError(f"mig needs at least 2 code dimensions (second-largest MI), got {dims}")
    z, classes = sample_points(codes, ground_truth, num_train, rng)
    mi = mutual_info_matrix(histogram_discretize(z, num_bins), classes)     # (D, K)
    top_two = np.sort(mi, axis=0)[::-1][:2]                                  # (2, K)
    result: dict[str, float] = {}
    gaps = []
    for k, name in enumerate(ground_truth.factor_names):
        entropy = entropy_discrete(classes[:, k])
        if entropy <= 0.0:
            continue
        gap = float((top_two[0, k] - top_two[1, k]) / entropy)
        result[f"gap_{name}"] = gap
        gaps.append(gap)
    if not gaps:
        raise UserError("mig: every factor took a single value in the sample; nothing to score")
    result["discrete_mig"] = float(np.mean(gaps))
    result["num_factors_scored"] = float(len(gaps))
    result["num_factors_dropped"] = float(ground_truth.num_factors - len(gaps))
    return result
