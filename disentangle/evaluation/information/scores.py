"""The ``info`` metric: its parameters, checked, and the assembly of its scores from the
entropy, rate, I_q and distortion estimates."""
from __future__ import annotations

import math
import time

import numpy as np

from disentangle.evaluation.information.distortion import distortion, model_device
from disentangle.evaluation.information.entropy import dataset_entropy
from disentangle.evaluation.information.gaussian import rate_per_dim
from disentangle.evaluation.information.mutual_information import mutual_information
from disentangle.evaluation.information.summary import sandwich_violations
from disentangle.evaluation.information.units import bits

ACTIVE_THRESHOLD_NATS = 0.01   # a dimension is active when its mean KL exceeds this
DEFAULT_PARAMS = {
    "iq_se_target": 0.04,
    "iq_min_samples": 1000,
    "iq_max_samples": 20000,
    "distortion_images": 10000,
    "active_threshold_nats": ACTIVE_THRESHOLD_NATS,
    "decode_batch_size": None,   # None: 64 on a CPU, 1024 on a GPU (docs/performance.md)
}


def check_params(p: dict) -> dict:
    """The info parameters, checked (ParameterError naming ``info.KEY``)."""
    from disentangle.errors import ParameterError

    def bad(key, want):
        return ParameterError(f"info.{key}", f"expected {want}", value=repr(p[key]))

    def is_int(x):
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)

    images = p["distortion_images"]
    if not (images == "all" or (is_int(images) and images >= 2)):
        raise bad("distortion_images", "'all' or a count >= 2")
    for key in ("iq_min_samples", "iq_max_samples"):
        if not (is_int(p[key]) and p[key] >= 2):
            raise bad(key, "an integer >= 2")
    if p["iq_max_samples"] < p["iq_min_samples"]:
        raise bad("iq_max_samples", f"at least iq_min_samples ({p['iq_min_samples']})")
    for key, low in (("iq_se_target", 0.0), ("active_threshold_nats", -1e-300)):
        if isinstance(p[key], bool) or not isinstance(p[key], (int, float)) or not p[key] > low:
            raise bad(key, "a positive number" if low == 0.0 else "a number >= 0")
    if p["decode_batch_size"] is not None and not (is_int(p["decode_batch_size"]) and p["decode_batch_size"] >= 1):
        raise bad("decode_batch_size", "a positive integer")
    return p


