"""Training throughput per method on disentanglement_lib's network: the toolkit's training
step against a plain PyTorch loop of the same architecture and method, timed in ONE run,
interleaved (every block runs each method's plain loop, then its toolkit step), so all
see the same machine load.

The plain loop is what a researcher would write first: a TensorDataset of uint8 images,
DataLoader(shuffle=True, batch_size=64), float32, NCHW, nn.Sequential layers, the
method's loss written out inline (FactorVAE: its discriminator and second Adam, the
shuffle by torch.randperm per dimension), Adam 1e-4, torch's default threads. The toolkit
runs `disentangle.train.Trainer` (architecture dlib, channels_last, bit-packed batches
unpacked on the fly, seeded generators) in float32.

    .venv/bin/python benchmarks/bench_train.py [--quick] [--methods beta-vae,factor-vae]
        [--threads N] [--blocks 4] [--block-steps 10]

Prints img/s per method (median over the blocks, wall clock; and images per CPU-second),
the toolkit/plain ratio, the thread count and the load average before and after.
--quick: 2 blocks of 3 steps, a 4,096-image plain dataset (a smoke run on a busy machine;
its numbers are noisy).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

METHOD_SETTINGS = {"beta-vae": {"beta": 4.0},
                   "annealed-vae": {"gamma": 1000.0, "capacity_max": 25.0, "capacity_steps": 100_000},
                   "beta-tcvae": {"beta": 6.0}, "factor-vae": {"gamma": 30.0},
                   "dip-vae-i": {"lambda_od": 5.0}, "dip-vae-ii": {"lambda_od": 5.0}}


def plain_dlib(latent_dim: int = 10):
    """dlib's conv_encoder/deconv_decoder written plainly (NCHW flatten; padding 1 or 0)."""
    from torch import nn

    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(
                nn.Conv2d(1, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),
                nn.Conv2d(32, 64, 2, 2, 0), nn.ReLU(), nn.Conv2d(64, 64, 2, 2, 0), nn.ReLU(),
                nn.Flatten(), nn.Linear(1024, 256), nn.ReLU())
            self.mean, self.logvar = nn.Linear(256, latent_dim), nn.Linear(256, latent_dim)
            self.dec = nn.Sequential(
                nn.Linear(latent_dim, 256), nn.ReLU(), nn.Linear(256, 1024), nn.ReLU(), nn.Unflatten(1, (64, 4, 4)),
                nn.ConvTranspose2d(64, 64, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, 2, 1), nn.ReLU(),
                nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(32, 1, 4, 2, 1))

    return Plain()


class PlainLoop:
    def __init__(self, method: str, images_u8: np.ndarray, seed: int):
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset
        self.torch, self.method, self.h = torch, method, METHOD_SETTINGS[method]
        self.name = f"{method} plain"
        torch.manual_seed(seed)
        self.model = plain_dlib()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        if method == "factor-vae":
            layers = []
            for i in range(6):
                layers += [nn.Linear(10 if i == 0 else 1000, 1000), nn.LeakyReLU(0.2)]
            self.disc = nn.Sequential(*layers, nn.Linear(1000, 2))
            self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=1e-4, betas=(0.5, 0.9))
        g = torch.Generator().manual_seed(seed)
        self.loader = DataLoader(TensorDataset(torch.from_numpy(images_u8).unsqueeze(1)), batch_size=64,
                                 shuffle=True, drop_last=True, generator=g)
        self.it = iter(self.loader)
        self.t = 0

    def _batch(self):
        try:
            return next(self.it)[0]
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)[0]

    def step(self) -> float:
        torch, F, h = self.torch, self.torch.nn.functional, self.h
        x = self._batch().float()
        e = self.model.enc(x)
        mean, logvar = self.model.mean(e), self.model.logvar(e)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        recon = F.binary_cross_entropy_with_logits(self.model.dec(z), x, reduction="sum") / x.shape[0]
        kl = 0.5 * (mean.pow(2) + logvar.exp() - logvar - 1).sum(dim=1).mean()
        m = self.method
        if m == "beta-vae":
            loss = recon + h["beta"] * kl
        elif m == "annealed-vae":
            c = min(h["capacity_max"], h["capacity_max"] * self.t / h["capacity_steps"])
            loss = recon + h["gamma"] * (kl - c).abs()
        elif m == "beta-tcvae":
            lq = -0.5 * ((z[:, None] - mean[None]) ** 2 / logvar.exp()[None] + logvar[None] + np.log(2 * np.pi))
            tc = (torch.logsumexp(lq.sum(2), 1) - torch.logsumexp(lq, 1).sum(1)).mean()
            loss = recon + kl + (h["beta"] - 1) * tc
        elif m == "factor-vae":
            zs = torch.stack([z[torch.randperm(z.shape[0]), j] for j in range(z.shape[1])], 1)
            lz, ls = self.disc(z), self.disc(zs)
            loss = recon + kl + h["gamma"] * (lz[:, 0] - lz[:, 1]).mean()
            d_loss = -(0.5 * lz.softmax(1)[:, 0].clamp(1e-6, 1 - 1e-6).log().mean()
                       + 0.5 * ls.softmax(1)[:, 1].clamp(1e-6, 1 - 1e-6).log().mean())
        else:
            cov = torch.cov(mean.T, correction=0)
            if m == "dip-vae-ii":
                cov = cov + torch.diag(logvar.exp().mean(0))
            d = torch.diagonal(cov)
            lam_d = (10.0 if m == "dip-vae-i" else 1.0) * h["lambda_od"]
            loss = recon + kl + h["lambda_od"] * (cov - torch.diag(d)).pow(2).sum() + lam_d * (d - 1).pow(2).sum()
        self.opt.zero_grad()
        if m == "factor-vae":
            self.disc_opt.zero_grad()
            loss.backward(inputs=list(self.model.parameters()), retain_graph=True)
            d_loss.backward(inputs=list(self.disc.parameters()))
            self.disc_opt.step()
        else:
            loss.backward()
        self.opt.step()
        self.t += 1
        return loss.item()


