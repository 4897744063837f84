"""The six methods of disentanglement_lib's unsupervised study, one plain loss function
each, computed as google-research/disentanglement_lib's
disentanglement_lib/methods/unsupervised/vae.py computes them.

Shared terms (:mod:`disentangle.models.objectives`): the reconstruction loss summed over
the 4,096 pixels and averaged over the batch (Bernoulli cross-entropy with logits, or
the Gaussian squared-error form); KL(q(z|x) ‖ N(0, I)) analytic, summed over latents,
averaged over the batch; z drawn once per image (z = mean + exp(logvar/2)·ε).

- ``beta-vae`` (β; Higgins et al. 2017): recon + β·KL.
- ``annealed-vae`` (γ, C_max, iteration threshold = ``capacity_steps``; Burgess et al.
  2018): recon + γ·|KL − C|, C = min(C_max, C_max·step/threshold) at the 0-based step.
- ``beta-tcvae`` (β; Chen et al. 2018): recon + KL + (β − 1)·TC, TC the minibatch
  estimate of :func:`total_correlation` (dlib's, constants dropped).
- ``factor-vae`` (γ; Kim & Mnih 2018): recon + KL + γ·mean(d₀(z) − d₁(z)) with d the
  logits of :class:`~disentangle.models.architectures.FcDiscriminator`; the discriminator
  maximises ½·mean log p₀(z) + ½·mean log p₁(z̃), z̃ = z with every latent dimension
  shuffled independently across the batch (:func:`shuffle_codes`).
- ``dip-vae-i`` / ``dip-vae-ii`` (λ_od; Kumar et al. 2018): recon + KL + λ_od·Σ_{i≠j} C_ij²
  + λ_d·Σ_i (C_ii − 1)², λ_d = 10·λ_od (i) or λ_od (ii) as dlib's study sets
  ``lambda_d_factor``; C = Cov_batch[mean] (i), E_batch[diag exp(logvar)] + Cov_batch[mean]
  (ii); covariances with the 1/n (biased) normalisation, as dlib's.

Each method's entry in :mod:`disentangle.methods` (the registry) names its function here
(and, for factor-vae, :class:`FactorVAEDiscriminator`, its extra trained state); the old
names "beta-h" and "beta-b" select beta-vae and annealed-vae there.

Every function takes the batch tensors (x, logits, mean, logvar, z), the 0-based step,
the likelihood and its hyper-parameters, and returns a dict of loss terms: ``loss`` (what
the VAE's optimizer minimises), ``reconstruction``, ``kl``, ``kl_dims`` (D,), and the
method's extra terms (its entry's ``log_terms``), all 0-dim tensors in nats per image.
"""
from __future__ import annotations

import math

import torch

import numpy as np

from disentangle import methods as method_registry
from disentangle.models.objectives import capacity, kl_per_dim, reconstruction

DIP_LAMBDA_D_FACTOR = {"dip-vae-i": 10.0, "dip-vae-ii": 1.0}

# FactorVAE's discriminator optimizer, as dlib's study configures it
# (discriminator_optimizer: Adam, learning rate 1e-4, β1 0.5, β2 0.9, ε 1e-8).
DISCRIMINATOR_ADAM = {"lr": 1e-4, "betas": (0.5, 0.9), "eps": 1e-8}


def _base(x, logits, mean, logvar, likelihood):
    recon = reconstruction(logits, x, likelihood)
    kl_dims = kl_per_dim(mean, logvar)
    return recon, kl_dims, kl_dims.sum()


def beta_vae(x, logits, mean, logvar, z, step, *, likelihood, beta):
    recon, kl_dims, kl = _base(x, logits, mean, logvar, likelihood)
    return {"loss": recon + beta * kl, "reconstruction": recon, "kl": kl, "kl_dims": kl_dims}


