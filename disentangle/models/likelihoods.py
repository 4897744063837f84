"""The decoder likelihoods p(x|z): one per-image negative log-likelihood (nats, summed over
pixels) per name, shared by the training loss (:mod:`.objectives`) and the information
view (:mod:`disentangle.evaluation.information.distortion`).

The decoder outputs one logit per pixel and channel; every likelihood reads its location
as μ = sigmoid(logit) in [0, 1] (the reconstructions shown are that μ for all of them).

- ``bernoulli``: binary cross-entropy with logits, −Σ [x log μ + (1 − x) log(1 − μ)]. A
  proper discrete negative log-likelihood of *binary* pixels; on [0, 1] intensities it is
  a cross-entropy with soft targets, not the probability of anything.
- ``gaussian``: the squared-error form Σ (μ − x)² as training loss (disentanglement_lib's
  "l2"); as a likelihood −log N(x; μ, ½ I) = Σ (μ − x)² + 4096·½·log π
  (:data:`GAUSSIAN_NLL_OFFSET`). A density, never a probability of discrete pixels.
- ``discretized-gaussian``: the seed's "pixels distributed normally" made discrete over the
  256 levels k/255 of an 8-bit channel: bins of width 1/255 centred on k/255, the first
  and last bins open-ended (they take the tails), so
  P(k) = Φ((k/255 + ½/255 − μ)/σ) − Φ((k/255 − ½/255 − μ)/σ), P(0) = Φ((½/255 − μ)/σ),
  P(255) = 1 − Φ((1 − ½/255 − μ)/σ). The 256 probabilities sum to 1 for every μ and σ.
- ``discretized-logistic``: the same bins under a logistic CDF σ_L((y − μ)/s): one
  component of the discretised logistic mixture of PixelCNN++ (Salimans, Karpathy, Chen
  & Kingma 2017, "PixelCNN++: improving the PixelCNN with discretized logistic mixture
  likelihood and other modifications", ICLR; openai/pixel-cnn, pixel_cnn_pp/nn.py,
  ``discretized_mix_logistic_loss``), with their edge bins. On the [0, 1] scale rather
  than their [−1, 1], so the bin width is 1/255 where theirs is 2/255.

Both discretised likelihoods are proper discrete distributions of 8-bit pixels, so their
D = −E log p(x|z) is a cross-entropy and H(X) − D a lower bound on I_q(X;Z).

Numerics (float64, every term a log-CDF or a log of a sum of positives, no subtraction
of nearly equal probabilities; PixelCNN++'s ``log(max(cdf_delta, 1e-12))`` and its
mid-bin density fallback are approximations this module does not need):

- Gaussian: with a ≤ b the standardised bin edges, a bin entirely left of the mean is
  log Φ(b) + log(1 − exp(log Φ(a) − log Φ(b))) (``torch.special.log_ndtr``, and
  log1mexp as in Mächler 2012, "Accurately computing log(1 − exp(−|a|))"); a bin right of
  the mean is its mirror image; a bin holding the mean is log(½(erf(b/√2) + erf(−a/√2))),
  a sum of two positives.
- Logistic: exactly, σ_L(b) − σ_L(a) = (1 − e^{−(b−a)}) σ_L(b) σ_L(−a), so
  log P = log1mexp(b − a) − softplus(−b) − softplus(a), with b − a = (1/255)/s computed
  directly; the edge bins drop the log1mexp and one softplus.

The scale. σ (or s) is one learned log-scale per image channel, a parameter of the model
(:attr:`VAE.log_scale <disentangle.models.architectures.VAE>`, carried by the
state dict): the shared learned variance of the "calibrated decoder" σ-VAE (Rybkin,
Daniilidis & Levine 2021, "Simple and effective VAE training with calibrated decoders",
ICML; orybkin/sigma-vae-pytorch), which bounds it from below by a soft clip,
``min + softplus(θ − min)``. Deviation: the σ-VAE starts at log σ = 0 (σ = 1, wider than
the whole [0, 1] range); with Adam the log-scale moves about one learning rate per step,
so at this toolkit's 1e-4 reaching σ = 0.1 would take ~23,000 steps with a reconstruction
term 100 times weaker than at σ = 0.1. It starts at :data:`LOG_SCALE_INIT` = log 0.1
(σ ≈ 25 levels, the RMS error of a blurry reconstruction) and learns from there. The
minimum is
:data:`LOG_SCALE_MIN` = −10 (σ ≈ 0.012 of a level: the level's bin then holds all the
probability, so the floor costs D nothing, while gradients of far-off pixels stay finite).
A learned scale, not a fixed one: a fixed σ sets the weight of the reconstruction term
against β by hand and, for any σ much wider than a level, makes D a poor likelihood
(σ² = ½, the ``gaussian`` decoder's, is worse than a uniform 256-level guess); learned,
σ settles where D is lowest, and the bound holds for every σ. One scale per channel, not
per pixel (PixelCNN++ predicts one per sub-pixel): the networks keep one output per
pixel and channel.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

LEVELS = 256                      # levels of an 8-bit channel, k/255 for k = 0..255
HALF_BIN = 0.5 / (LEVELS - 1)     # half the width of one level's bin on [0, 1]
LOG_SCALE_MIN = -10.0             # soft floor of the learned log-scale (see the docstring)
LOG_SCALE_INIT = math.log(0.1)   # σ = 0.1 at initialisation (the σ-VAE: 1; see the docstring)
GAUSSIAN_NLL_OFFSET = 0.5 * 64 * 64 * math.log(math.pi)  # −log N(x; μ, ½) − Σ(x − μ)²

DISCRETIZED = ("discretized-gaussian", "discretized-logistic")
LIKELIHOODS = ("bernoulli", "gaussian", *DISCRETIZED)

_LN2 = math.log(2.0)
_SQRT_HALF = math.sqrt(0.5)


class ScaledLikelihood(NamedTuple):
    """A likelihood name with the model's raw (unclipped) per-channel log-scale parameter."""
    name: str
    log_scale: torch.Tensor


