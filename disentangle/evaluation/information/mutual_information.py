"""The I_q(X;Z) estimator, with total correlation and dimension-wise KL from the same samples.

I_q(X;Z) = E_x E_{q(z|x)} [log q(z|x) - log q(z)] against the aggregate posterior q(z)
over *all* N images (:mod:`.posterior`); log q(z) is exact, so the only error is the
Monte Carlo error over the M samples (x, z), reported as a standard error.

How M is chosen: samples are drawn in rounds (first ``min_samples``), and after each
round the per-sample standard deviation of log q(z|x) - log q(z) says how many samples
bring the standard error of I_q to ``se_target``; drawing stops there or at ``max_samples``.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from disentangle.evaluation.information.gaussian import gaussian_log_density, sample_posterior
from disentangle.evaluation.information.posterior import AggregatePosterior, log_aggregate_reference
from disentangle.evaluation.information.units import LOG_2PI
from disentangle.progress import report


def mutual_information(mean: np.ndarray, logvar: np.ndarray, rng: np.random.Generator,
                       se_target: float = 0.04, min_samples: int = 1000, max_samples: int = 20000,
                       device="cpu", reference: bool = False) -> dict:
    """Monte Carlo I_q(X;Z), total correlation and dimension-wise KL of q(z) against the
    aggregate posterior of all N posteriors; sample count chosen for ``se_target``
    (module docstring). ``reference`` uses the straightforward pass (for tests and the
    benchmark baseline). Returns nats with standard errors and the sample count."""
    mean = np.asarray(mean, dtype=np.float32)
    logvar = np.asarray(logvar, dtype=np.float32)
    n, d = mean.shape
    post = AggregatePosterior(mean, logvar, device)
    terms_iq, terms_tc, terms_dw = [], [], []
    batch = int(min_samples)
    done = 0
    while True:
        _report_samples(done, done + batch, 0)
        idx = rng.integers(0, n, size=batch)
        z = sample_posterior(mean, logvar, idx, rng)
        log_cond = gaussian_log_density(z, mean[idx], logvar[idx]).sum(axis=1)
        if reference:
            log_q, log_qj = log_aggregate_reference(z, mean, logvar, device=device)
        else:
            log_q, log_qj = post.log_densities(z, idx, on_rows=functools.partial(_report_samples, done, done + batch))
        log_prior_j = -0.5 * (LOG_2PI + z.astype(np.float64) ** 2)
        terms_iq.append(log_cond - log_q)
        terms_tc.append(log_q - log_qj.sum(axis=1))
        terms_dw.append((log_qj - log_prior_j).sum(axis=1))
        done += batch
        iq = np.concatenate(terms_iq)
        sd = float(iq.std(ddof=1)) if done > 1 else float("inf")
        if sd / math.sqrt(done) <= se_target or done >= max_samples:
            break
        need = math.ceil((sd / se_target) ** 2 * 1.05) - done   # 5% margin: sd is itself estimated
        batch = int(min(max(need, 256), max_samples - done))
    tc = np.concatenate(terms_tc)
    dw = np.concatenate(terms_dw)
    se = lambda a: float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")  # noqa: E731
    return {"i_q_nats": float(iq.mean()), "i_q_se_nats": se(iq), "i_q_samples": int(done),
            "total_correlation_nats": float(tc.mean()), "total_correlation_se_nats": se(tc),
            "dimension_wise_kl_nats": float(dw.mean()), "dimension_wise_kl_se_nats": se(dw),
            "fallback_rows": int(post.fallback_rows)}


def _report_samples(done: int, target: int, rows: int) -> None:
    report("info: I_q", done + rows, target, "samples")
