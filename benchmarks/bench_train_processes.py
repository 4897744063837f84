"""Training throughput of ONE process at a given thread count (the toolkit's Trainer.step,
demo settings: burgess, batch 64, Adam 5e-4). Start it twice at once to compare one
process with two threads against two one-thread processes (docs/performance.md):

    OMP_NUM_THREADS=2 python benchmarks/bench_train_processes.py --threads 2 --steps 25
    OMP_NUM_THREADS=1 python benchmarks/bench_train_processes.py --threads 1 --steps 25 &
    OMP_NUM_THREADS=1 python benchmarks/bench_train_processes.py --threads 1 --steps 25

Prints img/s (wall), images per CPU-second, ms per step and the load average.
"""
from __future__ import annotations

import argparse
import os
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=25, help="timed steps (after 3 warm-up steps)")
    ap.add_argument("--data", default=None, help="dataset file (default: the dataset rule)")
    args = ap.parse_args()
    import torch

    from disentangle.config import TrainConfig
    from disentangle.data.dsprites import load_dsprites
    from disentangle.train import PackedBatches, Trainer
    torch.set_num_threads(args.threads)
    data = load_dsprites(args.data)
    cfg = TrainConfig(method="beta-vae", beta=4.0, seed=0, device="cpu", batch_size=64, lr=5e-4).validate()
    trainer = Trainer(cfg, "cpu")
    batches = PackedBatches(data.packed, "cpu", trainer.batch_seed)
    for t in range(3):
        trainer.step(batches.sample(64), t)
    t0, c0 = time.perf_counter(), time.process_time()
    for t in range(3, 3 + args.steps):
        float(trainer.step(batches.sample(64), t)[0])   # the CPU loop's per-step loss read
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"arch {cfg.architecture} threads {torch.get_num_threads()}: {args.steps * 64 / wall:.0f} img/s wall, "
          f"{args.steps * 64 / cpu:.0f} img/CPU-s, {wall / args.steps * 1000:.0f} ms/step, "
          f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)


if __name__ == "__main__":
    main()