def information_scores(model, codes, data, rng: np.random.Generator, **params) -> dict:
    """The ``info`` metric: rate, distortion, H(X), the bounds, I_q, marginal KL, total
    correlation and per-dimension KL of one model (keys in nats with *_bits alongside).
    ``is_bound``: whether D is a proper discrete NLL of the dataset's pixels (bernoulli on
    binary pixels, a discretised likelihood on binary or 8-bit ones); when not,
    ``i_gen_lower_nats`` is NaN and ``no_bound_reason`` says why.

    ``codes``: the run's codes table (``.mean``, ``.logvar`` (N, D) in index order);
    ``data``: ``num_images``, ``images(indices)`` (floats in [0, 1]) and, for binary
    datasets, ``packed`` (see :func:`.entropy.dataset_entropy`);
    ``params``: see :data:`DEFAULT_PARAMS` (unknown keys are an error), plus ``device``
    (default: the model's) and ``cache`` (H(X) cache, default True).
    """
    from disentangle.errors import UserError
    device = params.pop("device", None)
    cache = bool(params.pop("cache", True))
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise UserError(f"info metric: unknown parameter(s) {', '.join(unknown)} "
                        f"(known: {', '.join(DEFAULT_PARAMS)})")
    p = check_params({**DEFAULT_PARAMS, **params})
    mean = np.asarray(codes.mean, dtype=np.float32)
    logvar = np.asarray(codes.logvar, dtype=np.float32)
    if mean.shape != logvar.shape or mean.shape[0] != data.num_images:
        raise UserError(f"info metric: codes table has shape {mean.shape} / {logvar.shape}, "
                        f"expected ({data.num_images}, D) for {getattr(data, 'path', 'the dataset')}")
    if device is None:
        device = model_device(model)
    rng_iq, rng_d = rng.spawn(2)   # independent streams: changing one sample size moves nothing else
    seconds = {}

    t0 = time.perf_counter()
    hx = dataset_entropy(data, cache=cache)
    seconds["entropy"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    kl_dims = rate_per_dim(mean, logvar)
    seconds["rate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    mi = mutual_information(mean, logvar, rng_iq, se_target=float(p["iq_se_target"]),
                            min_samples=int(p["iq_min_samples"]), max_samples=int(p["iq_max_samples"]),
                            device=device)
    seconds["i_q"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    dist = distortion(model, data, mean, logvar, rng_d, images=p["distortion_images"],
                      batch_size=p["decode_batch_size"])
    seconds["distortion"] = time.perf_counter() - t0

    return assemble_values(hx, kl_dims, mi, dist, float(p["active_threshold_nats"]), seconds)


def assemble_values(hx: dict, kl_dims: np.ndarray, mi: dict, dist: dict, threshold: float,
                    seconds: dict) -> dict:
    """The ``info`` values from the H(X) (:func:`dataset_entropy`), per-dimension rate,
    I_q (:func:`mutual_information`) and distortion (:func:`distortion`) results."""
    rate = float(kl_dims.sum())
    from disentangle.models.likelihoods import proper_discrete
    likelihood = dist["likelihood"]
    # H(X) - D bounds I_q only when D is a proper discrete NLL of these very pixels
    pixels = hx.get("pixels", "binary")
    is_bound, no_bound_reason = proper_discrete(likelihood, pixels)
    h = hx["entropy_nats"]
    d_nats = dist["distortion_nats"]
    i_gen_lower = h - d_nats if is_bound else float("nan")
    values = {
        "rate_nats": rate, "rate_bits": bits(rate),
        "distortion_nats": d_nats, "distortion_bits": bits(d_nats),
        "distortion_se_nats": dist["distortion_se_nats"], "distortion_images": dist["distortion_images"],
        "entropy_x_nats": h, "entropy_x_bits": hx["entropy_bits"],
        "num_distinct_images": hx["num_distinct"], "log_num_images_nats": math.log(hx["num_images"]),
        "i_gen_lower_nats": i_gen_lower, "i_gen_lower_bits": bits(i_gen_lower),
        "i_rep_upper_nats": rate, "i_rep_upper_bits": bits(rate),
        **_posterior_values(rate, kl_dims, mi, threshold),
        "likelihood": likelihood, "pixels": pixels, "is_bound": bool(is_bound),
        "no_bound_reason": no_bound_reason,
        **{f"seconds_{k}": float(v) for k, v in seconds.items()},
    }
    values["sandwich_violations"] = len(sandwich_violations(values))
    return values



# --------------------------------------------------------------------------- posterior only
POSTERIOR_PARAM_KEYS = ("iq_se_target", "iq_min_samples", "iq_max_samples", "active_threshold_nats")
POSTERIOR_DEFAULT_PARAMS = {k: DEFAULT_PARAMS[k] for k in POSTERIOR_PARAM_KEYS}


def check_posterior_params(p: dict) -> dict:
    """The ``info_posterior`` parameters, checked as ``info`` checks them."""
    check_params({**DEFAULT_PARAMS, **p})
    return p


def posterior_scores(codes, rng: np.random.Generator, **params) -> dict:
    """The parts of ``info`` that need only the posteriors q(z|x) of every image (the
    ``info_posterior`` metric, for a codes table made anywhere): rate, per-dimension KL,
    active dimensions, I_q with its standard error, marginal KL, total correlation and
    dimension-wise KL, under ``info``'s key names. No decoder and no images, so no
    distortion, H(X) or lower bound.

    The I_q stream is drawn exactly as ``info`` draws it (the first of ``rng.spawn(2)``),
    so on the same table and seed the shared keys equal ``info``'s bit for bit."""
    from disentangle.errors import UserError
    device = params.pop("device", "cpu")
    p = check_posterior_params({**POSTERIOR_DEFAULT_PARAMS, **params})
    if getattr(codes, "logvar", None) is None:
        raise UserError("info_posterior needs the posterior's log-variance (a codes table with logvar)")
    mean = np.asarray(codes.mean, dtype=np.float32)
    logvar = np.asarray(codes.logvar, dtype=np.float32)
    if mean.shape != logvar.shape or mean.ndim != 2:
        raise UserError(f"info_posterior: mean {mean.shape} and logvar {logvar.shape} differ in shape")
    rng_iq, _rng_d = rng.spawn(2)
    threshold = float(p["active_threshold_nats"])
    t0 = time.perf_counter()
    kl_dims = rate_per_dim(mean, logvar)
    seconds_rate = time.perf_counter() - t0
    t0 = time.perf_counter()
    mi = mutual_information(mean, logvar, rng_iq, se_target=float(p["iq_se_target"]),
                            min_samples=int(p["iq_min_samples"]), max_samples=int(p["iq_max_samples"]),
                            device=device)
    seconds_iq = time.perf_counter() - t0
    rate = float(kl_dims.sum())
    return {
        "rate_nats": rate, "rate_bits": bits(rate),
        **_posterior_values(rate, kl_dims, mi, threshold),
        "seconds_rate": float(seconds_rate), "seconds_i_q": float(seconds_iq),
    }


def _posterior_values(rate: float, kl_dims, mi: dict, threshold: float) -> dict:
    """The values that need only the posterior (I_q, marginal KL, total correlation,
    per-dimension KL, active dimensions): shared by ``info`` and ``info_posterior``."""
    return {
        "i_q_nats": mi["i_q_nats"], "i_q_bits": bits(mi["i_q_nats"]), "i_q_se_nats": mi["i_q_se_nats"],
        "i_q_samples": mi["i_q_samples"],
        "marginal_kl_nats": rate - mi["i_q_nats"], "marginal_kl_bits": bits(rate - mi["i_q_nats"]),
        "total_correlation_nats": mi["total_correlation_nats"],
        "total_correlation_bits": bits(mi["total_correlation_nats"]),
        "total_correlation_se_nats": mi["total_correlation_se_nats"],
        "dimension_wise_kl_nats": mi["dimension_wise_kl_nats"],
        "dimension_wise_kl_se_nats": mi["dimension_wise_kl_se_nats"],
        "active_dims": int((kl_dims > threshold).sum()), "active_threshold_nats": threshold,
        **{f"kl_dim_{j}": float(k) for j, k in enumerate(kl_dims)},
    }
