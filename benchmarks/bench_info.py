"""Seconds of the full `info` evaluation of one model on a full-size dataset (codes
table already built), against the straightforward implementation of the same I_q /
total-correlation estimator with the same samples (same M), and the ratio.

    python benchmarks/bench_info.py                      # randomly initialised VAE
    python benchmarks/bench_info.py --run results/RUN    # a trained run (model.pt)

Without --run, a randomly initialised VAE (seed 0, 10 latents) is saved under
results/bench-info-random/ and its codes table is built once (minutes on a CPU; reused
afterwards). Its posteriors are all near N(0, 1), so its I_q is tiny and needs few
samples: pass a trained run to time a realistic sample count.

Printed: dataset, model, threads; H(X) cold (computed) and warm (cache); the full
evaluation with its breakdown; the baseline estimator's seconds for the same samples and
the ratio; decoder throughput and what a whole-dataset distortion pass would cost.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _random_run(out: Path) -> Path:
    import torch
    from disentangle.io import MODEL_FILE, write_json_atomic
    from disentangle.models.architectures import build_model
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MODEL_FILE).is_file():
        model = build_model(10, "bernoulli", seed=0)
        torch.save(model.state_dict(), out / MODEL_FILE)
        write_json_atomic(out / "config.json", {"config": {"latent_dim": 10, "likelihood": "bernoulli"},
                                                "note": "randomly initialised VAE for bench_info.py"})
    return out


def _load(run: Path, random_init: bool):
    import torch
    if random_init:
        from disentangle.models.architectures import VAE
        model = VAE(10, "bernoulli")
        model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
        return model.eval()
    from disentangle.rundir import load_model
    return load_model(run)[0].eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "dsprites-rendered.h5"))
    ap.add_argument("--run", default=None, help="trained run directory (default: a randomly initialised model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--baseline-fraction", type=int, default=1,
                    help="time the baseline on N/k posteriors and scale by k (its cost is linear in N)")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from disentangle.data.dsprites import DSpritesData
    from disentangle.evaluation import information as info
    from disentangle.evaluation.codes import get_codes

    t0 = time.perf_counter()
    data = DSpritesData(args.data)
    print(f"dataset  {data.path} ({data.source_label}), N = {data.num_images:,}, loaded in "
          f"{time.perf_counter() - t0:.1f} s")
    random_init = args.run is None
    run = _random_run(ROOT / "results" / "bench-info-random") if random_init else Path(args.run)
    model = _load(run, random_init)
    what = "randomly initialised VAE (seed 0)" if random_init else f"trained run {run}"
    print(f"model    {what}; likelihood {model.likelihood}, latent_dim {model.latent_dim}")
    print(f"threads  torch {torch.get_num_threads()} (machine has {os.cpu_count()} cores, shared)")
    t0 = time.perf_counter()
    codes = get_codes(run, data, progress=True, model=model)
    print(f"codes    {'built' if codes.built else 'read'} in {time.perf_counter() - t0:.1f} s")

    # H(X): cold (a fresh cache directory) and warm
    with tempfile.TemporaryDirectory() as tmp:
        os.environ[info.CACHE_ENV_VAR] = tmp
        t0 = time.perf_counter()
        hx = info.dataset_entropy(data)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        info.dataset_entropy(data)
        warm = time.perf_counter() - t0
        print(f"H(X)     {hx['entropy_nats']:.6f} nats ({hx['num_distinct']:,} distinct images, "
              f"multiplicities {hx['multiplicities']}); computed in {cold:.2f} s, cached read {warm:.3f} s")

        # the full evaluation, as `disentangle evaluate --metric info` runs it (H(X) cached)
        t0 = time.perf_counter()
        v = info.information_scores(model, codes, data, np.random.default_rng(args.seed))
        total = time.perf_counter() - t0
    print()
    print(info.format_summary(v))
    print()
    parts = ", ".join(f"{k[8:]} {v[k]:.1f} s" for k in v if k.startswith("seconds_"))
    print(f"FULL info evaluation: {total:.1f} s  ({parts})")
    print(f"  I_q: M = {v['i_q_samples']:,} samples (chosen for SE <= {info.DEFAULT_PARAMS['iq_se_target']} nats), "
          f"SE = {v['i_q_se_nats']:.4f} nats; M x N x D = "
          f"{v['i_q_samples'] * data.num_images * model.latent_dim:.3g} log-densities")
    dec_rate = v["distortion_images"] / v["seconds_distortion"]
    print(f"  distortion: {v['distortion_images']:,} images at {dec_rate:.0f} images/s; all "
          f"{data.num_images:,} would take ~{data.num_images / dec_rate:.0f} s here (distortion_images='all')")

    if not args.skip_baseline:
        # the same estimator both ways, on the same M samples: the fast tiled pass against
        # the straightforward one (float64 (M, chunk, D) broadcast, torch.logsumexp per
        # chunk). The cost is linear in N, so --baseline-fraction k times the baseline on
        # the first N/k posteriors (and says so); k = 1 runs it over all N.
        n, m = data.num_images, v["i_q_samples"]
        rng = np.random.default_rng(args.seed + 1)
        idx = rng.integers(0, n, size=m)
        z = info.sample_posterior(codes.mean, codes.logvar, idx, rng)
        post = info.AggregatePosterior(codes.mean, codes.logvar)
        t0 = time.perf_counter()
        joint, marg = post.log_densities(z, idx)
        fast = time.perf_counter() - t0
        cols = n // args.baseline_fraction
        t0 = time.perf_counter()
        joint_ref, marg_ref = info.log_aggregate_reference(z, codes.mean[:cols], codes.logvar[:cols])
        base = (time.perf_counter() - t0) * n / cols
        how = "all N posteriors" if cols == n else f"the first N/{args.baseline_fraction} posteriors, x{n / cols:g}"
        print(f"BASELINE aggregate-posterior pass, M = {m:,} samples x N = {n:,} x D = {model.latent_dim}: "
              f"straightforward {base:.1f} s ({how}) vs tiled {fast:.1f} s -> {base / fast:.1f}x")
        if cols == n:
            print(f"  agreement on the same samples: max |log q(z)| diff {np.abs(joint - joint_ref).max():.2e}, "
                  f"max |log q(z_j)| diff {np.abs(marg - marg_ref).max():.2e} nats")
        base_total = total - v["seconds_i_q"] + v["seconds_i_q"] * base / fast
        print(f"  whole info evaluation with the straightforward pass: ~{base_total:.0f} s vs {total:.1f} s -> "
              f"{base_total / total:.1f}x")

if __name__ == "__main__":
    main()
