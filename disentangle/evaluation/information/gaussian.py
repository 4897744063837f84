"""The diagonal-Gaussian posterior q(z|x) = N(mean(x), diag exp(logvar(x))) in numpy:
its KL to the prior N(0, I) (the evaluation layer's one KL formula: the rate, the KL per
dimension of the figures), its log-density and sampling from it."""
from __future__ import annotations

import numpy as np

from disentangle.evaluation.information.units import LOG_2PI


def kl_to_standard_normal(mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """KL(N(mean, exp(logvar)) || N(0, 1)) elementwise, float64 (same shape as mean)."""
    m = np.asarray(mean, dtype=np.float64)
    lv = np.asarray(logvar, dtype=np.float64)
    return 0.5 * (m * m + np.exp(lv) - lv - 1.0)


def rate_per_dim(mean: np.ndarray, logvar: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Mean over images of the per-dimension KL to the prior: (D,) float64 nats."""
    total = np.zeros(mean.shape[1], dtype=np.float64)
    for s in range(0, len(mean), chunk):
        total += kl_to_standard_normal(mean[s:s + chunk], logvar[s:s + chunk]).sum(axis=0)
    return total / len(mean)


def gaussian_log_density(z: np.ndarray, mean: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Per-dimension log N(z; mean, exp(logvar)), float64, elementwise."""
    z = np.asarray(z, dtype=np.float64)
    m = np.asarray(mean, dtype=np.float64)
    lv = np.asarray(logvar, dtype=np.float64)
    return -0.5 * (LOG_2PI + lv + (z - m) ** 2 * np.exp(-lv))


def sample_posterior(mean: np.ndarray, logvar: np.ndarray, indices: np.ndarray,
                     rng: np.random.Generator) -> np.ndarray:
    """z ~ q(z|x_i) for each index i: float32 (len(indices), D) (the precision of the codes)."""
    m = np.asarray(mean[indices], dtype=np.float64)
    s = np.exp(0.5 * np.asarray(logvar[indices], dtype=np.float64))
    return (m + s * rng.standard_normal(m.shape)).astype(np.float32)