def annealed_vae(x, logits, mean, logvar, z, step, *, likelihood, gamma, capacity_max, capacity_steps):
    recon, kl_dims, kl = _base(x, logits, mean, logvar, likelihood)
    cap = capacity(step, capacity_max, capacity_steps)
    return {"loss": recon + gamma * (kl - cap).abs(), "reconstruction": recon, "kl": kl, "kl_dims": kl_dims}


def gaussian_log_density(samples, mean, logvar):
    """log N(samples; mean, exp(logvar)), elementwise (dlib's gaussian_log_density)."""
    diff = samples - mean
    return -0.5 * (diff * diff * torch.exp(-logvar) + logvar + math.log(2.0 * math.pi))


def total_correlation(z, mean, logvar):
    """dlib's minibatch TC estimate: mean over j of log q(z_j) − Σ_l log q(z_jl), with
    log q(z_j) ≈ logsumexp_i log q(z_j | x_i) and log q(z_jl) ≈ logsumexp_i log q(z_jl | x_i),
    the constants (log of batch and dataset size) dropped as dlib drops them; so for n
    identical posteriors it is −(D − 1)·log n less than the true TC, and can be negative."""
    log_q = gaussian_log_density(z.unsqueeze(1), mean.unsqueeze(0), logvar.unsqueeze(0))   # [j, i, l]
    log_qz_product = torch.logsumexp(log_q, dim=1).sum(dim=1)
    log_qz = torch.logsumexp(log_q.sum(dim=2), dim=1)
    return (log_qz - log_qz_product).mean()


def beta_tcvae(x, logits, mean, logvar, z, step, *, likelihood, beta):
    recon, kl_dims, kl = _base(x, logits, mean, logvar, likelihood)
    tc = total_correlation(z, mean, logvar)
    return {"loss": recon + ((beta - 1.0) * tc + kl), "reconstruction": recon, "kl": kl, "kl_dims": kl_dims,
            "tc": tc}


def shuffle_codes(z, generator: torch.Generator):
    """z with each latent dimension permuted independently across the batch (dlib's
    shuffle_codes, tf.random_shuffle per column); the permutations come from the CPU
    ``generator``, so they are the same on every device."""
    n, d = z.shape
    perm = torch.stack([torch.randperm(n, generator=generator) for _ in range(d)], dim=1).to(z.device)
    return torch.gather(z, 0, perm)


def factor_vae(x, logits, mean, logvar, z, step, *, likelihood, gamma, discriminator, z_shuffled):
    """FactorVAE as dlib's FactorVAE.model_fn: the discriminator sees the sampled z (not
    the mean) and its per-dimension shuffle ``z_shuffled``. Returns the VAE's ``loss``
    and the discriminator's ``discriminator_loss`` (to minimise over its weights only);
    the caller must keep each update on its own parameters (see Trainer)."""
    recon, kl_dims, kl = _base(x, logits, mean, logvar, likelihood)
    logits_z, probs_z = discriminator(z)
    logits_s, probs_s = discriminator(z_shuffled)
    tc = (logits_z[:, 0] - logits_z[:, 1]).mean()
    disc_objective = 0.5 * probs_z[:, 0].log().mean() + 0.5 * probs_s[:, 1].log().mean()
    with torch.no_grad():
        accuracy = 0.5 * ((logits_z.argmax(1) == 0).float().mean() + (logits_s.argmax(1) == 1).float().mean())
    return {"loss": recon + kl + gamma * tc, "reconstruction": recon, "kl": kl, "kl_dims": kl_dims,
            "tc": tc, "discriminator_loss": -disc_objective, "discriminator_accuracy": accuracy}


def dip_penalties(cov):
    """(Σ_{i≠j} C_ij², Σ_i (C_ii − 1)²) of a (D, D) covariance matrix."""
    diag = torch.diagonal(cov)
    off = cov - torch.diag(diag)
    return off.square().sum(), (diag - 1.0).square().sum()


