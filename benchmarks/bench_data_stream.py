"""Random training batches streamed from a Shapes3D-sized and an MPI3D-sized file.

Writes two ``disentangle-images-1`` files (480,000 and 1,036,800 random-content 64x64x3
images, 5.9 GB and 12.7 GB; ``--scale`` shrinks them) into a temporary directory, then
reads random batches of 64 with ``ImageFile.read_uint8`` (one-image chunks read raw) and
``torch_batch(cpu)`` (plus the uint8 -> float32 cast), interleaved with a plain baseline:
numpy fancy indexing from an in-memory uint8 array of 50,000 images. Reports img/s,
resident memory (current and peak), threads and load average.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_data_stream.py [--scale 1.0] [--seconds 8]

The files are read right after being written, so most of their pages are in the page
cache (this machine has 23 GB of RAM): the figures are warm-cache reads, the case of a
machine whose RAM holds the file; a cold disk is slower by its random-read latency.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_file(path: Path, name: str, sizes, names) -> float:
    import h5py

    from disentangle.data.image_file import IMAGES_FORMAT
    from disentangle.data.ground_truth import GroundTruth
    gt = GroundTruth(tuple(names), tuple(np.arange(float(s)) for s in sizes))
    n = gt.num_images
    pool = np.random.default_rng(0).integers(0, 256, (1024, 64, 64, 3), dtype=np.uint8)
    t = time.perf_counter()
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("images", (n, 64, 64, 3), np.uint8, chunks=(1, 64, 64, 3))
        for i in range(n):
            ds.id.write_direct_chunk((i, 0, 0, 0), pool[i % 1024].tobytes())
        f.attrs.update({"format": IMAGES_FORMAT, "dataset": name, "ground_truth": json.dumps(gt.to_json()),
                        "content_sha256": "not computed (benchmark file)", "source": "benchmark"})
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the real sizes (first factor scaled)")
    ap.add_argument("--seconds", type=float, default=8.0, help="per measurement")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    import torch

    from disentangle.data.datasets import open_file
    root = Path(tempfile.mkdtemp(prefix="bench_data_", dir=args.dir))
    sets = [("shapes3d", [10, 10, 10, 8, 4, 15], ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]),
            ("mpi3d-toy", [6, 6, 2, 3, 3, 40, 40], ["object_color", "object_shape", "object_size", "camera_height",
                                                     "background_color", "horizontal_axis", "vertical_axis"])]
    baseline = np.random.default_rng(1).integers(0, 256, (50_000, 64, 64, 3), dtype=np.uint8)
    print(f"torch threads {torch.get_num_threads()}, python threads {threading.active_count()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, cores {os.cpu_count()}")
    try:
        for name, sizes, names in sets:
            sizes = list(sizes)
            sizes[-1] = max(1, int(round(sizes[-1] * args.scale))) if args.scale < 1 else sizes[-1]
            path = root / f"{name}.h5"
            secs = make_file(path, name, sizes, names)
            ds = open_file(path)
            n = ds.num_images
            print(f"\n{name}: {n:,} images, {path.stat().st_size / 1e9:.2f} GB written in {secs:.0f} s; "
                  f"RSS after open {rss_mb():.0f} MB")
            rng = np.random.default_rng(2)
            res = {"read_uint8": [0, 0.0], "torch_batch(cpu)": [0, 0.0], "baseline in-memory": [0, 0.0]}
            end = time.perf_counter() + 3 * args.seconds
            while time.perf_counter() < end:   # interleaved rounds of 20 batches each
                for key in res:
                    t = time.perf_counter()
                    for _ in range(20):
                        if key == "read_uint8":
                            ds.read_uint8(rng.integers(0, n, 64))
                        elif key == "torch_batch(cpu)":
                            ds.torch_batch(rng.integers(0, n, 64), "cpu")
                        else:
                            torch.from_numpy(baseline[rng.integers(0, len(baseline), 64)]).to("cpu") \
                                .permute(0, 3, 1, 2).float().div_(255.0).contiguous()
                    res[key][0] += 20 * 64
                    res[key][1] += time.perf_counter() - t
            for key, (imgs, secs) in res.items():
                print(f"  {key:20s} {imgs / secs:9,.0f} img/s")
            print(f"  RSS now {rss_mb():.0f} MB, peak {peak_mb():.0f} MB (the in-memory baseline array is "
                  f"{baseline.nbytes / 2**20:.0f} MB of it); load average {os.getloadavg()[0]:.2f}")
            ds.close()
            path.unlink()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
