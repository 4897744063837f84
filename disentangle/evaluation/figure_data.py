"""What a run's figures show, computed: KL per latent dimension, latent traversal grids,
reconstructions and their distortions. :mod:`disentangle.plots` only draws these arrays.

Images are float32 ``(n, C, 64, 64)`` in [0, 1] whatever the dataset (C = 1: dSprites and
the other grey sets, drawn grey; C = 3: the colour sets, CelebA and RGB image folders,
drawn in colour). Traversals start from real images of the dataset (their posterior
means), never only from z = 0.

The formulas are the information package's: the KL per dimension is
:func:`~disentangle.evaluation.information.gaussian.rate_per_dim` (the ``info`` metric's
``kl_dim_*``), a reconstruction's distortion is
:func:`~disentangle.evaluation.information.distortion.reconstruction_nll`.

KL per dimension comes from the run's codes table (every image). A stale table (model.pt
or the dataset changed) is rebuilt with a progress bar after a message saying why; with
no table at all the KL is estimated from a random sample of ``KL_SAMPLE_IMAGES`` images,
and the result says so (:attr:`KLPerDimension.description`), so a figure never shows a
sample estimate as the dataset's.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Callable

import numpy as np

from disentangle.evaluation.information.distortion import reconstruction_nll
from disentangle.evaluation.information.gaussian import rate_per_dim
from disentangle.rundir import RunDir

TRAVERSAL_SPAN = 3.0      # sweep each latent over ±3 prior standard deviations (Higgins et al.)
KL_SAMPLE_IMAGES = 8192   # images encoded to rank dimensions by KL when no codes table exists


def echo_stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class KLPerDimension:
    """Mean KL(q(z_d|x) ‖ N(0,1)) per latent dimension (nats, (D,) float64), over
    ``num_images`` images; ``sampled``: a random sample (no codes table), not every image."""

    kl: np.ndarray
    num_images: int
    sampled: bool

    @property
    def description(self) -> str:
        if self.sampled:
            return f"a random sample of {self.num_images:,} images (no codes table)"
        return f"{self.num_images:,} images"


@dataclass
class Traversals:
    """Latent traversals of ``indices`` (n,): ``grids`` (n, len(order), steps, C, 64, 64)
    decoded images with dimension ``order[r]`` set to each of ``values`` and the others at
    the image's posterior mean; ``originals`` and ``reconstructions`` (n, C, 64, 64)."""

    run_name: str
    data_label: str
    kl: KLPerDimension
    order: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    span: float
    originals: np.ndarray
    reconstructions: np.ndarray
    grids: np.ndarray


@dataclass
class Reconstructions:
    """Images ``indices`` (n,): ``originals`` and ``reconstructions`` from the posterior
    mean (n, C, 64, 64), and each one's distortion −log p(x|z) (nats, (n,)) under the run's
    ``likelihood``."""

    run_name: str
    data_label: str
    indices: np.ndarray
    originals: np.ndarray
    reconstructions: np.ndarray
    distortion: np.ndarray
    likelihood: str


def kl_per_dimension(run_dir: "RunDir | str | os.PathLike", model, data, device: str = "cpu",
                     rng: np.random.Generator | None = None,
                     echo: Callable[[str], None] = echo_stderr) -> KLPerDimension:
    """KL per dimension of the run's encoder on ``data`` (see the module docstring for
    where it comes from); ``echo`` gets a message before a stale table is rebuilt or a
    sample is encoded instead of a missing one."""
    from disentangle.evaluation.codes import BatchEncoder, codes_state, get_codes, read_codes
    run = RunDir.of(run_dir)
    state = codes_state(run, data)
    if state == "missing":
        rng = rng or np.random.default_rng(0)
        n = min(KL_SAMPLE_IMAGES, data.num_images)
        idx = np.sort(rng.choice(data.num_images, size=n, replace=False))
        echo(f"{run.codes_path}: missing; KL per dimension from a random sample of {n:,} images "
             f"(`disentangle evaluate {run.path}` builds the table)")
        mean, logvar = BatchEncoder(model, device).encode_indices(data, idx)
        return KLPerDimension(rate_per_dim(mean, logvar), n, sampled=True)
    if state == "fresh":
        codes = read_codes(run.codes_path)
    else:
        echo(f"{run.codes_path}: {state}; re-encoding all {data.num_images:,} images for the KL per dimension")
        codes = get_codes(run, data, device=device, progress=True, model=model)
    return KLPerDimension(rate_per_dim(codes.mean, codes.logvar), codes.num_images, sampled=False)


def _as_nchw(images) -> np.ndarray:
    """Images as float32 (n, C, 64, 64): a grey set's (n, 64, 64) gets its channel axis."""
    images = np.asarray(images, dtype=np.float32)
    return np.ascontiguousarray(images[:, None] if images.ndim == 3 else images)


