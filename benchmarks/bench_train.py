"""Training throughput: the toolkit's training step against a plain PyTorch loop of the
same architecture, timed in ONE run, interleaved, so both see the same machine load.

The plain loop is what a researcher would write first: a TensorDataset of uint8 images,
DataLoader(shuffle=True, batch_size=64), float32, BCE-with-logits summed per image plus
β·KL, Adam 1e-4, torch's default threads. The toolkit runs `disentangle.train.Trainer`
(channels_last model, bit-packed batches unpacked on the fly, seeded generators) in
float32 and in bf16-mixed precision. All models start from the same weights, so the
losses at the end are comparable (different batches and noise: they agree within noise).

    .venv/bin/python benchmarks/bench_train.py [--threads N] [--blocks 6] [--block-steps 10]

Prints img/s (median and best over the blocks, wall clock; and images per CPU-second),
the ratio to the plain loop, the thread count, and the mean loss of the last blocks.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def plain_model(latent_dim: int = 10):
    """The Burgess et al. 2018 network written out plainly (nn.Sequential, NCHW)."""
    from torch import nn

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
                nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
                nn.Flatten(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                nn.Linear(256, 2 * latent_dim))
            self.dec = nn.Sequential(
                nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                nn.Linear(256, 512), nn.ReLU(), nn.Unflatten(1, (32, 4, 4)),
                nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),
                nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    return Plain()


class PlainLoop:
    name = "plain (DataLoader, fp32)"

    def __init__(self, images_u8: np.ndarray, init_state: list, beta: float, seed: int):
        import torch
        from torch.utils.data import DataLoader, TensorDataset
        self.torch = torch
        self.model = plain_model()
        with torch.no_grad():
            for p, v in zip(self.model.parameters(), init_state, strict=True):
                p.copy_(v)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        g = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(TensorDataset(torch.from_numpy(images_u8).unsqueeze(1)), batch_size=64,
                                 shuffle=True, drop_last=True, generator=g)
        self.it = iter(self.loader)
        self.beta = beta

    def _batch(self):
        try:
            return next(self.it)[0]
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)[0]

    def step(self) -> float:
        torch, F = self.torch, self.torch.nn.functional
        x = self._batch().float()
        stats = self.model.enc(x)
        mean, logvar = stats[:, :10], stats[:, 10:]
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        logits = self.model.dec(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / x.shape[0]
        kl = 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(dim=1).mean()
        loss = recon + self.beta * kl
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()


class ToolkitLoop:
    def __init__(self, packed: np.ndarray, precision: str, beta: float, seed: int):
        from disentangle.config import TrainConfig
        from disentangle.train import PackedBatches, Trainer
        self.name = f"toolkit ({precision})"
        self.config = TrainConfig(beta=beta, seed=seed, device="cpu", precision=precision).validate()
        self.trainer = Trainer(self.config, "cpu")
        self.batches = PackedBatches(packed, "cpu", self.trainer.batch_seed)

    def init_state(self) -> list:
        return [p.detach().clone() for p in self.trainer.model.parameters()]

    def step(self) -> float:
        return float(self.trainer.step(self.batches.sample(64), 0.0)[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="dataset file (default: the dataset rule)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--blocks", type=int, default=6, help="timed blocks per method, interleaved")
    ap.add_argument("--block-steps", type=int, default=10, help="training steps per timed block")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps per method first")
    ap.add_argument("--plain-images", type=int, default=65536,
                    help="images in the plain loop's uint8 dataset (the full one would be 3 GB)")
    ap.add_argument("--beta", type=float, default=4.0)
    ap.add_argument("--precisions", default="float32,bf16-mixed")
    args = ap.parse_args()

    import torch
    from disentangle.data.dsprites import load_dsprites
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = load_dsprites(args.data)
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(data.num_images, size=min(args.plain_images, data.num_images), replace=False))
    toolkits = [ToolkitLoop(data.packed, p, args.beta, seed=0) for p in args.precisions.split(",")]
    plain = PlainLoop(data.images(subset), toolkits[0].init_state(), args.beta, seed=0)
    methods = [plain] + toolkits

    print(f"data: {data.path} ({data.source_label}, {data.num_images} images); plain loop on "
          f"{len(subset)} of them as uint8")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch 64, "
          f"{args.blocks} interleaved blocks x {args.block_steps} steps per method", flush=True)
    for m in methods:
        for _ in range(args.warmup):
            m.step()
    wall = {m.name: [] for m in methods}
    cpu = {m.name: [] for m in methods}
    losses = {m.name: [] for m in methods}
    for _ in range(args.blocks):
        for m in methods:
            t0, c0 = time.perf_counter(), time.process_time()
            block = [m.step() for _ in range(args.block_steps)]
            t1, c1 = time.perf_counter(), time.process_time()
            n = args.block_steps * 64
            wall[m.name].append(n / (t1 - t0))
            cpu[m.name].append(n / (c1 - c0))
            losses[m.name].extend(block)

    base = statistics.median(wall[plain.name])
    base_cpu = statistics.median(cpu[plain.name])
    tail = max(1, 2 * args.block_steps)
    print(f"\n{'method':28s} {'img/s median':>12s} {'best':>7s} {'ratio':>6s}   {'img/CPU-s':>9s} {'ratio':>6s}"
          f"   loss (last {tail} steps)")
    for m in methods:
        med, best = statistics.median(wall[m.name]), max(wall[m.name])
        cmed = statistics.median(cpu[m.name])
        print(f"{m.name:28s} {med:12.0f} {best:7.0f} {med / base:5.2f}x   {cmed:9.0f} {cmed / base_cpu:5.2f}x"
              f"   {statistics.mean(losses[m.name][-tail:]):.1f}")
    print(f"(threads {torch.get_num_threads()}; ratio = median img/s over the plain loop's, same run)")


if __name__ == "__main__":
    main()
