"""Helpers shared by the metrics: reading codes by index, sampling points, discretising,
plug-in mutual information.

The codes a metric receives are *array-like in dataset index order*. The metrics touch
them only through ``codes.shape`` and ``codes[idx]`` with a 1-D int64 index array, so the
same metric code runs on an in-memory codes table and on a lazy object that renders and
encodes the requested images on the fly (the protocol-encode path). All random draws
depend on the Generator alone, never on code values, so both paths see the same samples.
"""
from __future__ import annotations

import numpy as np

from disentangle.errors import UserError

# Rows fetched per codes[] call: bounds the memory a lazy (render-and-encode) codes object
# needs per call, and costs nothing for an in-memory array.
GATHER_CHUNK = 1 << 16


def code_dim(codes) -> int:
    """Number of code dimensions D of an (N, D) array-like."""
    shape = tuple(codes.shape)
    if len(shape) != 2:
        raise UserError(f"codes must be a 2-D (num_images, dims) array, got shape {shape}")
    return int(shape[1])


def check_codes(codes, ground_truth) -> int:
    """Validate the codes' layout against the ground truth; return D."""
    dims = code_dim(codes)
    if int(codes.shape[0]) != ground_truth.num_images:
        raise UserError(f"codes have {codes.shape[0]} rows but the dataset has "
                        f"{ground_truth.num_images} images (codes must be in dataset index order)")
    if dims < 1:
        raise UserError("codes have no dimensions")
    return dims


def gather(codes, indices) -> np.ndarray:
    """``codes[indices]`` as float64, for any index shape (...,) -> (..., D).

    Fetched in chunks of :data:`GATHER_CHUNK` rows, in the order of ``indices``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    flat = indices.reshape(-1)
    dims = code_dim(codes)
    out = np.empty((flat.size, dims), dtype=np.float64)
    for start in range(0, flat.size, GATHER_CHUNK):
        part = np.ascontiguousarray(flat[start:start + GATHER_CHUNK])
        rows = np.asarray(codes[part])
        if rows.shape != (part.size, dims):
            raise UserError(f"codes[idx] returned shape {rows.shape}, expected {(part.size, dims)}")
        out[start:start + part.size] = rows
    return out.reshape(indices.shape + (dims,))


def sample_points(codes, ground_truth, num_points: int, rng: np.random.Generator):
    """Draw ``num_points`` factor vectors uniformly (with replacement) and look up their
    codes: returns (codes (n, D) float64, classes (n, K) int64).

    dlib draws these in batches of ``batch_size`` (16); the batch size is only the
    granularity of its sampling loop, so one draw of all points has the same distribution.
    """
    classes = ground_truth.sample_classes(int(num_points), rng)
    return gather(codes, ground_truth.index_of(classes)), classes


def histogram_discretize(values: np.ndarray, num_bins: int) -> np.ndarray:
    """dlib's histogram discretiser, per column: (n, D) -> (n, D) int64 in 1..num_bins.

    Equal-width bins spanning each column's observed min..max (numpy.histogram's edges);
    a value gets the index of the last left edge it reaches, so the maximum falls into the
    last bin. A constant column lands in a single bin.
    """
    values = np.asarray(values, dtype=np.float64)
    out = np.empty(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        edges = np.histogram_bin_edges(values[:, j], bins=num_bins)
        out[:, j] = np.digitize(values[:, j], edges[:-1])
    return out


def mutual_info_discrete(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two discrete label vectors; equals
    ``sklearn.metrics.mutual_info_score(a, b)`` (tested)."""
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    na, nb = int(ai.max()) + 1, int(bi.max()) + 1
    joint = np.bincount(ai * nb + bi, minlength=na * nb).reshape(na, nb).astype(np.float64)
    n = joint.sum()
    pa = joint.sum(axis=1, keepdims=True)
    pb = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    mi = np.sum(joint[nz] / n * (np.log(joint[nz] * n) - np.log((pa @ pb)[nz])))
    return float(max(mi, 0.0))


def mutual_info_matrix(discrete_codes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(D, K) matrix of plug-in MI (nats) between each discretised code column and each
    factor's class labels."""
    dims, factors = discrete_codes.shape[1], classes.shape[1]
    mi = np.zeros((dims, factors))
    for j in range(dims):
        for k in range(factors):
            mi[j, k] = mutual_info_discrete(discrete_codes[:, j], classes[:, k])
    return mi


def entropy_discrete(labels: np.ndarray) -> float:
    """Plug-in entropy (nats) of a discrete label vector (= MI of the labels with themselves)."""
    counts = np.unique(labels, return_counts=True)[1].astype(np.float64)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def random_state_int(rng: np.random.Generator) -> int:
    """An int seed for an sklearn estimator, drawn from the metric's Generator."""
    return int(rng.integers(0, 2**31 - 1))


def sklearn_version() -> str:
    """The installed scikit-learn's version, read without importing sklearn."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("scikit-learn")
    except PackageNotFoundError:
        return "not installed"


def check_positive_ints(**params) -> None:
    """Raise UserError unless every given parameter is an int >= 1."""
    for name, value in params.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise UserError(f"metric parameter {name} must be a positive integer, got {value!r}")
