"""The aggregate posterior q(z) = (1/N) sum_n q(z|x_n) over all N images: exact log q(z)
and log q_j(z_j) at sample points, by a tiled pass over (samples x posteriors) and a
pool of threads that each own whole row blocks.

The pass runs over (rows x columns) tiles that stay in the CPU caches; per latent
dimension one tile of 1-D log-densities (z - mu)^2 * (-1/2 sigma^2) + c is formed in
place (float32, no expanded-square cancellation), exponentiated and summed for the
marginal q(z_j), and added into the joint log-density, which is exponentiated once
relative to the sample's own posterior density (that term is in the sum, so the sum is
>= 1 and never underflows). Sums are accumulated in float64 across tiles. Rows whose sums
are not finite (a posterior far narrower than the sample's own) are recomputed by the
plain max-subtracted float64 log-sum-exp (:func:`log_aggregate_reference`, also the
benchmark's baseline).
"""
from __future__ import annotations

import math
import threading

import numpy as np

from disentangle.evaluation.information.gaussian import gaussian_log_density
from disentangle.evaluation.information.units import LOG_2PI

# Tile of the aggregate-posterior pass: rows (samples) x columns (posteriors). Two float32
# buffers of 256 x 2048 (4 MiB) stay inside L2 + L3 (sizes chosen in docs/performance.md).
ROW_TILE = 256
COL_TILE = 2048
EXP_FLOOR = -87.0   # float32 exp is normal (>= 1.6e-38) above this


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
                      col_tile: int | None = None, on_rows=None) -> tuple[np.ndarray, np.ndarray]:
        """(log q(z) (M,), log q_j(z_j) (M, D)), float64, for float32 samples z (M, D)
        drawn from the posteriors of images ``own`` (M,) (the reference term per row).
        ``on_rows(k)``, if given, is called as row blocks finish with the rows done so far."""
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
        finished = [0]
        finished_lock = threading.Lock()

        def row_block(bounds):
            self._row_block(zt_all, ref_all, bounds, col_tile, joint, marg)
            if on_rows is not None:
                with finished_lock:
                    finished[0] += bounds[1] - bounds[0]
                    on_rows(finished[0])
        _run_row_blocks(row_block, blocks, parallel=not on_gpu)
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

    def _row_block(self, zt_all, ref_all, bounds, col_tile: int, joint: np.ndarray, marg: np.ndarray) -> None:
        """One row block of :meth:`log_densities`: the sums over all N posteriors of the
        joint and per-dimension densities of samples ``bounds`` = (r0, r1), written into
        rows r0:r1 of ``joint`` and ``marg`` (log, before the 1/N)."""
        import torch
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


def _run_row_blocks(row_block, blocks: list, parallel: bool) -> None:
    """Run ``row_block`` on every block: on a CPU with several torch threads, a pool of
    that many threads each owning whole row blocks, its ops single-threaded (torch
    releases the GIL inside ops); splitting every small in-cache op across OpenMP threads
    instead synchronises ~100k times (slower; docs/performance.md)."""
    import torch
    workers = torch.get_num_threads() if parallel else 1
    if workers > 1 and len(blocks) > 1:
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
