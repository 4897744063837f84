"""color/noisy/scream dSprites: transforms equal an independent numpy computation of
disentanglement_lib's formulas on the same draws; images() is one fixed realisation per index."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from disentangle.data.convert import fetch_dataset
from disentangle.data.datasets import open_dataset

IDX = np.array([0, 17, 700, 1535, 17])


@pytest.fixture(scope="module")
def scream_file(tmp_path_factory):
    from PIL import Image
    root = tmp_path_factory.mktemp("scream")
    rng = np.random.default_rng(9)
    Image.fromarray(rng.integers(0, 256, (500, 400, 3), dtype=np.uint8)).save(root / "The_Scream.jpg", quality=90)
    out = fetch_dataset("scream-dsprites", out=root / "scream.h5", file=root / "The_Scream.jpg")
    return root, out


def _masks(tiny_data, idx):
    return tiny_data.images(idx).astype(np.float64)


def test_color(tiny_data_path, tiny_data):
    ds = open_dataset("color-dsprites", tiny_data_path)
    assert ds.image_shape == (3, 64, 64) and ds.bits_per_channel is None and not ds.binary
    got = ds.observations(IDX, np.random.default_rng(11))
    r = np.random.default_rng(11)
    color = r.uniform(0.5, 1, (len(IDX), 3))
    want = _masks(tiny_data, IDX)[:, None] * color[:, :, None, None]
    np.testing.assert_array_equal(got, want.astype(np.float32))
    # the nuisance as specified: one colour per image, in [0.5, 1), on the sprite's pixels only
    on = _masks(tiny_data, IDX) == 1
    for j in range(len(IDX)):
        vals = got[j][:, on[j]]
        assert np.all(vals == vals[:, :1]) and np.all((vals >= 0.5) & (vals < 1))
        assert np.all(got[j][:, ~on[j]] == 0)


def test_noisy(tiny_data_path, tiny_data):
    ds = open_dataset("noisy-dsprites", tiny_data_path)
    got = ds.observations(IDX, np.random.default_rng(12))
    noise = np.random.default_rng(12).uniform(0, 1, (len(IDX), 64, 64, 3))
    want = np.minimum(_masks(tiny_data, IDX)[..., None] + noise, 1.0).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_scream(tiny_data_path, tiny_data, scream_file):
    from PIL import Image
    root, path = scream_file
    ds = open_dataset("scream-dsprites", tiny_data_path, scream=path)
    assert ds.provenance["scream_sha256"] == hashlib.sha256((root / "The_Scream.jpg").read_bytes()).hexdigest()
    img = Image.open(root / "The_Scream.jpg")
    img.thumbnail((350, 274))
    scream = np.asarray(img) / 255.0
    assert scream.shape == ds.scream.shape and scream.shape[0] == 274   # aspect kept: 500x400 -> 274x219
    got = ds.observations(IDX, np.random.default_rng(13))
    r = np.random.default_rng(13)
    masks = _masks(tiny_data, IDX)
    for j in range(len(IDX)):
        x = r.integers(0, scream.shape[0] - 64)
        y = r.integers(0, scream.shape[1] - 64)
        patch = (scream[x:x + 64, y:y + 64] + r.uniform(0, 1, size=3)) / 2.0
        want = np.where(masks[j][..., None] == 1, 1 - patch, patch)
        np.testing.assert_array_equal(got[j], want.transpose(2, 0, 1).astype(np.float32))


@pytest.mark.parametrize("name", ["color-dsprites", "noisy-dsprites"])
def test_images_fixed_per_index_and_torch_batch(tiny_data_path, name):
    ds = open_dataset(name, tiny_data_path, seed=3)
    a = ds.images(IDX)
    np.testing.assert_array_equal(a[1], ds.images([17])[0])          # independent of the batch
    np.testing.assert_array_equal(a[1], a[4])
    assert not np.array_equal(a, open_dataset(name, tiny_data_path, seed=4).images(IDX))
    assert ds.provenance["images_seed"] == 3 and ds.provenance["variant_of"] == "dsprites"
    t = ds.torch_batch(IDX, "cpu", rng=np.random.default_rng(5)).numpy()
    np.testing.assert_array_equal(t, ds.observations(IDX, np.random.default_rng(5)))
    assert [n.name for n in ds.ground_truth.nuisance] == [{"color-dsprites": "color", "noisy-dsprites": "noise"}[name]]
    assert ds.ground_truth.num_images == ds.num_images   # continuous nuisance adds no images