def has_scale(likelihood: str) -> bool:
    """Whether the likelihood needs a learned log-scale parameter in the model."""
    return likelihood in DISCRETIZED


def effective_log_scale(raw: torch.Tensor) -> torch.Tensor:
    """The log-scale used: the raw parameter softly clipped from below at LOG_SCALE_MIN."""
    return LOG_SCALE_MIN + F.softplus(raw - LOG_SCALE_MIN)


def resolve(likelihood) -> tuple[str, torch.Tensor | None]:
    """(name, raw log-scale or None) from a name or a :class:`ScaledLikelihood`."""
    if isinstance(likelihood, ScaledLikelihood):
        return likelihood.name, likelihood.log_scale
    return likelihood, None


# --------------------------------------------------------------------------- numerics
def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(−d)) for d > 0 (Mächler 2012: expm1 below ln 2, log1p above)."""
    d = d.clamp_min(torch.finfo(d.dtype).tiny)
    return torch.where(d <= _LN2, torch.log(-torch.expm1(-d)), torch.log1p(-torch.exp(-d)))


def _softplus(x: torch.Tensor) -> torch.Tensor:
    """log(1 + e^x) without F.softplus's linear cut-off at x > 20 (exact in float64)."""
    return torch.logaddexp(x, torch.zeros_like(x))


def _levels_and_standardised(x, mean, log_scale):
    """Level index k of each pixel (x = k/255, rounded), and the standardised bin centre
    c = (k/255 − μ)/σ and half width h = (½/255)/σ."""
    k = torch.round(x * (LEVELS - 1)).clamp(0, LEVELS - 1)
    inv_scale = torch.exp(-log_scale)
    return k, (k / (LEVELS - 1) - mean) * inv_scale, HALF_BIN * inv_scale


def discretized_gaussian_log_prob(x, mean, log_scale):
    """log P(level of x) under the discretised Gaussian N(mean, exp(log_scale)²) over the
    256 bins of [0, 1]; elementwise, broadcasting, in the dtype of the inputs."""
    k, c, h = _levels_and_standardised(x, mean, log_scale)
    h = h.expand_as(c)
    a, b = c - h, c + h
    lower_edge = torch.special.log_ndtr(b)       # P(0): everything below the first boundary
    upper_edge = torch.special.log_ndtr(-a)      # P(255): everything above the last one
    # interior bins: mirror those right of the mean to the left (same probability)
    t = -c.abs()
    a_l, b_l = t - h, t + h
    tail = b_l <= 0                                # the whole bin on one side of the mean
    log_b, log_a = torch.special.log_ndtr(b_l), torch.special.log_ndtr(a_l)
    in_tail = log_b + _log1mexp(log_b - log_a)
    straddle = torch.special.erf(b_l * _SQRT_HALF) + torch.special.erf(-a_l * _SQRT_HALF)
    straddle = torch.log(0.5 * torch.where(tail, torch.ones_like(straddle), straddle))
    interior = torch.where(tail, in_tail, straddle)
    return torch.where(k == 0, lower_edge, torch.where(k == LEVELS - 1, upper_edge, interior))


