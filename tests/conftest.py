"""Shared fixtures: tiny rendered dSprites sub-grids, made once per test session."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from disentangle.data.ground_truth import GroundTruth

REAL_FRAMES = Path(__file__).resolve().parents[2] / "shared" / "dsprites_real" / "dsprites_gif_frames.npz"

# 3 shapes x 2 scales x 4 orientations x 8 x 8 positions = 1,536 images
TINY_GRID = {"scale": [0, 5], "orientation": [0, 5, 10, 15], "pos_x": range(0, 32, 4), "pos_y": range(0, 32, 4)}


def pytest_configure(config):
    # one thread per process in tests (the other core may be busy)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # the toolkit's cache (H(X), dataset content verdicts) in a folder of this session, not
    # the user's ~/.cache (subprocesses of the CLI inherit it)
    if not os.environ.get("DISENTANGLE_CACHE"):
        import tempfile
        os.environ["DISENTANGLE_CACHE"] = config._disentangle_cache = tempfile.mkdtemp(
            prefix="disentangle-test-cache-")
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def pytest_unconfigure(config):
    made = getattr(config, "_disentangle_cache", None)
    if made:
        shutil.rmtree(made, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_ground_truth() -> GroundTruth:
    return GroundTruth.dsprites().subgrid(TINY_GRID)


@pytest.fixture(scope="session")
def tiny_data_path(tmp_path_factory, tiny_ground_truth) -> Path:
    """A rendered dataset file holding the tiny sub-grid (1,536 images)."""
    from disentangle.data.dsprites import render_dataset
    out = tmp_path_factory.mktemp("data") / "dsprites-tiny.h5"
    return render_dataset(out, tiny_ground_truth)


@pytest.fixture(scope="session")
def tiny_data(tiny_data_path):
    from disentangle.data.dsprites import DSpritesData
    return DSpritesData(tiny_data_path)


@pytest.fixture(scope="session")
def real_frames():
    if not REAL_FRAMES.is_file():
        pytest.skip(f"real dSprites frames not found at {REAL_FRAMES} (../shared/dsprites_real is absent)")
    with np.load(REAL_FRAMES) as d:
        return {k: d[k] for k in d.files}


TINY_RUN_LATENT_DIM = 6


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory, tiny_data_path) -> Path:
    """A finished tiny run (20 steps of batch 16, 6 latents, on the tiny dataset), trained
    once per test session; tests that change its files use ``run_dir`` instead."""
    from disentangle.config import TrainConfig
    from disentangle.train import train
    config = TrainConfig(beta=4.0, steps=20, batch_size=16, seed=0, data=str(tiny_data_path), device="cpu",
                         threads=1, log_every=10, checkpoint_every=20, latent_dim=TINY_RUN_LATENT_DIM)
    return train(config, tmp_path_factory.mktemp("eval-runs") / "run-b4-s0")


@pytest.fixture
def run_dir(tiny_trained_run, tmp_path) -> Path:
    """A private copy of the tiny trained run, without codes table or scores."""
    dst = tmp_path / "runs" / "run-a"
    shutil.copytree(tiny_trained_run, dst, ignore=shutil.ignore_patterns("codes.h5", "scores.json"))
    return dst
