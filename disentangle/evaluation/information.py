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

Distortion sample: the decoder is the slow part on a CPU (500-700 images/s on two
cores here, so 20-30 min for all 737,280 images). ``distortion_images`` is the number of
images, drawn uniformly without replacement (default 10,000), or "all" for the whole
dataset (one z per image; seconds on a GPU). The reported standard error is
std / sqrt(n) of the per-image NLL; it counts the image-to-image spread too, so it is
an upper bound on the sampling error (also for "all", where only the z noise remains).

Cost of I_q: M x N x D Gaussian log-densities. The pass runs over (rows x columns)
tiles that stay in the CPU caches; per latent dimension one tile of 1-D log-densities
(z - mu)^2 * (-1/2 sigma^2) + c is formed in place (float32, no expanded-square
cancellation), exponentiated and summed for the marginal q(z_j), and added into the
joint log-density, which is exponentiated once relative to the sample's own posterior
density (that term is in the sum, so the sum is >= 1 and never underflows). Sums are
accumulated in float64 across tiles. Rows whose sums are not finite (a posterior far
narrower than the sample's own) are recomputed by the plain max-subtracted float64
log-sum-exp (:func:`log_aggregate_reference`, also the benchmark's baseline).

H(X) cache: one small JSON file per dataset content (``entropy-<content_sha256>.json``)
in ``$DISENTANGLE_CACHE`` if set, else ``$XDG_CACHE_HOME/disentangle``, else
``~/.cache/disentangle``; written atomically; an unwritable cache only costs the
recomputation (about a second for the full dataset).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

LN2 = math.log(2.0)
LOG_2PI = math.log(2.0 * math.pi)
ENTROPY_CACHE_FORMAT = "disentangle-entropy-1"
CACHE_ENV_VAR = "DISENTANGLE_CACHE"
ACTIVE_THRESHOLD_NATS = 0.01   # a dimension is active when its mean KL exceeds this
DEFAULT_PARAMS = {
    "iq_se_target": 0.04,
    "iq_min_samples": 1000,
    "iq_max_samples": 20000,
    "distortion_images": 10000,
    "active_threshold_nats": ACTIVE_THRESHOLD_NATS,
    "decode_batch_size": None,   # None: 64 on a CPU, 1024 on a GPU (docs/performance.md)
}
# Tile of the aggregate-posterior pass: rows (samples) x columns (posteriors). Two float32
# buffers of 256 x 2048 (4 MiB) stay inside L2 + L3 (sizes chosen in docs/performance.md).
ROW_TILE = 256
COL_TILE = 2048
EXP_FLOOR = -87.0   # float32 exp is normal (>= 1.6e-38) above this


def _bits(nats: float) -> float:
    return float(nats) / LN2


# =========================================================================== H(X)
def distinct_image_counts(packed: np.ndarray) -> np.ndarray:
    """How many times each distinct image occurs: int64 counts (sum = N), exact.

    Rows are bucketed by two 64-bit multiplicative hashes of their 64 uint64 words, then
    every pair of rows sharing a hash is compared byte for byte; only if two *different*
    images collided (never seen; probability ~N^2 / 2^128) does it fall back to sorting
    the raw 512-byte rows.
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    n = len(packed)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if packed.shape[1] % 8:
        raise ValueError("packed rows must be a multiple of 8 bytes")
    words = packed.view(np.uint64)
    # fixed odd multipliers: the hash (and so the result) never depends on a seed
    mult = np.random.default_rng(20181210).integers(0, 2**63, size=(2, words.shape[1]),
                                                    dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    h = np.empty((2, n), dtype=np.uint64)
    step = 65536
    for s in range(0, n, step):
        w = words[s:s + step]
        h[0, s:s + step] = (w * mult[0]).sum(axis=1, dtype=np.uint64)   # wraps mod 2^64
        h[1, s:s + step] = (w * mult[1]).sum(axis=1, dtype=np.uint64)
    order = np.lexsort((h[1], h[0]))
    hs = h[:, order]
    same_hash = (hs[0, 1:] == hs[0, :-1]) & (hs[1, 1:] == hs[1, :-1])
    pairs = np.nonzero(same_hash)[0]
    if len(pairs) and not np.array_equal(packed[order[pairs]], packed[order[pairs + 1]]):
        _, counts = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(),
                              return_counts=True)
        return counts.astype(np.int64)
    starts = np.concatenate([[0], np.nonzero(~same_hash)[0] + 1])
    return np.diff(np.concatenate([starts, [n]])).astype(np.int64)


def entropy_from_counts(counts: np.ndarray) -> float:
    """-sum (c/N) log(c/N) in nats, for outcome counts c (N = sum c)."""
    c = np.asarray(counts, dtype=np.float64)
    c = c[c > 0]
    n = c.sum()
    return float(math.log(n) - (c * np.log(c)).sum() / n)


def cache_dir() -> Path:
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "disentangle"


def dataset_entropy(data, cache: bool = True) -> dict:
    """H(X) of the dataset's images (uniform over indices, identical images merged).

    Returns entropy_nats, entropy_bits, num_images, num_distinct, multiplicities
    ({count: number of distinct images seen that often}), cached (whether it came from
    the cache file). Cached per dataset content (see the module docstring).
    """
    from disentangle.results import write_json_atomic
    sha = (getattr(data, "provenance", None) or {}).get("content_sha256")
    path = cache_dir() / f"entropy-{sha}.json" if (cache and sha) else None
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            if (saved.get("format") == ENTROPY_CACHE_FORMAT and saved.get("content_sha256") == sha
                    and saved.get("num_images") == int(data.num_images)):
                return {**{k: saved[k] for k in ("entropy_nats", "entropy_bits", "num_images",
                                                  "num_distinct")},
                        "multiplicities": {int(k): v for k, v in saved["multiplicities"].items()},
                        "cached": True}
        except (OSError, ValueError, KeyError, TypeError):
            pass   # unreadable cache: recompute and overwrite
    counts = distinct_image_counts(data.packed)
    h = entropy_from_counts(counts)
    mult_values, mult_counts = np.unique(counts, return_counts=True)
    result = {"entropy_nats": h, "entropy_bits": _bits(h), "num_images": int(counts.sum()),
              "num_distinct": int(len(counts)),
              "multiplicities": {int(k): int(v) for k, v in zip(mult_values, mult_counts)}}
    if path is not None:
        try:
            write_json_atomic(path, {"format": ENTROPY_CACHE_FORMAT, "content_sha256": sha,
                                     "path": str(getattr(data, "path", "")), **result,
                                     "multiplicities": {str(k): v for k, v in result["multiplicities"].items()}})
        except OSError:
            pass   # a read-only cache costs only the recomputation
    return {**result, "cached": False}


# =========================================================================== rate
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


# =========================================================================== aggregate posterior
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


class AggregatePosterior:
    """q(z) = (1/N) sum_n N(z; mean_n, diag exp(logvar_n)) and its 1-D marginals, held on
    ``device`` as per-dimension coefficient rows: mean (D, N), 1/(sqrt(2) sigma) (D, N) and
    -(log 2 pi + logvar)/2 (D, N), float32."""

    def __init__(self, mean: np.ndarray, logvar: np.ndarray, device="cpu"):
        import torch
        self.n, self.d = mean.shape
        lv = np.asarray(logvar, dtype=np.float64)
        self.device = torch.device(device)
        as_rows = lambda a: torch.from_numpy(np.ascontiguousarray(a.T, dtype=np.float32)).to(self.device)  # noqa: E731
        self.mu = as_rows(np.asarray(mean, dtype=np.float64))
        self.inv_sqrt2_sigma = as_rows(np.exp(-0.5 * lv) / math.sqrt(2.0))
        self.const = as_rows(-0.5 * (LOG_2PI + lv))
        self.mean64 = np.asarray(mean, dtype=np.float64)
        self.logvar64 = lv
        self.fallback_rows = 0

    def log_densities(self, z: np.ndarray, own: np.ndarray, row_tile: int | None = None,
                      col_tile: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(log q(z) (M,), log q_j(z_j) (M, D)), float64, for float32 samples z (M, D)
        drawn from the posteriors of images ``own`` (M,) (the reference term per row)."""
        import torch
        on_gpu = self.device.type != "cpu"
        # CPU: tiles that stay in cache; GPU: tiles large enough to hide kernel launches
        row_tile = int(row_tile or (1024 if on_gpu else ROW_TILE))
        col_tile = int(col_tile or (32768 if on_gpu else COL_TILE))
        z = np.asarray(z, dtype=np.float32)
        m_total = len(z)
        own_joint = gaussian_log_density(z, self.mean64[own], self.logvar64[own]).sum(axis=1)
        joint = np.empty(m_total, dtype=np.float64)
        marg = np.empty((m_total, self.d), dtype=np.float64)
        zt_all = torch.from_numpy(z).to(self.device)
        ref_all = torch.from_numpy(own_joint.astype(np.float32)).to(self.device)
        blocks = [(r0, min(r0 + row_tile, m_total)) for r0 in range(0, m_total, row_tile)]

        def row_block(bounds):
            r0, r1 = bounds
            rows = r1 - r0
            tbuf = torch.empty((rows, col_tile), dtype=torch.float32, device=self.device)
            sbuf = torch.empty((rows, col_tile), dtype=torch.float32, device=self.device)
            zt = zt_all[r0:r1]
            ref = ref_all[r0:r1, None]
            joint_sum = torch.zeros(rows, dtype=torch.float64, device=self.device)
            marg_sum = torch.zeros((self.d, rows), dtype=torch.float64, device=self.device)
            with torch.inference_mode():
                for c0 in range(0, self.n, col_tile):
                    c1 = min(c0 + col_tile, self.n)
                    t = tbuf[:, :c1 - c0]
                    s = sbuf[:, :c1 - c0]
                    for j in range(self.d):
                        # 1-D log-density of every posterior at every sample, in place:
                        # c - ((z - mu) / (sqrt 2 sigma))^2, subtracting before scaling
                        # (no large cancelling terms for narrow posteriors)
                        torch.sub(zt[:, j:j + 1], self.mu[j:j + 1, c0:c1], out=t)
                        t.mul_(self.inv_sqrt2_sigma[j:j + 1, c0:c1])
                        torch.addcmul(self.const[j:j + 1, c0:c1], t, t, value=-1.0, out=t)
                        if j == 0:
                            s.copy_(t)
                        else:
                            s.add_(t)
                        # exp of arguments below -87 takes a much slower path (float32
                        # denormals); such terms are < 1e-38 each, so the floor changes a
                        # row's sum by < N e^-87 (rows near that floor are redone exactly)
                        marg_sum[j] += t.clamp_min_(EXP_FLOOR).exp_().sum(dim=1)
                    joint_sum += s.sub_(ref).clamp_min_(EXP_FLOOR).exp_().sum(dim=1)
                joint[r0:r1] = (joint_sum.log() + ref_all[r0:r1].double()).cpu().numpy()
                marg[r0:r1] = marg_sum.log().T.cpu().numpy()

        workers = torch.get_num_threads() if not on_gpu else 1
        if workers > 1 and len(blocks) > 1:
            # Coarse-grained parallelism: each thread owns whole row blocks and runs its
            # ops single-threaded (torch releases the GIL inside ops). Splitting every
            # small in-cache op across OpenMP threads instead synchronises ~100k times
            # (slower; docs/performance.md).
            from concurrent.futures import ThreadPoolExecutor
            torch.set_num_threads(1)
            try:
                with ThreadPoolExecutor(max_workers=workers) as pool:
                    list(pool.map(row_block, blocks))
            finally:
                torch.set_num_threads(workers)
        else:
            for b in blocks:
                row_block(b)
        # a marginal sum within e^5 of the floor N e^-87 may be floor-dominated
        floor_hit = (marg < EXP_FLOOR + math.log(self.n) + 5.0).any(axis=1)
        joint -= math.log(self.n)
        marg -= math.log(self.n)
        bad = floor_hit | ~(np.isfinite(joint) & np.isfinite(marg).all(axis=1))
        if bad.any():
            # under/overflow in float32: recompute those rows exactly
            self.fallback_rows += int(bad.sum())
            joint[bad], marg[bad] = log_aggregate_reference(z[bad], self.mean64, self.logvar64,
                                                            device=self.device)
        return joint, marg


def log_aggregate_reference(z: np.ndarray, mean: np.ndarray, logvar: np.ndarray, device="cpu",
                            col_chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The straightforward form of :meth:`AggregatePosterior.log_densities`: per column
    chunk, broadcast (M, chunk, D) float64 log-densities and take max-subtracted
    log-sum-exps, combined across chunks. Slow, simple, used as fallback and baseline."""
    import torch
    dev = torch.device(device)
    zt = torch.as_tensor(np.asarray(z, dtype=np.float64), device=dev)
    mu = torch.as_tensor(np.asarray(mean, dtype=np.float64), device=dev)
    lv = torch.as_tensor(np.asarray(logvar, dtype=np.float64), device=dev)
    n = mu.shape[0]
    joint_parts, marg_parts = [], []
    with torch.inference_mode():
        for c0 in range(0, n, col_chunk):
            m, v = mu[c0:c0 + col_chunk], lv[c0:c0 + col_chunk]
            lp = -0.5 * (LOG_2PI + v[None] + (zt[:, None, :] - m[None]) ** 2 * torch.exp(-v)[None])
            joint_parts.append(torch.logsumexp(lp.sum(dim=2), dim=1))
            marg_parts.append(torch.logsumexp(lp, dim=1))
        joint = torch.logsumexp(torch.stack(joint_parts, dim=1), dim=1) - math.log(n)
        marg = torch.logsumexp(torch.stack(marg_parts, dim=2), dim=2) - math.log(n)
    return joint.cpu().numpy(), marg.cpu().numpy()


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
        idx = rng.integers(0, n, size=batch)
        z = sample_posterior(mean, logvar, idx, rng)
        log_cond = gaussian_log_density(z, mean[idx], logvar[idx]).sum(axis=1)
        if reference:
            log_q, log_qj = log_aggregate_reference(z, mean, logvar, device=device)
        else:
            log_q, log_qj = post.log_densities(z, idx)
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


# =========================================================================== distortion
def _model_device(model):
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
    device = _model_device(model)
    batch_size = int(batch_size or (64 if device.type == "cpu" else 1024))
    if device.type == "cpu" and any(p.dim() == 4 for p in model.parameters()):
        # the CPU transposed convolutions run faster in channels_last (docs/performance.md);
        # a private copy, so the caller's model is untouched
        import copy
        model = copy.deepcopy(model)
        if hasattr(model, "set_execution"):   # BetaVAE: channels_last activations too
            model.set_execution(mixed=getattr(model, "mixed", None), channels_last=True)
        else:
            model.to(memory_format=torch.channels_last)
    nll = np.empty(len(idx), dtype=np.float64)
    with torch.inference_mode():
        for s in range(0, len(idx), batch_size):
            b = idx[s:s + batch_size]
            z = sample_posterior(mean, logvar, b, rng)
            x = torch.from_numpy(data.images(b)).to(device).unsqueeze(1).to(torch.float32)
            logits = model.decode(torch.from_numpy(z).to(device))
            nll[s:s + len(b)] = reconstruction_nll(logits.float(), x, likelihood).double().cpu().numpy()
    return {"distortion_nats": float(nll.mean()),
            "distortion_se_nats": float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else float("nan"),
            "distortion_images": int(len(idx)), "likelihood": likelihood}


# =========================================================================== the metric
def check_params(p: dict) -> dict:
    """The info parameters, checked (UserError naming ``--param info.KEY``)."""
    from disentangle.errors import UserError

    def bad(key, want):
        return UserError(f"--param info.{key}={p[key]!r}: expected {want}")

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

    ``codes``: the run's codes table (``.mean``, ``.logvar`` (N, D) in index order);
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
        device = _model_device(model)
    rng_iq, rng_d = rng.spawn(2)   # independent streams: changing one sample size moves nothing else
    seconds = {}

    t0 = time.perf_counter()
    hx = dataset_entropy(data, cache=cache)
    seconds["entropy"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    kl_dims = rate_per_dim(mean, logvar)
    rate = float(kl_dims.sum())
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

    likelihood = dist["likelihood"]
    is_bound = likelihood == "bernoulli"
    h = hx["entropy_nats"]
    d_nats = dist["distortion_nats"]
    i_gen_lower = h - d_nats if is_bound else float("nan")
    threshold = float(p["active_threshold_nats"])
    values = {
        "rate_nats": rate, "rate_bits": _bits(rate),
        "distortion_nats": d_nats, "distortion_bits": _bits(d_nats),
        "distortion_se_nats": dist["distortion_se_nats"], "distortion_images": dist["distortion_images"],
        "entropy_x_nats": h, "entropy_x_bits": hx["entropy_bits"],
        "num_distinct_images": hx["num_distinct"], "log_num_images_nats": math.log(hx["num_images"]),
        "i_gen_lower_nats": i_gen_lower, "i_gen_lower_bits": _bits(i_gen_lower),
        "i_rep_upper_nats": rate, "i_rep_upper_bits": _bits(rate),
        "i_q_nats": mi["i_q_nats"], "i_q_bits": _bits(mi["i_q_nats"]), "i_q_se_nats": mi["i_q_se_nats"],
        "i_q_samples": mi["i_q_samples"],
        "marginal_kl_nats": rate - mi["i_q_nats"], "marginal_kl_bits": _bits(rate - mi["i_q_nats"]),
        "total_correlation_nats": mi["total_correlation_nats"],
        "total_correlation_bits": _bits(mi["total_correlation_nats"]),
        "total_correlation_se_nats": mi["total_correlation_se_nats"],
        "dimension_wise_kl_nats": mi["dimension_wise_kl_nats"],
        "dimension_wise_kl_se_nats": mi["dimension_wise_kl_se_nats"],
        "active_dims": int((kl_dims > threshold).sum()), "active_threshold_nats": threshold,
        **{f"kl_dim_{j}": float(k) for j, k in enumerate(kl_dims)},
        "likelihood": likelihood, "is_bound": bool(is_bound),
        **{f"seconds_{k}": float(v) for k, v in seconds.items()},
    }
    values["sandwich_violations"] = len(sandwich_violations(values))
    return values


# =========================================================================== the summary
def sandwich_violations(v: dict) -> list[str]:
    """Which side of H(X) - D <= I_q <= R an estimate breaks by more than its standard error."""
    out = []
    se_iq = float(v.get("i_q_se_nats") or 0.0)
    if v["i_q_nats"] > v["rate_nats"] + se_iq:
        out.append(f"I_q = {v['i_q_nats']:.3f} exceeds R = {v['rate_nats']:.3f} by more than its "
                   f"standard error ({se_iq:.3f}): a bug or too few samples")
    if v.get("is_bound") and math.isfinite(v["i_gen_lower_nats"]):
        se = math.hypot(se_iq, float(v.get("distortion_se_nats") or 0.0))
        if v["i_gen_lower_nats"] > v["i_q_nats"] + se:
            out.append(f"H(X) - D = {v['i_gen_lower_nats']:.3f} exceeds I_q = {v['i_q_nats']:.3f} by more "
                       f"than the combined standard error ({se:.3f}): a bug or too few samples")
    # I_q <= H(X) always (Z is computed from X); flag only a clear excess (3 SE), since
    # an encoder that separates all images puts I_q right at H(X)
    if v["i_q_nats"] > v["entropy_x_nats"] + 3 * se_iq:
        out.append(f"I_q = {v['i_q_nats']:.3f} exceeds H(X) = {v['entropy_x_nats']:.3f} by more than "
                   f"3 standard errors: a bug")
    return out


def format_summary(v: dict) -> str:
    """Text for the CLI: the quantities in nats and bits and the sandwich H(X) - D <= I_q <= R."""
    def row(name, nats, se=None, note=""):
        se_txt = f" ± {se:.3f}" if se is not None and math.isfinite(se) else ""
        return f"  {name:<26}{nats:>10.3f}{se_txt:<10} nats {_bits(nats):>10.3f} bits  {note}".rstrip()

    bernoulli = bool(v.get("is_bound"))
    lines = ["information (nats; bits = nats / ln 2)",
             row("H(X)", v["entropy_x_nats"], note=f"exact: {int(v['num_distinct_images']):,} distinct images, "
                                                    f"log N = {v['log_num_images_nats']:.3f}"),
             row("distortion D", v["distortion_nats"], v["distortion_se_nats"],
                 note=f"{v['likelihood']} decoder, {int(v['distortion_images']):,} images"),
             row("rate R", v["rate_nats"], note="upper bound on I_rep"),
             row("I_q(X;Z)", v["i_q_nats"], v["i_q_se_nats"],
                 note=f"{int(v['i_q_samples']):,} samples against all posteriors")]
    if bernoulli:
        lines.append(row("H(X) - D", v["i_gen_lower_nats"], v["distortion_se_nats"], note="lower bound on I_gen"))
    else:
        lines.append(f"  {'H(X) - D':<26}{'—':>10}  NOT a bound: the {v['likelihood']} decoder's D is a "
                     f"density, not a probability of the binary image")
    lines += [row("marginal KL R - I_q", v["marginal_kl_nats"], v["i_q_se_nats"]),
              row("total correlation", v["total_correlation_nats"], v["total_correlation_se_nats"]),
              row("dimension-wise KL", v["dimension_wise_kl_nats"], v["dimension_wise_kl_se_nats"])]
    kl = [v[k] for k in sorted((k for k in v if k.startswith("kl_dim_")), key=lambda k: int(k[7:]))]
    lines.append(f"  active dims {int(v['active_dims'])}/{len(kl)} (mean KL > {v['active_threshold_nats']:g} nats); "
                 f"KL per dim: " + " ".join(f"{k:.2f}" for k in kl))
    if bernoulli:
        lines.append(f"  sandwich  H(X) - D <= I_q <= R :  {v['i_gen_lower_nats']:.3f} <= "
                     f"{v['i_q_nats']:.3f} <= {v['rate_nats']:.3f}")
    else:
        lines.append(f"  sandwich  I_q <= R :  {v['i_q_nats']:.3f} <= {v['rate_nats']:.3f}  "
                     f"(no lower bound for a {v['likelihood']} decoder)")
    problems = sandwich_violations(v)
    lines += [f"  WARNING: {p}" for p in problems] or ["  sandwich holds (within standard errors)"]
    return "\n".join(lines)
