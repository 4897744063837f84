"""The content check of an image-set file: hashing /images against content_sha256.

Writes a ``disentangle-images-1`` file of 100,000 random-content 64x64x3 images (1.23 GB;
``--images`` changes it) with the converters' writer (``write_image_file``, which records
content_sha256), then times, interleaved, ``--repeats`` times each:

  check      the check an open makes on a file state not seen before
             (trust.check_content over ImageFile's blocks, fresh)
  file       baseline: plain hashlib.sha256 over the file's bytes, read in 1 MiB blocks
             (the floor for anything that reads the whole file)
  memory     baseline: plain hashlib.sha256 over the same image bytes already in memory
             (the hash alone)
  cached     opening the file again: the remembered verdict, nothing hashed

and prints img/s, MB/s (of image bytes), the ratio to each baseline, threads and load.

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/bench_data_verify.py [--images 100000] [--repeats 3]

The file is read right after being written, so its pages are in the page cache: these are
warm-cache figures (the case of a machine whose RAM holds the file); a cold disk adds its
sequential read time (the file baseline shows it the same way).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def make_file(path: Path, n: int) -> float:
    from disentangle.data.image_file import write_image_file
    from disentangle.data.ground_truth import GroundTruth
    gt = GroundTruth(("a", "b"), (np.arange(100.0), np.arange(float(n // 100))))
    pool = np.random.default_rng(0).integers(0, 256, (1000, 64, 64, 3), dtype=np.uint8)

    def chunks():
        for i in range(0, gt.num_images, 1000):
            yield np.roll(pool, i // 1000, axis=0)
    t = time.perf_counter()
    write_image_file(path, "shapes3d", gt, 3, chunks(), {"source": "benchmark"})
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=100_000, help="images in the file (a multiple of 100)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write the file (default: a temporary folder)")
    args = ap.parse_args()
    from disentangle.data import trust
    from disentangle.data.datasets import DatasetError, open_file
    from disentangle.io import file_sha256

    folder = Path(tempfile.mkdtemp(prefix="bench-verify-", dir=args.dir))
    os.environ["DISENTANGLE_CACHE"] = str(folder / "cache")
    try:
        path = folder / "set.h5"
        seconds = make_file(path, args.images)
        size = path.stat().st_size
        ds = open_file(path)            # the first open: hashes and remembers
        n, image_bytes = ds.num_images, int(ds._images.size)
        recorded = ds.content_sha256
        print(f"file: {n:,} images, {image_bytes / 1e9:.2f} GB of images, {size / 1e9:.2f} GB on disk "
              f"(written in {seconds:.1f} s)")
        in_memory = np.concatenate(list(ds._image_blocks()))

        def check():
            sha, hashed = trust.check_content(path, recorded, ds._image_blocks, DatasetError,
                                              total_bytes=image_bytes, fresh=True)
            assert hashed and sha == recorded

        def file_baseline():
            file_sha256(path)

        def memory_baseline():
            assert hashlib.sha256(in_memory.data).hexdigest() == recorded

        def cached():
            trust._HASHED.clear()    # as a new process: the cache folder answers
            d = open_file(path)
            assert not d._hashed_at_open
            d.close()

        times = {k: [] for k in ("check", "file", "memory", "cached")}
        for _ in range(args.repeats):
            for name, fn in (("check", check), ("file", file_baseline), ("memory", memory_baseline),
                             ("cached", cached)):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        for name in ("check", "file", "memory"):
            t = med[name]
            print(f"{name:8s} {t:7.2f} s  {n / t:10,.0f} img/s  {image_bytes / t / 1e6:7.0f} MB/s  "
                  f"(runs: {', '.join(f'{x:.2f}' for x in times[name])})")
        print(f"cached   {med['cached'] * 1e3:7.1f} ms per open (metadata checks included; no image read)")
        print(f"ratio check/file {med['check'] / med['file']:.2f}, check/memory {med['check'] / med['memory']:.2f}")
        print(f"threads: {threading.active_count()} Python, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}; "
              f"cores {os.cpu_count()}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        ds.close()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
