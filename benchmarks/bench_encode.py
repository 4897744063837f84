"""Encode and decode throughput of the evaluation against a plain PyTorch loop of the same
trained model on the same real dSprites rows, timed in ONE run, interleaved (every block
runs the plain loop, then the toolkit, in alternating order), so both see the same load.

- encode: the codes table's path (`disentangle.evaluation.codes.BatchEncoder`, what
  `encode_dataset` runs: bit-packed rows unpacked per batch, channels_last private copy on
  CPU, float32, the device's default batch) against the loop a researcher writes first:
  `data.images(rows)` as uint8, `.float()`, NCHW, `model.encode` under inference_mode, batch 64.
- decode: the decoder pass of `info` (`disentangle.evaluation.information.distortion`: one
  z ~ q(z|x) per image, decoded, Bernoulli NLL) against the same pass written plainly
  (NCHW model, batch 64, the same posterior draws).

    .venv/bin/python benchmarks/bench_encode.py [--run results/<run>] [--images N]
        [--blocks 4] [--threads N] [--device cpu]

--images: dataset rows used (default 4,096, a quick run; 737280 is the full dataset).
Without --run the model is a dlib-architecture β-VAE trained here for --train-steps steps
(its weights are real but young; the timing does not depend on what it learned).
Prints img/s of both (median over blocks), the ratio, the thread count and the load
average before and after; also the largest difference of the outputs (a correctness check).
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import numpy as np


class RowView:
    """The dataset restricted to ``rows`` (index i of the view is dataset row rows[i])."""

    def __init__(self, data, rows: np.ndarray):
        self.data, self.rows = data, rows

    def images(self, indices) -> np.ndarray:
        return self.data.images(self.rows[np.asarray(indices)])


def plain_model(model):
    """The same weights in NCHW float32, the layout a plain loop runs."""
    import torch
    plain = copy.deepcopy(model)
    if hasattr(plain, "set_execution"):
        plain.set_execution(mixed=None, channels_last=False)
    return plain.to(memory_format=torch.contiguous_format).eval()


def plain_encode(model, data, rows: np.ndarray, device, batch: int = 64) -> np.ndarray:
    import torch
    out = []
    with torch.inference_mode():
        for s in range(0, len(rows), batch):
            x = torch.from_numpy(data.images(rows[s:s + batch])).to(device).unsqueeze(1).float()
            out.append(model.encode(x)[0].cpu().numpy())
    return np.concatenate(out)


def plain_decode(model, view: RowView, mean, logvar, seed: int, device, batch: int = 64) -> float:
    import torch
    import torch.nn.functional as F

    from disentangle.evaluation.information.gaussian import sample_posterior
    rng = np.random.default_rng(seed)
    idx = np.arange(len(mean))
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(idx), batch):
            b = idx[s:s + batch]
            z = torch.from_numpy(sample_posterior(mean, logvar, b, rng)).to(device)
            x = torch.from_numpy(view.images(b)).to(device).unsqueeze(1).float()
            logits = model.decode(z)
            total += float(F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).double().sum())
    return total / len(idx)


def trained_model(args, data, device):
    from disentangle.config import TrainConfig
    from disentangle.rundir import RunDir
    from disentangle.train import PackedBatches, Trainer
    if args.run:
        model, _ = RunDir(args.run).load_model(device)
        return model, f"run {args.run}"
    cfg = TrainConfig(method="beta-vae", beta=4.0, architecture="dlib", seed=0, device=device).validate()
    trainer = Trainer(cfg, device)
    batches = PackedBatches(data.packed, device, trainer.batch_seed)
    for t in range(args.train_steps):
        trainer.step(batches.sample(64), t)
    model = trainer.model.eval()
    model.set_execution(mixed=None, channels_last=False)
    return model, f"dlib β-VAE trained here for {args.train_steps} steps"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="dataset file (default: the dataset rule)")
    ap.add_argument("--run", default=None, help="a finished run directory whose model to use")
    ap.add_argument("--train-steps", type=int, default=20, help="steps to train a model when no --run is given")
    ap.add_argument("--images", type=int, default=4096, help="dataset rows encoded and decoded (default 4096)")
    ap.add_argument("--blocks", type=int, default=4, help="interleaved blocks (the rows are split among them)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from disentangle.devices import tune_allocator
    # the toolkit's and the plain loops share the process, so both get evaluate()'s allocator
    print(f"allocator: {tune_allocator()}")

    import torch

    from disentangle.data.dsprites import load_dsprites
    from disentangle.devices import resolve_device
    from disentangle.evaluation.codes import BatchEncoder
    from disentangle.evaluation.information.distortion import distortion
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load_dsprites(args.data)
    model, model_label = trained_model(args, data, device)
    plain = plain_model(model)
    rng = np.random.default_rng(0)
    n = min(args.images, data.num_images)
    rows = np.sort(rng.choice(data.num_images, size=n, replace=False)) if n < data.num_images else np.arange(n)
    blocks = np.array_split(rows, args.blocks)
    encoder = BatchEncoder(model, device)
    load_before = os.getloadavg()
    print(f"data: {data.path} ({data.source_label}), {n} rows in {args.blocks} interleaved blocks; model: {model_label}")
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, toolkit encode batch "
          f"{encoder.batch_size} (default_batch_size), plain batch 64; load average {load_before[0]:.2f} "
          f"on {os.cpu_count()} CPUs", flush=True)
    # warm-up: one batch of each, untimed
    encoder.encode_packed(data.packed_images(blocks[0][:64]))
    plain_encode(plain, data, blocks[0][:64], device)

    rates = {k: [] for k in ("encode plain", "encode toolkit", "decode plain", "decode toolkit")}
    worst_code, d_plain, d_tool = 0.0, [], []
    for i, block in enumerate(blocks):
        view = RowView(data, block)
        order = ("plain", "toolkit") if i % 2 == 0 else ("toolkit", "plain")
        codes = {}
        for who in order:
            t0 = time.perf_counter()
            if who == "plain":
                codes[who] = (plain_encode(plain, data, block, device), None)
            else:
                codes[who] = encoder.encode_packed(data.packed_images(block))
            rates[f"encode {who}"].append(len(block) / (time.perf_counter() - t0))
        worst_code = max(worst_code, float(np.abs(codes["plain"][0] - codes["toolkit"][0]).max()))
        mean, logvar = codes["toolkit"]
        for who in order:
            t0 = time.perf_counter()
            if who == "plain":
                d_plain.append(plain_decode(plain, view, mean, logvar, seed=i, device=device))
            else:
                d_tool.append(distortion(model, view, mean, logvar, np.random.default_rng(i),
                                         images="all")["distortion_nats"])
            rates[f"decode {who}"].append(len(block) / (time.perf_counter() - t0))
    load_after = os.getloadavg()

    print(f"\n{'pass':8s} {'plain img/s':>11s} {'toolkit img/s':>13s} {'ratio':>6s}")
    for what in ("encode", "decode"):
        p, t = statistics.median(rates[f"{what} plain"]), statistics.median(rates[f"{what} toolkit"])
        print(f"{what:8s} {p:11.0f} {t:13.0f} {t / p:5.2f}x")
    print(f"(threads {torch.get_num_threads()}; load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"on {os.cpu_count()} CPUs; ratio = median toolkit img/s over the plain loop's, same run)")
    print(f"check: max |mean difference| toolkit vs plain {worst_code:.2e}; distortion per block toolkit "
          f"{np.mean(d_tool):.3f} vs plain {np.mean(d_plain):.3f} nats (same draws: "
          f"max diff {max(abs(a - b) for a, b in zip(d_tool, d_plain)):.2e})")


if __name__ == "__main__":
    main()
