"""A tiny study on every kind of dataset file, end to end through the CLI: small
Shapes3D-layout and MPI3D-layout source files -> toolkit files -> `sweep` (two methods, one
strength, each dataset) with every cheap metric -> `report`; plus the dataset as a run's
identity (name, config, columns) and the variants' training nuisance across a resume.

Routes: the Shapes3D file goes through `data fetch shapes3d --file ... --sha256 ...` (the
converter recovers the grid from the labels, so a sub-grid converts as the official file
would). The MPI3D converter fixes the official 6x6x2x3x3x40x40 grid for the CLI (the file's
only layout is its reshape), so the reduced file is converted with
``mpi3d.convert_npz(..., factor_sizes=...)``, the route tests/test_datasets.py uses.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from disentangle.data import mpi3d

SHAPES_SIZES = (2, 2, 1, 2, 1, 3)          # 24 images, orientation fastest
MPI3D_SIZES = (2, 1, 2, 1, 1, 2, 3)        # 24 images


def _cli(*args, env, cwd):
    proc = subprocess.run([sys.executable, "-m", "disentangle", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def _shapes3d_source(path: Path) -> None:
    """3dshapes.h5 layout: images (N, 64, 64, 3) uint8, labels (N, 6) float64 factor values."""
    official = [np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10), np.linspace(0, 0.9, 10),
                np.linspace(0.75, 1.25, 8), np.arange(4.0), np.linspace(-30, 30, 15)]
    grids = np.meshgrid(*[official[k][:s] for k, s in enumerate(SHAPES_SIZES)], indexing="ij")
    labels = np.stack([g.reshape(-1) for g in grids], axis=1)
    # images that depend on the factors (a blob whose brightness and place follow them)
    images = np.zeros((len(labels), 64, 64, 3), np.uint8)
    for i, lab in enumerate(labels):
        images[i, :, :, 0] = int(60 + 150 * lab[0])
        images[i, 8 + int(lab[5] / 3) + 10:40 + int(lab[5] / 3), 16:16 + int(20 * lab[3]), 1] = 200
        images[i, :, :, 2] = int(200 * lab[1])
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, 64, 64, 3), compression="gzip")
        f.create_dataset("labels", data=labels)


def _mpi3d_source(path: Path) -> None:
    """The MPI3D npz layout: ``images`` (N, 64, 64, 3) uint8 in the reshape's order."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (int(np.prod(MPI3D_SIZES)), 64, 64, 3), dtype=np.uint8)
    np.savez(path, images=images)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    data = root / "data"
    data.mkdir()
    env = {**os.environ, "DISENTANGLE_DATA_DIR": str(data), "DISENTANGLE_CACHE": str(root / "cache"),
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("DISENTANGLE_DATA", None)
    return root, env


def test_tiny_study_on_shapes3d_and_mpi3d_through_the_cli(env):
    root, env = env
    data = root / "data"
    _shapes3d_source(root / "3dshapes.h5")
    sha = hashlib.sha256((root / "3dshapes.h5").read_bytes()).hexdigest()
    _cli("data", "fetch", "shapes3d", "--file", root / "3dshapes.h5", "--sha256", sha,
         "--out", data / "shapes3d.h5", env=env, cwd=root)
    _mpi3d_source(root / "mpi3d_toy.npz")
    mpi3d.convert_npz(root / "mpi3d_toy.npz", data / "mpi3d-toy.h5", "mpi3d-toy", {"source": "test"},
                      factor_sizes=MPI3D_SIZES)
    info = _cli("data", "info", "shapes3d", env=env, cwd=root)
    assert "floor_hue=2" in info and "3x64x64" in info

    results = root / "study"
    spec = root / "tiny.toml"
    spec.write_text("""
name = "tiny"
[fixed]
steps = 6
batch_size = 8
latent_dim = 3
architecture = "dlib"
beta = 2
[grid]
dataset = ["shapes3d", "mpi3d-toy"]
method = ["beta-vae", "beta-tcvae"]
[evaluate]
metrics = ["mig", "sap", "factor_vae", "beta_vae", "dci", "info"]
[evaluate.params.beta_vae]
num_train = 40
num_eval = 20
batch_size = 4
[evaluate.params.factor_vae]
num_train = 40
num_eval = 20
batch_size = 4
num_variance_estimate = 40
[evaluate.params.mig]
num_train = 100
[evaluate.params.sap]
num_train = 60
num_test = 30
[evaluate.params.dci]
num_train = 60
num_test = 30
[evaluate.params.info]
distortion_images = 24
iq_min_samples = 24
iq_max_samples = 24
""")
    out = _cli("sweep", "--spec", spec, "--results", results, "--seeds", "0", "--threads-per-job", "1",
               "--no-report", env=env, cwd=root)
    names = sorted(p.name for p in results.iterdir() if (p / "config.json").is_file())
    assert names == ["mpi3d-toy_beta-tcvae_b2_s0", "mpi3d-toy_beta-vae_b2_s0",
                     "shapes3d_beta-tcvae_b2_s0", "shapes3d_beta-vae_b2_s0"], out
    for name in names:
        run = results / name
        saved = json.loads((run / "config.json").read_text())
        dataset = name.split("_")[0]
        assert saved["config"]["dataset"] == dataset and saved["data"]["dataset"] == dataset
        assert saved["model"]["channels"] == 3
        assert Path(saved["data"]["path"]) == (data / f"{dataset}.h5").resolve()
        with h5py.File(run / "codes.h5", "r") as f:
            assert f["mean"].shape == (24, 3) and f.attrs["dataset"] == dataset
            assert json.loads(f.attrs["data_identity"])["content_sha256"] == saved["data"]["content_sha256"]
        scores = json.loads((run / "scores.json").read_text())
        assert set(scores) == {"mig", "sap", "factor_vae", "beta_vae", "dci", "info"}
        assert all(entry["data"]["dataset"] == dataset for entry in scores.values())
        assert 0 <= scores["mig"]["values"]["discrete_mig"] <= 1
        # 8-bit images: H(X) from the stored levels; a Bernoulli D on them is no bound
        assert scores["info"]["values"]["pixels"] == "8-bit"
        assert scores["info"]["values"]["entropy_x_nats"] == pytest.approx(np.log(24))
        assert scores["info"]["values"]["is_bound"] is False
    report = _cli("report", results, "--format", "csv", env=env, cwd=root)
    import csv
    import io
    lines = report.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith(("run,", "dataset,")))
    rows = list(csv.DictReader(io.StringIO("\n".join(lines[header:]))))
    assert sorted(r["dataset"] for r in rows) == ["mpi3d-toy", "mpi3d-toy", "shapes3d", "shapes3d"]
    assert {r["run"].split("_")[0] for r in rows} == {"mpi3d-toy", "shapes3d"}


