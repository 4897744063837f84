"""The terms every method's loss shares (:mod:`disentangle.models.methods`), in nats per image.

Reconstruction terms (summed over the 4,096 pixels of an image, averaged over the batch;
never a per-pixel mean, which would silently rescale β by 1/4096):

- ``bernoulli``: −log p(x|z) for binary pixels with p = sigmoid(logits), i.e.
  binary cross-entropy with logits. A proper discrete negative log-likelihood.
- ``gaussian``: Σ (sigmoid(logits) − x)², the squared-error form (as disentanglement_lib's
  "l2" loss). It equals −log N(x; μ, σ² = 1/2) minus the constant 4096·½·log π ≈ 2344.4
  nats: a density of a fixed-variance Gaussian, not a probability of the binary image,
  so it is no bound on anything discrete and its β is not comparable to the Bernoulli one.
- ``discretized-gaussian`` / ``discretized-logistic``: the exact −log P of 8-bit pixels
  over 256 bins per channel, with the model's learned log-scale (pass a
  :class:`~disentangle.models.likelihoods.ScaledLikelihood`). Proper discrete NLLs.

Every term is computed in :mod:`disentangle.models.likelihoods`; this module dispatches.

KL(q(z|x) ‖ N(0, I)): analytic, per latent dimension, averaged over the batch. The
capacity schedule of annealed-vae (Burgess et al. 2018): C raised linearly from 0 to
``capacity_max`` nats over ``capacity_steps`` steps, then held.
"""
from __future__ import annotations

import torch

from disentangle.models.likelihoods import GAUSSIAN_NLL_OFFSET, reconstruction_loss  # noqa: F401


def reconstruction(logits: torch.Tensor, x: torch.Tensor, likelihood) -> torch.Tensor:
    """Per-image reconstruction loss (nats, summed over pixels), averaged over the batch.
    ``likelihood``: a name, or a ScaledLikelihood for the discretised ones."""
    return reconstruction_loss(logits, x, likelihood)


def kl_per_dim(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) ‖ N(0, 1)) per latent dimension, averaged over the batch: (D,)."""
    return 0.5 * (mean.square() + logvar.exp() - logvar - 1.0).mean(dim=0)


def capacity(step: int, capacity_max: float, capacity_steps: int) -> float:
    """C at 0-based training step ``step``: linear from 0 to capacity_max, then constant."""
    return float(capacity_max) * min(1.0, step / float(capacity_steps))

