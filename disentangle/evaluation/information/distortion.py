"""Decoding for distortion: D = -E_x E_{q(z|x)} log p(x|z), and the evaluation layer's one
per-image reconstruction NLL (:func:`reconstruction_nll`, also the figures' distortions).

The likelihoods themselves live in :mod:`disentangle.models.likelihoods` (the training
loss reads the same functions): Bernoulli, a proper discrete NLL of binary pixels;
Gaussian, -log N(x; sigmoid(logits), 1/2 I), a density; the discretised Gaussian and
logistic, proper discrete NLLs of 8-bit pixels with the model's learned log-scale.
"""
from __future__ import annotations

import math

import numpy as np

from disentangle.evaluation.information.gaussian import sample_posterior
from disentangle.progress import report


def model_device(model):
    import torch
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


def reconstruction_nll(logits, x, likelihood, log_scale=None):
    """Per-image -log p(x|z) in nats, summed over pixels: (n,) tensor
    (:func:`disentangle.models.likelihoods.nll_per_image`). ``log_scale``: the model's
    raw log-scale parameter, needed by the discretised likelihoods."""
    from disentangle.models.likelihoods import nll_per_image
    return nll_per_image(logits, x, likelihood, log_scale)


def distortion(model, data, mean: np.ndarray, logvar: np.ndarray, rng: np.random.Generator,
               images="all", batch_size: int | None = None, likelihood: str | None = None) -> dict:
    """D = -E_x E_q log p(x|z): one z ~ q(z|x) per image, decoded on the model's device.

    ``images``: "all" (every dataset image) or a count drawn uniformly without
    replacement. Standard error std/sqrt(n) (an upper bound, see the module docstring)."""
    import torch

    from disentangle.errors import ParameterError
    n_total = len(mean)
    if isinstance(images, str):
        if images != "all":
            raise ParameterError("info.distortion_images", f"must be 'all' or a positive count, got {images!r}")
        idx = np.arange(n_total)
    else:
        count = int(images)
        if count < 2:
            raise ParameterError("info.distortion_images", f"must be at least 2, got {count}")
        idx = np.arange(n_total) if count >= n_total else np.sort(rng.choice(n_total, size=count, replace=False))
    likelihood = likelihood or getattr(model, "likelihood", "bernoulli")
    log_scale = getattr(model, "log_scale", None)
    device = model_device(model)
    from disentangle.evaluation.codes import default_batch_size
    batch_size = int(batch_size or default_batch_size(device))   # the encoder's: one sizing rule
    if device.type == "cpu" and any(p.dim() == 4 for p in model.parameters()):
        # the CPU transposed convolutions run faster in channels_last (docs/performance.md);
        # a private copy, so the caller's model is untouched
        import copy
        model = copy.deepcopy(model)
        if hasattr(model, "set_execution"):   # VAE: channels_last activations too
            model.set_execution(mixed=getattr(model, "mixed", None), channels_last=True)
        else:
            model.to(memory_format=torch.channels_last)
    nll = np.empty(len(idx), dtype=np.float64)
    with torch.inference_mode():
        for s in range(0, len(idx), batch_size):
            report("info: distortion", s, len(idx), "images")
            b = idx[s:s + batch_size]
            z = sample_posterior(mean, logvar, b, rng)
            x = torch.from_numpy(data.images(b)).to(device).to(torch.float32)
            x = x.unsqueeze(1) if x.dim() == 3 else x   # (n, H, W) grey or (n, C, H, W)
            logits = model.decode(torch.from_numpy(z).to(device))
            nll[s:s + len(b)] = reconstruction_nll(logits.float(), x, likelihood, log_scale).double().cpu().numpy()
    return {"distortion_nats": float(nll.mean()),
            "distortion_se_nats": float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else float("nan"),
            "distortion_images": int(len(idx)), "likelihood": likelihood}

