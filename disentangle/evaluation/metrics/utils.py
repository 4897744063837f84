"""Helpers shared by the metrics: reading codes by index, sampling points, discretising,
plug-in mutual information.

The codes a metric receives are *array-like in dataset index order*. The metrics touch
them only through ``codes.shape`` and ``codes[idx]`` with a 1-D int64 index array, so the
same metric code runs on an in-memory codes table and on a lazy object that renders and
encodes the requested images on the fly (the protocol-encode path). All random draws
depend on the Generator alone, never on code values, so both paths see the same samples.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from disentangle.errors import ParameterError, UserError

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


def gather(codes, indices, dtype=np.float64) -> np.ndarray:
    """``codes[indices]`` as ``dtype`` (None: the codes' own floating dtype), for any index
    shape (...,) -> (..., D).

    A numpy array is read with one ``np.take`` (the rows of ``codes[idx]``, about twice
    as fast); any other array-like with ``codes[idx]`` in chunks of :data:`GATHER_CHUNK`
    rows, in the order of ``indices``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    flat = indices.reshape(-1)
    dims = code_dim(codes)
    if isinstance(codes, np.ndarray):      # in memory: one gather, no chunk copies
        rows = np.take(codes, flat, axis=0)
        kind = dtype or (rows.dtype if rows.dtype.kind == "f" else np.float64)
        return rows.astype(kind, copy=False).reshape(indices.shape + (dims,))
    out = None
    for start in range(0, flat.size, GATHER_CHUNK):
        part = np.ascontiguousarray(flat[start:start + GATHER_CHUNK])
        rows = np.asarray(codes[part])
        if rows.shape != (part.size, dims):
            raise UserError(f"codes[idx] returned shape {rows.shape}, expected {(part.size, dims)}")
        if out is None:
            kind = dtype or (rows.dtype if rows.dtype.kind == "f" else np.float64)
            out = np.empty((flat.size, dims), dtype=kind)
        out[start:start + part.size] = rows
    if out is None:
        out = np.empty((0, dims), dtype=dtype or np.float64)
    return out.reshape(indices.shape + (dims,))


def sample_factor_columns(ground_truth, n: int, rng: np.random.Generator) -> np.ndarray:
    """The draws of ``ground_truth.sample_classes(n, rng)`` — same calls, same values —
    laid out factor-major, (K, n) int64: saves the (n, K) stack and copy, which cost more
    than the draws themselves for the 1.3 million rows of the β-VAE metric."""
    return np.stack([rng.integers(0, size, size=n) for size in ground_truth.factor_sizes])


def index_of_columns(ground_truth, columns: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """Image indices of factor-major classes (K, ...) -> (...): the mixed-radix number
    of :meth:`GroundTruth.index_of` (last factor fastest), without its (n, K) layout.

    A grid with discrete nuisance factors stored as the last, fastest digits of the index
    (smallNORB's instance) needs them drawn: ``rng`` draws each uniformly per observation,
    after the factor draws, as disentanglement_lib's ``norb.py`` samples its unobserved
    factors (``sample_all_factors``). Without such factors ``rng`` is not touched, so
    every other dataset's draws and scores are unchanged."""
    sizes = ground_truth.factor_sizes
    index = np.zeros(columns.shape[1:], dtype=np.int64)
    for k, size in enumerate(sizes):
        index *= size
        index += columns[k]
    return _with_nuisance(ground_truth, index, rng)


def _with_nuisance(ground_truth, cell: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Cell indices -> image indices, the discrete nuisance drawn from ``rng`` (identity
    for a grid without one)."""
    nuisance = [n.size for n in getattr(ground_truth, "discrete_nuisance", ())]
    if not nuisance:
        return cell
    if rng is None:
        raise ParameterError("rng", f"the images also depend on nuisance factor(s) "
                             f"{[n.name for n in ground_truth.discrete_nuisance]}: pass the metric's Generator")
    drawn = ground_truth.sample_nuisance_classes(cell.shape, rng)
    index = cell.copy()
    for k, size in enumerate(nuisance):
        index *= size
        index += drawn[..., k]
    return index


def sample_points(codes, ground_truth, num_points: int, rng: np.random.Generator):
    """Draw ``num_points`` factor vectors uniformly (with replacement) and look up their
    codes: returns (codes (n, D) float64, classes (n, K) int64).

    dlib draws these in batches of ``batch_size`` (16); the batch size is only the
    granularity of its sampling loop, so one draw of all points has the same distribution.
    """
    classes = ground_truth.sample_classes(int(num_points), rng)
    # a nuisance stored in the grid (smallNORB's instance) is drawn per point from rng
    return gather(codes, ground_truth.index_of(classes, rng=rng)), classes


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


def _codes_of(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Labels -> (dense codes 0..m-1, m)."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(-1), int(inverse.max()) + 1 if inverse.size else 0


def _mutual_info_coded(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> float:
    """Plug-in MI (nats) of two densely coded label vectors, from their contingency table
    (sklearn's ``mutual_info_score`` formula)."""
    joint = np.bincount(a * nb + b, minlength=na * nb).reshape(na, nb).astype(np.float64)
    n = joint.sum()
    outer = np.outer(joint.sum(axis=1), joint.sum(axis=0))
    nz = joint > 0
    mi = np.sum(joint[nz] / n * (np.log(joint[nz] * n) - np.log(outer[nz])))
    return float(max(mi, 0.0))


def mutual_info_discrete(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two discrete label vectors; equals
    ``sklearn.metrics.mutual_info_score(a, b)`` (tested)."""
    return _mutual_info_coded(*_codes_of(a), *_codes_of(b))


def mutual_info_matrix(discrete_codes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """(D, K) matrix of plug-in MI (nats) between each discretised code column and each
    factor's class labels."""
    code_cols = [_codes_of(discrete_codes[:, j]) for j in range(discrete_codes.shape[1])]
    factor_cols = [_codes_of(classes[:, k]) for k in range(classes.shape[1])]
    return np.array([[_mutual_info_coded(*c, *f) for f in factor_cols] for c in code_cols])


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


# --------------------------------------------------------------------------- parameter checks
# Each metric module has a ``check_params(params)`` built from these; the registry runs it
# on the complete parameter dict before any work starts, so a bad value fails in one line
# naming ``metric.param`` before codes are encoded or other metrics are scored.
def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def param_error(metric: str, key: str, value, want: str) -> ParameterError:
    return ParameterError(f"{metric}.{key}", f"expected {want}", value=repr(value))


def require_int(metric: str, params: dict, key: str, low: int = 1) -> None:
    value = params[key]
    if not (_is_int(value) and value >= low):
        want = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise param_error(metric, key, value, want)


def require_number(metric: str, params: dict, key: str, low: float, strict: bool = False) -> None:
    """A finite real number >= ``low`` (``> low`` when ``strict``)."""
    value = params[key]
    ok = (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
          and np.isfinite(value) and (value > low if strict else value >= low))
    if not ok:
        raise param_error(metric, key, value, f"a finite number {'>' if strict else '>='} {low:g}")


# Bounds on a protocol's sample counts, so a typo (num_train=3000000000) is one line before
# any work instead of a MemoryError after the codes are built. The published protocols
# draw 10,000 points (batches of 64 at most); 1,000 times that is the most a count may be,
# and a count times its batch size (the images drawn) at most MAX_DRAWN: their index
# arrays alone then take up to 1.6 GB.
MAX_SAMPLE_COUNT = 10_000_000
MAX_DRAWN = 200_000_000


def _is_sample_count(key: str) -> bool:
    return key.startswith("num_") or key.endswith("_samples") or key == "batch_size"


def check_sample_bounds(metric: str, params: dict) -> None:
    """ParameterError naming ``metric.key`` for a sample count above MAX_SAMPLE_COUNT, or a
    count whose draws (times batch_size) exceed MAX_DRAWN."""
    for key, value in params.items():
        if _is_sample_count(key) and _is_int(value) and value > MAX_SAMPLE_COUNT:
            raise ParameterError(f"{metric}.{key}", f"at most {MAX_SAMPLE_COUNT:,} (bounds the memory and time "
                                 f"of the sampling; the published protocols use 10,000)", value=repr(value))
    batch = params.get("batch_size")
    if _is_int(batch):
        for key, value in params.items():
            if key.startswith("num_") and _is_int(value) and value * batch > MAX_DRAWN:
                raise ParameterError(f"{metric}.{key}", f"{key} × batch_size ({value:,} × {batch:,}) must be at "
                                     f"most {MAX_DRAWN:,} images drawn (bounds the memory of the sampling)",
                                     value=repr(value))


def require_choice(metric: str, params: dict, key: str, choices) -> None:
    value = params[key]
    if not (isinstance(value, str) and value in choices):
        raise ParameterError(f"{metric}.{key}", f"unknown {key} (choose from {', '.join(choices)})",
                             value=repr(value))


def require_bool(metric: str, params: dict, key: str) -> None:
    value = params[key]
    if not isinstance(value, (bool, np.bool_)):
        raise param_error(metric, key, value, "true or false")


# --------------------------------------------------------------------------- checks with the data in hand
# A registry entry's ``check_data(params, summary)`` runs after the parameter checks above,
# once the dataset is open and before any image is encoded or any metric scored: what a
# protocol's sizes need of the dataset (factor counts and sizes, the code width). Every
# protocol here draws its points WITH replacement (PROTOCOLS.md), so no count is bounded by
# the number of images; what a count needs is enough distinct values in its draw.
@dataclasses.dataclass(frozen=True)
class DataSummary:
    """What a metric will be given, known before the work: the dataset's image count and
    ground-truth grid (None without factors), its name for messages, the code width
    (None when unknown yet) and the evaluation seed (every metric's Generator is
    ``default_rng(seed)``, so a check may replay a protocol's first draw exactly)."""

    num_images: int
    ground_truth: object = None
    code_dim: int | None = None
    seed: int = 0
    label: str = "the dataset"

    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.ground_truth.factor_sizes) if self.ground_truth is not None else ()

    @property
    def factor_names(self) -> tuple[str, ...]:
        return tuple(self.ground_truth.factor_names) if self.ground_truth is not None else ()

    def sizes_text(self) -> str:
        return ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))


# a draw of at most this many points is replayed to see whether it leaves a factor with
# two values; beyond it a factor with two or more values is single-valued in the draw with
# probability below 2**-1000
REPLAY_MAX_POINTS = 1000


def require_varying_factor(metric: str, summary: DataSummary) -> None:
    """UserError unless some factor of the dataset takes two or more values (a factor
    metric scores how codes follow factors; a grid of one value per factor has nothing)."""
    if summary.ground_truth is not None and not any(s >= 2 for s in summary.factor_sizes):
        raise UserError(f"{metric}: every factor of {summary.label} takes a single value "
                        f"({summary.sizes_text()}; {summary.num_images:,} image(s)): nothing to score")


def require_code_dims(metric: str, summary: DataSummary, low: int, why: str) -> None:
    if summary.code_dim is not None and summary.code_dim < low:
        raise UserError(f"{metric} needs at least {low} code dimensions ({why}); the codes have {summary.code_dim}")


def require_factor_sample(metric: str, params: dict, summary: DataSummary, key: str = "num_train") -> None:
    """For the metrics whose first draw is ``ground_truth.sample_classes(params[key], rng)``
    (:func:`sample_points`) and which drop factors single-valued in it: ParameterError
    naming ``metric.key`` unless some factor takes two values in that draw. Small draws
    are replayed with the metric's own Generator, so the answer is the metric's."""
    n = params[key]
    if summary.ground_truth is None or not _is_int(n):
        return
    if n < 2:
        raise ParameterError(f"{metric}.{key}", "at least 2 points (a factor needs two values in the "
                             "sample to be scored)", value=repr(n))
    if n <= REPLAY_MAX_POINTS:
        classes = summary.ground_truth.sample_classes(int(n), np.random.default_rng(summary.seed))
        if all(np.unique(classes[:, k]).size < 2 for k in range(classes.shape[1])):
            raise ParameterError(f"{metric}.{key}", f"with seed {summary.seed} these {n} points hold "
                                 f"every factor at a single value: nothing to score; use more points",
                                 value=repr(n))
