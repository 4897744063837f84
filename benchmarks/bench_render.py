"""Render and load speed of the dSprites dataset, against a naive per-image loop.

Prints: full render + write time (all 737,280 images), load time of the full file into
memory, peak memory of each (child processes, ru_maxrss), and the throughput ratio of the
scanline renderer over the naive per-pixel renderer measured in the same run.

    .venv/bin/python benchmarks/bench_render.py [--naive-images 400]
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import tempfile
import time
from pathlib import Path


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _render(out: str, q):
    from disentangle.data.dsprites import render_dataset
    t = time.perf_counter()
    render_dataset(out)
    q.put((time.perf_counter() - t, _peak_rss_mb()))


def _load(out: str, q):
    from disentangle.data.dsprites import DSpritesData
    t = time.perf_counter()
    d = DSpritesData(out)
    seconds = time.perf_counter() - t
    q.put((seconds, d.packed.nbytes, _peak_rss_mb()))


def _in_child(fn, *args):
    """Run fn in a fresh process (so its peak memory is its own) and return its result."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=fn, args=args + (q,))
    p.start()
    result = q.get()
    p.join()
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--naive-images", type=int, default=400, help="images for the naive baseline")
    args = ap.parse_args()

    import numpy as np
    from disentangle.data.ground_truth import GroundTruth
    from disentangle.data.render import SHAPE_NAMES, render_image_reference, render_packed

    threads = os.environ.get("OMP_NUM_THREADS", "unset")
    gt = GroundTruth.dsprites()
    rng = np.random.default_rng(0)
    classes = gt.sample_classes(args.naive_images, rng)
    values = gt.values_of(classes)

    t = time.perf_counter()
    for v in values:
        render_image_reference(SHAPE_NAMES[int(v[0]) - 1], *v[1:])
    naive_s = time.perf_counter() - t
    naive_rate = args.naive_images / naive_s

    t = time.perf_counter()
    render_packed(gt)
    fast_s = time.perf_counter() - t
    fast_rate = gt.num_images / fast_s

    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "dsprites-rendered.h5")
        render_s, render_rss = _in_child(_render, out)
        load_s, nbytes, load_rss = _in_child(_load, out)
        size = Path(out).stat().st_size

    print(f"threads (OMP_NUM_THREADS): {threads}; renderer is single-process numpy")
    print(f"naive per-image renderer : {naive_rate:10.0f} img/s  ({args.naive_images} images, {naive_s:.2f} s)"
          f"  -> full dataset ~{gt.num_images / naive_rate / 60:.0f} min")
    print(f"scanline renderer        : {fast_rate:10.0f} img/s  (737,280 images in memory, {fast_s:.1f} s)")
    print(f"ratio                    : {fast_rate / naive_rate:10.0f}x")
    print(f"render + write HDF5      : {render_s:.1f} s, file {size / 1e6:.1f} MB, peak RSS {render_rss:.0f} MB")
    print(f"load full dataset        : {load_s:.2f} s, {nbytes / 1e6:.0f} MB bit-packed in memory, "
          f"peak RSS {load_rss:.0f} MB")


if __name__ == "__main__":
    main()
