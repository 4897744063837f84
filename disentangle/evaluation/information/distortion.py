"""Decoding for distortion: D = -E_x E_{q(z|x)} log p(x|z), and the evaluation layer's one
per-image reconstruction NLL (:func:`reconstruction_nll`, also the figures' distortions).

Bernoulli decoder: binary cross-entropy with logits summed over the 4,096 pixels, a proper
discrete negative log-likelihood. Gaussian decoder: -log N(x; sigmoid(logits), 1/2 I), the
density the training loss is a shifted form of
(:data:`disentangle.models.objectives.GAUSSIAN_NLL_OFFSET`).
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


def reconstruction_nll(logits, x, likelihood: str):
    """Per-image -log p(x|z) in nats, summed over pixels: (n,) tensor.

    Bernoulli: binary cross-entropy with logits (a discrete NLL). Gaussian: -log N(x;
    sigmoid(logits), 1/2 I), the density whose shifted form is the training loss."""
    import torch.nn.functional as F
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(dim=1)
    if likelihood == "gaussian":
        from disentangle.models.objectives import GAUSSIAN_NLL_OFFSET
        return (logits.sigmoid() - x).square().flatten(1).sum(dim=1) + GAUSSIAN_NLL_OFFSET
    from disentangle.errors import ParameterError
    raise ParameterError("likelihood", "expected bernoulli or gaussian", value=repr(likelihood))


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
            x = torch.from_numpy(data.images(b)).to(device).unsqueeze(1).to(torch.float32)
            logits = model.decode(torch.from_numpy(z).to(device))
            nll[s:s + len(b)] = reconstruction_nll(logits.float(), x, likelihood).double().cpu().numpy()
    return {"distortion_nats": float(nll.mean()),
            "distortion_se_nats": float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else float("nan"),
            "distortion_images": int(len(idx)), "likelihood": likelihood}