def test_dataset_field_names_validation_and_old_runs():
    from disentangle.config import DATASETS, TrainConfig, run_name
    from disentangle.data.datasets import REGISTRY
    assert set(DATASETS) == set(REGISTRY) - {"image-folder"}
    cfg = TrainConfig(beta=4.0).to_dict()
    assert run_name(cfg) == "beta-vae_b4_s0"
    assert run_name({**cfg, "dataset": "shapes3d"}) == "shapes3d_beta-vae_b4_s0"
    assert run_name({**cfg, "dataset": "dsprites"}, swept=("dataset",)) == "beta-vae_b4_s0"
    old = {k: v for k, v in cfg.items() if k != "dataset"}            # a config.json from before the field
    assert run_name(old) == "beta-vae_b4_s0"
    from disentangle.config import differing_keys
    assert differing_keys(old, cfg) == [] and differing_keys(old, {**cfg, "dataset": "cars3d"}) == ["dataset"]


def test_cli_refuses_an_unknown_dataset_in_one_line(tmp_path):
    from click.testing import CliRunner

    from disentangle.cli import main
    result = CliRunner().invoke(main, ["train", "--dataset", "nosuch", "--steps", "2", "--out", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith("Error: --dataset nosuch: unknown dataset")
    assert not (tmp_path / "r").exists()
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert "--dataset" in help_text and "shapes3d" in help_text and "mpi3d-real" in help_text


@pytest.fixture(scope="module")
def dsprites_small(tmp_path_factory):
    from disentangle.data.dsprites import render_dataset
    from disentangle.data.ground_truth import GroundTruth
    path = tmp_path_factory.mktemp("dsp") / "d.h5"
    gt = GroundTruth.dsprites().subgrid({"orientation": [0, 20], "pos_x": range(0, 32, 8), "pos_y": range(0, 32, 8)})
    return render_dataset(path, gt)


@pytest.mark.parametrize("dataset", ["color-dsprites", "noisy-dsprites"])
def test_variant_training_resumes_bit_identically(tmp_path, dsprites_small, dataset):
    """N steps in one go == N/2, stop, resume to N: the nuisance generator's state is in
    the checkpoint; and a different seed draws other nuisance."""
    import torch

    from disentangle.config import TrainConfig
    from disentangle.train import train
    base = dict(dataset=dataset, data=str(dsprites_small), steps=8, batch_size=4, latent_dim=2,
                checkpoint_every=4, log_every=2, threads=1, device="cpu", architecture="dlib")
    whole = train(TrainConfig(**base), tmp_path / "whole")
    half = train(TrainConfig(**{**base, "steps": 4}), tmp_path / "part")
    # the same directory, continued: the 4-step run's checkpoint is the resume point
    cfg = json.loads((half / "config.json").read_text())
    cfg["config"]["steps"] = 8
    (half / "config.json").write_text(json.dumps(cfg))
    state = torch.load(half / "checkpoint.pt", weights_only=True)
    assert "nuisance" in state["rng"]
    state["config"]["steps"] = 8
    torch.save(state, half / "checkpoint.pt")
    (half / "status.json").unlink()
    (half / "model.pt").unlink()
    resumed = train(TrainConfig(**base), half)
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(resumed / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train(TrainConfig(**{**base, "seed": 1}), tmp_path / "other")
    c = torch.load(other / "model.pt", weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    saved = json.loads((whole / "config.json").read_text())
    assert saved["data"]["dataset"] == dataset and saved["data"]["training_nuisance"]["seed"] > 0
    assert saved["model"]["channels"] == 3


def test_metrics_draw_a_grid_nuisance_and_leave_other_draws_alone():
    """smallNORB-like grid: the instance (nuisance) is drawn per point from the metric's rng;
    a grid without nuisance gets the same indices as before (rng untouched)."""
    from disentangle.data.ground_truth import GroundTruth, Nuisance
    from disentangle.evaluation.metrics.utils import index_of_columns, sample_points
    plain = GroundTruth(("a", "b"), (np.arange(3.0), np.arange(4.0)))
    norb = GroundTruth(("a", "b"), (np.arange(3.0), np.arange(4.0)), nuisance=(Nuisance("instance", "u", 5),))
    codes = np.arange(plain.num_images, dtype=float)[:, None]
    z, classes = sample_points(codes, plain, 50, np.random.default_rng(0))
    assert np.array_equal(z[:, 0], plain.index_of(classes))
    cols = np.random.default_rng(1).integers(0, 3, (2, 7))
    cols[1] = np.random.default_rng(2).integers(0, 4, 7)
    rng = np.random.default_rng(5)
    before = rng.bit_generator.state
    assert np.array_equal(index_of_columns(plain, cols, rng), plain.index_of(cols.T))
    assert rng.bit_generator.state == before
    codes = np.arange(norb.num_images, dtype=float)[:, None]
    z, classes = sample_points(codes, norb, 2000, np.random.default_rng(0))
    idx = z[:, 0].astype(int)
    assert np.array_equal(norb.classes_of(idx), classes)
    inst = norb.nuisance_classes_of(idx)[:, 0]
    assert set(inst) == set(range(5))                     # every instance is drawn
    ref = np.random.default_rng(0)                        # the draws: factors, then the instance
    want_classes = norb.sample_classes(2000, ref)
    assert np.array_equal(inst, ref.integers(0, 5, size=2000)) and np.array_equal(want_classes, classes)
