"""Seconds of the full `info` evaluation of one model on a full-size dataset (codes
table already built), against the straightforward implementation of the same I_q /
total-correlation estimator with the same samples (same M), and the ratio.

    python benchmarks/bench_info.py                      # randomly initialised BetaVAE
    python benchmarks/bench_info.py --run results/RUN    # a trained run (model.pt)

Without --run, a randomly initialised BetaVAE (seed 0, 10 latents) is saved under
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
    from disentangle.models.vae import build_model
    from disentangle.results import MODEL_FILE, write_json_atomic
    out.mkdir(parents=True, exist_ok=True)
    if not (out / MODEL_FILE).is_file():
        model = build_model(10, "bernoulli", seed=0)
        torch.save(model.state_dict(), out / MODEL_FILE)
        write_json_atomic(out / "config.json", {"config": {"latent_dim": 10, "likelihood": "bernoulli"},
                                                "note": "randomly initialised BetaVAE for bench_info.py"})
    return out


def _load(run: Path, random_init: bool):
    import torch
    if random_init:
        from disentangle.models.vae import BetaVAE
        model = BetaVAE(10, "bernoulli")
        model.load_state_dict(torch.load(run / "model.pt", weights_only=True))
        return model.eval()
    from disentangle.train import load_model
    return load_model(run)[0].eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data" / "dsprites-rendered.h5"))
    ap.add_argument("--run", default=None, help="trained run directory (default: a randomly initialised model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-baseline", action="store_true")
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
    what = "randomly initialised BetaVAE (seed 0)" if random_init else f"trained run {run}"
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
        # same estimator, same samples: the rng of information_scores' I_q stream
        rng_iq, _ = np.random.default_rng(args.seed).spawn(2)
        t0 = time.perf_counter()
        ref = info.mutual_information(codes.mean, codes.logvar, rng_iq, reference=True,
                                      se_target=info.DEFAULT_PARAMS["iq_se_target"],
                                      min_samples=info.DEFAULT_PARAMS["iq_min_samples"],
                                      max_samples=info.DEFAULT_PARAMS["iq_max_samples"])
        base = time.perf_counter() - t0
        print(f"BASELINE I_q/TC estimator (float64 broadcast per 1,024-posterior chunk, torch.logsumexp), "
              f"M = {ref['i_q_samples']:,}: {base:.1f} s vs {v['seconds_i_q']:.1f} s -> "
              f"{base / v['seconds_i_q']:.1f}x")
        print(f"  agreement: I_q {ref['i_q_nats']:.6f} vs {v['i_q_nats']:.6f}, TC {ref['total_correlation_nats']:.6f} "
              f"vs {v['total_correlation_nats']:.6f}")
        base_total = total - v["seconds_i_q"] + base
        print(f"  whole evaluation with the baseline estimator: {base_total:.1f} s vs {total:.1f} s -> "
              f"{base_total / total:.1f}x")


if __name__ == "__main__":
    main()
