"""Shared fixtures: tiny rendered dSprites sub-grids, made once per test session."""
from __future__ import annotations

import os
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
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


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
