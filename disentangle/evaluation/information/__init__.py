"""Rate, distortion and mutual information of a trained VAE: the ``info`` metric.

Every quantity is in nats (bits = nats / ln 2 alongside). With the data distribution
p(x) uniform over the N dataset indices and the encoder q(z|x) = N(mean(x), diag exp(logvar(x))):

- **rate** R = E_x KL(q(z|x) || N(0, I)), analytic from the codes table, over all N images.
  R = I_q(X;Z) + KL(q(z) || p(z)) >= I_q, so R is the upper bound on I_rep.
- **distortion** D = -E_x E_{q(z|x)} log p(x|z), Monte Carlo: one z ~ q(z|x) per image
  through ``model.decode``. Bernoulli decoder: binary cross-entropy with logits summed
  over the 4,096 pixels, a proper discrete negative log-likelihood. Gaussian decoder:
  -log N(x; sigmoid(logits), 1/2 I), the density the training loss is a shifted form of
  (:data:`disentangle.models.objectives.GAUSSIAN_NLL_OFFSET`); a density is not a
  probability of a binary image, so H(X) - D is then *not* a bound (``is_bound`` False,
  ``i_gen_lower_nats`` NaN).
- **H(X)**, exact: identical images (orientation 0 and 2 pi, symmetric coincidences)
  are one outcome, so H = -sum_k (c_k/N) log(c_k/N) over the distinct images' counts.
  I_gen >= H(X) - D for the Bernoulli decoder (cross-entropy >= entropy).
- **I_q(X;Z)** = E_x E_{q(z|x)} [log q(z|x) - log q(z)] against the aggregate posterior
  q(z) = (1/N) sum_n q(z|x_n) over *all* N images; log q(z) is exact (a log-sum-exp over
  N posteriors), so the only error is the Monte Carlo error over the M samples (x, z),
  reported as a standard error. H(X) - D <= I_q <= R.
- **total correlation** KL(q(z) || prod_j q(z_j)) and the dimension-wise KL
  sum_j KL(q(z_j) || N(0, 1)) from the same samples and the same pass (log q(z_j) is a
  1-D log-sum-exp over the N posteriors). Marginal KL = R - I_q = TC + dimension-wise KL.

How M is chosen: samples are drawn in rounds (first ``iq_min_samples``), and after each
round the per-sample standard deviation of log q(z|x) - log q(z) says how many samples
bring the standard error of I_q to ``iq_se_target`` (0.04 nats, below the 0.05 asked
for); drawing stops there or at ``iq_max_samples``.

Distortion sample: the decoder is the slow part on a CPU (docs/performance.md has its
throughput). ``distortion_images`` is the number of
images, drawn uniformly without replacement (default 10,000), or "all" for the whole
dataset (one z per image; seconds on a GPU). The reported standard error is
std / sqrt(n) of the per-image NLL; it counts the image-to-image spread too, so it is
an upper bound on the sampling error (also for "all", where only the z noise remains).

Cost of I_q: M x N x D Gaussian log-densities, in a tiled pass (:mod:`.posterior`).

The package, one job per module:

- :mod:`.entropy`: exact H(X) and its cache;
- :mod:`.gaussian`: the posterior's KL to the prior (rate), log-density and sampling;
- :mod:`.posterior`: the aggregate-posterior kernel and its thread pool;
- :mod:`.mutual_information`: the I_q estimator (with total correlation, dimension-wise KL);
- :mod:`.distortion`: decoding for distortion and the per-image reconstruction NLL;
- :mod:`.scores`: the metric's parameters and the assembly of its scores; the
  posterior-only part (``info_posterior``: rate, I_q, total correlation) for a codes
  table without a decoder;
- :mod:`.summary`: the console text and the sandwich check;
- :mod:`.units`: nats and bits.
"""
from __future__ import annotations

from disentangle.evaluation.information.distortion import distortion, model_device, reconstruction_nll
from disentangle.evaluation.information.entropy import (CACHE_ENV_VAR, ENTROPY_CACHE_FORMAT, cache_dir,
                                                        dataset_entropy, distinct_image_counts,
                                                        entropy_from_counts)
from disentangle.evaluation.information.gaussian import (gaussian_log_density, kl_to_standard_normal,
                                                         rate_per_dim, sample_posterior)
from disentangle.evaluation.information.mutual_information import mutual_information
from disentangle.evaluation.information.posterior import (COL_TILE, EXP_FLOOR, ROW_TILE, AggregatePosterior,
                                                          log_aggregate_reference)
from disentangle.evaluation.information.scores import (ACTIVE_THRESHOLD_NATS, DEFAULT_PARAMS,
                                                       POSTERIOR_DEFAULT_PARAMS, check_params,
                                                       check_posterior_params, information_scores,
                                                       posterior_scores)
from disentangle.evaluation.information.summary import format_summary, sandwich_violations
from disentangle.evaluation.information.units import LN2, LOG_2PI, bits

__all__ = [
    "ACTIVE_THRESHOLD_NATS", "CACHE_ENV_VAR", "POSTERIOR_DEFAULT_PARAMS", "check_posterior_params",
    "posterior_scores", "COL_TILE", "DEFAULT_PARAMS", "ENTROPY_CACHE_FORMAT",
    "EXP_FLOOR", "LN2", "LOG_2PI", "ROW_TILE", "AggregatePosterior", "bits", "cache_dir", "check_params",
    "dataset_entropy", "distinct_image_counts", "distortion", "entropy_from_counts", "format_summary",
    "gaussian_log_density", "information_scores", "kl_to_standard_normal", "log_aggregate_reference",
    "model_device", "mutual_information", "rate_per_dim", "reconstruction_nll", "sample_posterior",
    "sandwich_violations",
]