def _to_images(model, logits) -> np.ndarray:
    """Decoder output as images in [0, 1] (the model's mean reconstruction), (n, C, 64, 64)."""
    import torch
    recon = getattr(model, "reconstruct_mean", None)
    probs = recon(logits) if recon is not None else torch.sigmoid(logits)
    return probs.detach().float().cpu().numpy()


def _open(run_dir, data, device):
    run = RunDir.of(run_dir).require_dir()   # opened once: config read and model hashed once
    data = run.dataset(data, require_training_data=True)
    model, config = run.load_model(device)
    return run, data, model, config


def traversals(run_dir: "RunDir | str | os.PathLike", data=None, n_images: int = 3, steps: int = 9,
               span: float = TRAVERSAL_SPAN, seed: int = 0, device: str = "cpu", max_dims: int | None = None,
               echo: Callable[[str], None] = echo_stderr) -> Traversals:
    """For ``n_images`` base images (drawn with ``seed``), each latent dimension set to
    ``steps`` values evenly spaced over [−span, span] (prior standard deviations) while the
    others keep the image's posterior mean; dimensions sorted by KL, most informative
    first (at most ``max_dims``). ``data``: a dataset, its path, or None (the run's)."""
    run, data, model, _ = _open(run_dir, data, device)
    kl = kl_per_dimension(run, model, data, device=device, rng=np.random.default_rng(seed + 1), echo=echo)
    return traversals_of(model, data, kl, run.path.name, n_images=n_images, steps=steps, span=span, seed=seed,
                         device=device, max_dims=max_dims)


def traversals_of(model, data, kl: KLPerDimension, run_name: str, n_images: int = 3, steps: int = 9,
                  span: float = TRAVERSAL_SPAN, seed: int = 0, device: str = "cpu",
                  max_dims: int | None = None) -> Traversals:
    """:func:`traversals` of any ``model`` with ``encode``/``decode`` (logits), its
    dimensions ranked by ``kl``."""
    import torch
    rng = np.random.default_rng(seed)
    order = np.argsort(-kl.kl, kind="stable")
    if max_dims is not None:
        order = order[:max_dims]
    idx = np.sort(rng.choice(data.num_images, size=n_images, replace=False))
    values = np.linspace(-span, span, steps)
    originals = _as_nchw(data.images(idx))
    with torch.no_grad():
        x = torch.from_numpy(originals).to(device)
        mean, _ = model.encode(x)
        recon = _to_images(model, model.decode(mean))
        grids = []
        for b in range(n_images):
            z = mean[b].repeat(len(order) * steps, 1)
            for r, d in enumerate(order):
                z[r * steps:(r + 1) * steps, int(d)] = torch.as_tensor(values, dtype=z.dtype, device=z.device)
            grids.append(_to_images(model, model.decode(z)).reshape(len(order), steps, *originals.shape[1:]))
    return Traversals(run_name=run_name, data_label=data.source_label, kl=kl, order=order, indices=idx,
                      values=values, span=float(span), originals=originals, reconstructions=recon,
                      grids=np.stack(grids))


def reconstructions(run_dir: "RunDir | str | os.PathLike", data=None, n_images: int = 10, seed: int = 0,
                    device: str = "cpu") -> Reconstructions:
    """``n_images`` images drawn with ``seed``, their reconstructions from the posterior
    mean and each one's distortion −log p(x|z) (nats)."""
    run, data, model, config = _open(run_dir, data, device)
    likelihood = getattr(model, "likelihood", None) or config.get("likelihood", "bernoulli")
    return reconstructions_of(model, data, run.path.name, likelihood, n_images=n_images, seed=seed, device=device)


def reconstructions_of(model, data, run_name: str, likelihood: str, n_images: int = 10, seed: int = 0,
                       device: str = "cpu") -> Reconstructions:
    """:func:`reconstructions` of any ``model`` with ``encode``/``decode`` (logits)."""
    import torch
    idx = np.sort(np.random.default_rng(seed).choice(data.num_images, size=n_images, replace=False))
    originals = _as_nchw(data.images(idx))
    with torch.no_grad():
        x = torch.from_numpy(originals).to(device)
        mean, _ = model.encode(x)
        logits = model.decode(mean)
        recon = _to_images(model, logits)
        nll = reconstruction_nll(logits.float(), x, likelihood,
                                 getattr(model, "log_scale", None)).double().cpu().numpy()
    return Reconstructions(run_name=run_name, data_label=data.source_label, indices=idx,
                           originals=originals, reconstructions=recon, distortion=nll, likelihood=likelihood)