class ToolkitLoop:
    def __init__(self, method: str, packed: np.ndarray, seed: int):
        from disentangle.config import TrainConfig
        from disentangle.train import PackedBatches, Trainer
        self.name = f"{method} toolkit"
        self.config = TrainConfig(method=method, architecture="dlib", seed=seed, device="cpu",
                                  **METHOD_SETTINGS[method]).validate()
        self.trainer = Trainer(self.config, "cpu")
        self.batches = PackedBatches(packed, "cpu", self.trainer.batch_seed)
        self.t = 0

    def step(self) -> float:
        loss = float(self.trainer.step(self.batches.sample(64), self.t)[0])
        self.t += 1
        return loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="dataset file (default: the dataset rule)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--methods", default=",".join(METHOD_SETTINGS))
    ap.add_argument("--blocks", type=int, default=4, help="timed blocks per loop, interleaved")
    ap.add_argument("--block-steps", type=int, default=10, help="training steps per timed block")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per loop first")
    ap.add_argument("--plain-images", type=int, default=65536,
                    help="images in the plain loop's uint8 dataset (the full one would be 3 GB)")
    ap.add_argument("--quick", action="store_true", help="2 blocks x 3 steps, 1 warm-up step, 4,096 plain images")
    args = ap.parse_args()
    if args.quick:
        args.blocks, args.block_steps, args.warmup, args.plain_images = 2, 3, 1, 4096

    import torch
    from disentangle.data.dsprites import load_dsprites
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    names = args.methods.split(",")
    unknown = [m for m in names if m not in METHOD_SETTINGS]
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(unknown)} (choose from {', '.join(METHOD_SETTINGS)})")
    data = load_dsprites(args.data)
    rng = np.random.default_rng(0)
    subset = np.sort(rng.choice(data.num_images, size=min(args.plain_images, data.num_images), replace=False))
    images = data.images(subset)
    pairs = [(PlainLoop(m, images, seed=0), ToolkitLoop(m, data.packed, seed=0)) for m in names]
    loops = [loop for pair in pairs for loop in pair]
    load_before = os.getloadavg()
    from disentangle.devices import tune_allocator
    # both loops share the process, so both get train()'s allocator (docs/performance.md)
    print(f"allocator: {tune_allocator()}")

    print(f"data: {data.path} ({data.source_label}, {data.num_images} images); plain loops on "
          f"{len(subset)} of them as uint8; architecture dlib")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch 64, {args.blocks} interleaved "
          f"blocks x {args.block_steps} steps per loop; load average {load_before[0]:.2f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    for loop in loops:
        for _ in range(args.warmup):
            loop.step()
    wall = {loop.name: [] for loop in loops}
    cpu = {loop.name: [] for loop in loops}
    for _ in range(args.blocks):
        for loop in loops:
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.block_steps):
                loop.step()
            t1, c1 = time.perf_counter(), time.process_time()
            n = args.block_steps * 64
            wall[loop.name].append(n / (t1 - t0))
            cpu[loop.name].append(n / max(c1 - c0, 1e-9))

    print(f"\n{'method':14s} {'plain img/s':>11s} {'toolkit img/s':>13s} {'ratio':>6s}   "
          f"{'plain img/CPU-s':>15s} {'toolkit':>8s} {'ratio':>6s}")
    for plain, tool in pairs:
        p, t = statistics.median(wall[plain.name]), statistics.median(wall[tool.name])
        pc, tc = statistics.median(cpu[plain.name]), statistics.median(cpu[tool.name])
        print(f"{plain.name.split()[0]:14s} {p:11.0f} {t:13.0f} {t / p:5.2f}x   {pc:15.0f} {tc:8.0f} {tc / pc:5.2f}x")
    load_after = os.getloadavg()
    print(f"(threads {torch.get_num_threads()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"ratio = median toolkit img/s over the plain loop's, same run)")


if __name__ == "__main__":
    main()