def covariance(mean):
    """Cov_batch[mean] = E[m mᵀ] − E[m] E[m]ᵀ (1/n, dlib's compute_covariance_z_mean)."""
    e_mm = (mean.unsqueeze(2) * mean.unsqueeze(1)).mean(dim=0)
    e_m = mean.mean(dim=0)
    return e_mm - e_m.unsqueeze(1) * e_m.unsqueeze(0)


def dip_vae(x, logits, mean, logvar, z, step, *, likelihood, lambda_od, dip_type):
    recon, kl_dims, kl = _base(x, logits, mean, logvar, likelihood)
    cov = covariance(mean)
    if dip_type == "ii":
        cov = torch.diag(logvar.exp().mean(dim=0)) + cov
    off, diag = dip_penalties(cov)
    lambda_d = DIP_LAMBDA_D_FACTOR[f"dip-vae-{dip_type}"] * lambda_od
    return {"loss": recon + (kl + (lambda_od * off + lambda_d * diag)), "reconstruction": recon, "kl": kl,
            "kl_dims": kl_dims, "dip_off_diagonal": off, "dip_diagonal": diag}


class FactorVAEDiscriminator:
    """FactorVAE's extra trained state: the discriminator, its own Adam
    (:data:`DISCRIMINATOR_ADAM`) and a CPU generator for the per-dimension shuffles, all
    three checkpointed. The training loop asks it for the loss's extra inputs
    (:meth:`loss_inputs`) and lets it run the backward passes (:meth:`backward`)."""

    def __init__(self, config, device):
        from disentangle.models.architectures import build_discriminator
        # seeds of their own (spawned, so the VAE's three seeds stay what they were)
        d_seed, s_seed = np.random.SeedSequence(config.seed).spawn(1)[0].generate_state(2)
        self.discriminator = build_discriminator(config.latent_dim, int(d_seed)).to(device)
        self.optimizer = torch.optim.Adam(self.discriminator.parameters(), **DISCRIMINATOR_ADAM)
        self.shuffle_generator = torch.Generator(device="cpu")
        self.shuffle_generator.manual_seed(int(s_seed))

    def loss_inputs(self, z) -> dict:
        return {"discriminator": self.discriminator, "z_shuffled": shuffle_codes(z, self.shuffle_generator)}

    def backward(self, model, terms) -> None:
        """dlib: two minimize ops on one forward pass, each on its own var_list: the VAE
        loss moves only encoder/decoder weights (its gradient flows through the
        discriminator into z, not into the discriminator's weights), the discriminator
        loss only the discriminator's; both at the same parameters. The caller zeroed
        the VAE's gradients and steps its optimizer afterwards."""
        self.optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward(inputs=list(model.parameters()), retain_graph=True)
        terms["discriminator_loss"].backward(inputs=list(self.discriminator.parameters()))
        self.optimizer.step()

    def state_dict(self) -> dict:
        """Checkpoint entries (the keys checkpoints have always used)."""
        return {"discriminator": self.discriminator.state_dict(),
                "discriminator_optimizer": self.optimizer.state_dict(),
                "rng_shuffle": self.shuffle_generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["discriminator_optimizer"])
        self.shuffle_generator.set_state(state["rng_shuffle"])

    def model_record(self) -> dict:
        """config.json["model"] entries."""
        from disentangle.models.architectures import parameter_count
        return {"discriminator_parameters": parameter_count(self.discriminator)}


def method_terms(method: str, x, logits, mean, logvar, z, step: int, *, likelihood: str,
                 hyper: dict, **inputs) -> dict:
    """The loss terms of ``method`` (an alias allowed) with hyper-parameters ``hyper`` (a
    dict holding at least the ones its registry entry reads) and the extra ``inputs``
    of its trained state (factor-vae: discriminator, z_shuffled)."""
    entry = method_registry.get(method)
    h = {k: hyper[k] for k in entry.reads}
    inputs = {k: v for k, v in inputs.items() if v is not None}
    return entry.loss_function()(x, logits, mean, logvar, z, step, likelihood=likelihood, **h,
                                 **entry.loss_settings, **inputs)