def discretized_logistic_log_prob(x, mean, log_scale):
    """log P(level of x) under the discretised logistic (location mean, scale
    exp(log_scale)) over the 256 bins of [0, 1], edge bins open (PixelCNN++'s)."""
    k, c, h = _levels_and_standardised(x, mean, log_scale)
    a, b = c - h, c + h
    sp_a, sp_neg_b = _softplus(a), _softplus(-b)
    lower_edge = -sp_neg_b                         # log σ_L(b)
    upper_edge = -sp_a                             # log(1 − σ_L(a))
    interior = _log1mexp((2 * h).expand_as(c)) - sp_neg_b - sp_a
    return torch.where(k == 0, lower_edge, torch.where(k == LEVELS - 1, upper_edge, interior))


_LOG_PROB = {"discretized-gaussian": discretized_gaussian_log_prob,
             "discretized-logistic": discretized_logistic_log_prob}


# --------------------------------------------------------------------------- per image
def _unknown(likelihood):
    from disentangle.errors import ParameterError
    return ParameterError("likelihood", f"expected one of {', '.join(LIKELIHOODS)}", value=repr(likelihood))


def _discretized_nll(logits, x, name, log_scale):
    """(n,) float64 −log p(x|z) summed over pixels and channels, x of shape (n, C, H, W)."""
    if log_scale is None:
        from disentangle.errors import ParameterError
        raise ParameterError("likelihood", f"{name} needs the model's log_scale parameter")
    # float64: the bins are 1/255 wide and the sum runs over thousands of pixels (MPS has none)
    dtype = torch.float32 if logits.device.type == "mps" else torch.float64
    mean = torch.sigmoid(logits.to(dtype))
    ls = effective_log_scale(log_scale.to(dtype)).reshape(1, -1, *([1] * (logits.dim() - 2)))
    return -_LOG_PROB[name](x.to(dtype), mean, ls).flatten(1).sum(dim=1)


def nll_per_image(logits: torch.Tensor, x: torch.Tensor, likelihood, log_scale=None) -> torch.Tensor:
    """Per-image −log p(x|z) in nats, summed over pixels: (n,) tensor.

    Bernoulli: binary cross-entropy with logits. Gaussian: −log N(x; sigmoid(logits), ½ I),
    the density whose shifted form is the training loss. Discretised: the exact negative
    log-probability of the 8-bit pixels (float64). ``likelihood``: a name or a
    :class:`ScaledLikelihood` (then ``log_scale`` comes from it)."""
    name, bound_scale = resolve(likelihood)
    log_scale = bound_scale if log_scale is None else log_scale
    if name == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)
    if name == "gaussian":
        return (logits.sigmoid() - x).square().flatten(1).sum(dim=1) + GAUSSIAN_NLL_OFFSET
    if name in _LOG_PROB:
        return _discretized_nll(logits, x, name, log_scale)
    raise _unknown(name)


def reconstruction_loss(logits: torch.Tensor, x: torch.Tensor, likelihood) -> torch.Tensor:
    """The training loss's reconstruction term: per-image loss (nats, summed over pixels)
    averaged over the batch. Gaussian: the squared-error form (no constant)."""
    name, log_scale = resolve(likelihood)
    n = x.shape[0]
    if name == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / n
    if name == "gaussian":
        return (torch.sigmoid(logits) - x).square().sum() / n
    if name in _LOG_PROB:
        return (_discretized_nll(logits, x, name, log_scale).sum() / n).to(logits.dtype)
    raise _unknown(name)


# --------------------------------------------------------------------------- proper or not
PIXEL_KINDS = ("binary", "8-bit", "continuous")


def proper_discrete(likelihood: str, pixels: str) -> tuple[bool, str | None]:
    """Whether D under ``likelihood`` is a proper discrete negative log-likelihood of a
    dataset whose pixels are ``pixels`` ("binary": all in {0, 1}; "8-bit": all on the
    k/255 grid; "continuous": neither), and if not, why (one sentence)."""
    name, _ = resolve(likelihood)
    if name == "bernoulli":
        if pixels == "binary":
            return True, None
        return False, (f"the bernoulli decoder's D on {pixels} intensities is a cross-entropy with soft "
                       f"targets, not a probability of the pixels")
    if name == "gaussian":
        return False, "the gaussian decoder's D is a density, not a probability of the discrete pixels"
    if name in DISCRETIZED:
        if pixels in ("binary", "8-bit"):
            return True, None
        return False, f"the {name} decoder's D is a probability of 8-bit pixels; these pixels are not on the k/255 grid"
    raise _unknown(name)
