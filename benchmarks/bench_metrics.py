"""Seconds of each metric of issue 13 next to DCI's on a full-size codes table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_metrics.py [--quick] [--seed 0]

Codes: synthetic, 737,280 x 10 float32 in dataset index order (bench_dci.vae_like_codes:
a partly disentangled β-VAE-like code with collapsed dimensions). Every per-model metric
runs at its protocol defaults (``--quick``: every metric, DCI included, with its sample
sizes divided by 10 and DCI-ES with 10 trees, for a check on a loaded machine); the ratio
is metric seconds / DCI seconds measured in the same run. UDR is study-level: timed on 5
models (noisy copies of the codes) at its 1,000 images. Prints threads and load average,
since other processes on the machine change every number.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402

from bench_dci import vae_like_codes  # noqa: E402
from disentangle.data.ground_truth import GroundTruth  # noqa: E402
from disentangle.evaluation.metrics import METRICS, udr  # noqa: E402

NEW = ("modularity_explicitness", "unsupervised", "irs", "dci_es", "infomec")


def quick_params(name: str) -> dict:
    spec = METRICS[name]
    params = {k: max(1, v // 10) for k, v in spec.defaults.items()
              if k in ("num_train", "num_test") and isinstance(v, int)}
    if name == "dci_es":
        params["num_trees"] = 10
    return params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="sample sizes / 10 (a smoke check)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    gt = GroundTruth.dsprites()
    codes = vae_like_codes(gt, args.seed)
    print(f"codes {codes.shape[0]:,} x {codes.shape[1]}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"cpus={os.cpu_count()}, load average before={os.getloadavg()[0]:.2f}; "
          f"{'quick (samples / 10)' if args.quick else 'protocol defaults'}")
    # CPU seconds beside wall seconds: on a loaded machine the CPU ratio is the fair one
    timings, cpu = {}, {}
    for name in ("dci",) + NEW:
        params = quick_params(name) if args.quick else {}
        t0, c0 = time.perf_counter(), time.process_time()
        values = METRICS[name](codes, gt, np.random.default_rng(args.seed), **params)
        timings[name], cpu[name] = time.perf_counter() - t0, time.process_time() - c0
        head = METRICS[name].headline
        print(f"{name:24s} {timings[name]:8.2f} s wall  x{timings[name] / timings['dci']:5.2f} of dci  "
              f"{cpu[name]:8.2f} s CPU  x{cpu[name] / cpu['dci']:5.2f} of dci  "
              f"{head} = {values[head]:.4f}  (load {os.getloadavg()[0]:.2f})", flush=True)
    rng = np.random.default_rng(args.seed)
    n = udr.DEFAULTS["num_data_points"] // (10 if args.quick else 1)
    idx = gt.index_of(gt.sample_classes(n, rng))
    means = [codes[idx] + 0.05 * rng.standard_normal((n, codes.shape[1])) for _ in range(5)]
    kls = [np.full(codes.shape[1], 1.0)] * 5
    t0 = time.perf_counter()
    udr.udr_scores(means, kls, rng)
    seconds = time.perf_counter() - t0
    print(f"{'udr (5 models, study)':24s} {seconds:8.2f} s  x{seconds / timings['dci']:5.2f} of dci  "
          f"(load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
