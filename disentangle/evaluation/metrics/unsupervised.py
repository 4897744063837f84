"""The unsupervised scores of disentanglement_lib's evaluation/metrics/unsupervised_metrics.py
(PROTOCOLS.md section 7): Gaussian total correlation, Gaussian Wasserstein correlation and
the mean pairwise mutual information of the code dimensions. They use no factors: only the
ground truth's sampling of images; a dataset without factors (CelebA, an image folder)
gets its images drawn uniformly by index instead."""
from __future__ import annotations

import numpy as np

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics.utils import (check_codes, code_dim, gather, histogram_discretize,
                                                  mutual_info_matrix, sample_points)

NAME = "unsupervised"
DEFAULTS = {"num_train": 10_000, "batch_size": 16, "num_bins": 20}
HEADLINE = ("gaussian_total_correlation", "mutual_info_score")
LABELS = {"gaussian_total_correlation": "Gaussian TC (nats)",
          "gaussian_wasserstein_correlation": "Gaussian W. corr.",
          "gaussian_wasserstein_correlation_norm": "Gaussian W. corr. (norm.)",
          "mutual_info_score": "Mean pairwise MI (nats)"}
NEEDS = "codes"        # no factors: any representation in dataset index order


def check_params(params) -> None:
    """ParameterError naming ``unsupervised.<param>`` for a bad value."""
    for key in ("num_train", "num_bins"):
        value = params.get(key, DEFAULTS[key])
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ParameterError(f"{NAME}.{key}", "must be a positive integer", value=repr(value))
    if params.get("num_train", DEFAULTS["num_train"]) < 2:
        raise ParameterError(f"{NAME}.num_train", "must be at least 2 (a covariance)", value=repr(params['num_train']))


def check_data(params: dict, summary) -> None:
    """With the dataset in hand: a covariance of D code dimensions needs D + 1 points and
    D + 1 distinct images; fewer give a singular matrix (an infinite total correlation, or
    a huge finite one from round-off)."""
    dims = summary.code_dim
    if dims is None:
        return
    if params["num_train"] <= dims:
        raise ParameterError(f"{NAME}.num_train", f"more than the {dims} code dimensions (a {dims}-dimensional "
                             f"covariance)", value=repr(params["num_train"]))
    if 1 < summary.num_images <= dims:
        raise UserError(f"{NAME}: {summary.label} has {summary.num_images:,} images, too few for the "
                        f"covariance of {dims} code dimensions (at least {dims + 1})")


def gaussian_total_correlation(cov: np.ndarray) -> float:
    """KL between N(0, C) and the product of its marginals: ½ (Σ log C_ii − log det C).

    Fix: dlib's formula gives −inf − (−inf) = NaN when a dimension is constant (C_ii = 0).
    A constant dimension is independent of every other, so it contributes nothing to the
    total correlation: it is dropped before the formula."""
    live = np.diag(cov) > 0
    if live.sum() < 2:
        return 0.0
    sub = cov[np.ix_(live, live)]
    sign, logdet = np.linalg.slogdet(sub)
    if sign <= 0:               # exactly collinear dimensions: TC is infinite
        raise UserError(f"{NAME}: the covariance of the non-constant code dimensions is singular "
                        "(exactly duplicated or collinear dimensions): the Gaussian total "
                        "correlation is infinite")
    return float(max(0.0, 0.5 * (np.sum(np.log(np.diag(sub))) - logdet)))


def gaussian_wasserstein_correlation(cov: np.ndarray) -> float:
    """dlib's 2 tr C − 2 tr sqrtm(C with row i scaled by C_ii): the squared 2-Wasserstein
    distance between N(0, C) and N(0, diag C) in the form dlib writes it. sqrtm of the
    (positive semi-definite, similar to a symmetric) product is real in exact arithmetic;
    its round-off imaginary part is dropped (dlib keeps a complex number). A constant
    dimension's row and column are 0 and add 0 to both traces; it is dropped before sqrtm,
    which warns and loses accuracy on the singular matrix it would make (dlib)."""
    import scipy.linalg
    live = np.diag(cov) > 0
    if not live.any():
        return 0.0
    sub = cov[np.ix_(live, live)]
    root = scipy.linalg.sqrtm(sub * np.diag(sub)[:, None])
    return float(max(0.0, 2.0 * np.trace(sub) - 2.0 * np.real(np.trace(root))))


def unsupervised_scores(codes, ground_truth, rng: np.random.Generator, *, num_train: int = 10_000,
                        batch_size: int = 16, num_bins: int = 20) -> dict[str, float]:
    """Sample ``num_train`` codes; C = their covariance (ddof 1).

    Returns ``gaussian_total_correlation`` (nats), ``gaussian_wasserstein_correlation``,
    ``gaussian_wasserstein_correlation_norm`` (divided by tr C), and ``mutual_info_score``:
    mean of the off-diagonal entries of the (D, D) plug-in MI matrix (nats) of the codes
    discretised into ``num_bins`` equal-width bins (dlib's histogram discretiser).

    ``ground_truth`` serves only to sample images uniformly (``batch_size``: dlib's
    sampling granularity only); ``codes`` are read only as ``codes[idx]``. Without ground
    truth (None: a dataset without factors) the ``num_train`` images are drawn uniformly
    with replacement by index — the distribution dlib's uniform factor draw gives on a
    grid (every image once), from another stream of ``rng``.

    Deviations from dlib (reference bugs fixed): a constant code dimension made the total
    correlation NaN (see :func:`gaussian_total_correlation`) and, if every dimension is
    constant, the normalised Wasserstein correlation 0/0; that case gives 0. D = 1 gives
    mutual_info_score 0 (dlib divides 0 by D² − D = 0).
    """
    del batch_size
    check_params({"num_train": num_train, "num_bins": num_bins})
    if ground_truth is None:
        dims = code_dim(codes)
        if dims < 1 or int(codes.shape[0]) < 1:
            raise UserError(f"codes have shape {tuple(codes.shape)}: no rows or no dimensions")
        z = gather(codes, rng.integers(0, int(codes.shape[0]), size=int(num_train)))
    else:
        dims = check_codes(codes, ground_truth)
        z, _ = sample_points(codes, ground_truth, num_train, rng)
    cov = np.atleast_2d(np.cov(z, rowvar=False))
    wasserstein = gaussian_wasserstein_correlation(cov)
    trace = float(np.trace(cov))
    discrete = histogram_discretize(z, num_bins)
    mi = mutual_info_matrix(discrete, discrete)
    np.fill_diagonal(mi, 0.0)
    return {"gaussian_total_correlation": gaussian_total_correlation(cov),
            "gaussian_wasserstein_correlation": wasserstein,
            "gaussian_wasserstein_correlation_norm": wasserstein / trace if trace > 0 else 0.0,
            "mutual_info_score": float(mi.sum() / (dims * dims - dims)) if dims > 1 else 0.0}
