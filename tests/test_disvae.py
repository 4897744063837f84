"""Importing YannDubs/disentangling-vae's models onto the toolkit's burgess network.

The reference modules below re-implement disentangling-vae's Burgess encoder and decoder
as its repository writes them (disvae/models/encoders.py EncoderBurgess,
disvae/models/decoders.py DecoderBurgess, commit of the fetched snapshot): the same layer
names, the same forward pass (conv1..conv3, conv_64, flatten with ``view``, lin1, lin2,
``mu_logvar_gen`` viewed as (n, D, 2) and unbound; lin1..lin3, ``view`` to (32, 4, 4),
convT_64 first, convT1, convT2, sigmoid of convT3). The same image through theirs and
through the imported toolkit model must give the same means, log-variances and logits.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from disentangle.errors import UserError
from disentangle.external import import_disvae
from disentangle.models import disvae

RELEASED = Path(__file__).resolve().parents[2] / "shared" / "released_models" / "disvae"
RELEASED_NAMES = ("VAE_dsprites", "betaH_dsprites", "betaB_dsprites", "btcvae_dsprites", "factor_dsprites")


class TheirEncoder(nn.Module):
    def __init__(self, latent_dim=10):
        super().__init__()
        self.latent_dim = latent_dim
        self.conv1 = nn.Conv2d(1, 32, 4, stride=2, padding=1)
        self.conv2 = nn.Conv2d(32, 32, 4, stride=2, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 4, stride=2, padding=1)
        self.conv_64 = nn.Conv2d(32, 32, 4, stride=2, padding=1)
        self.lin1 = nn.Linear(32 * 4 * 4, 256)
        self.lin2 = nn.Linear(256, 256)
        self.mu_logvar_gen = nn.Linear(256, 2 * latent_dim)

    def forward(self, x):
        n = x.size(0)
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = torch.relu(self.conv_64(x))
        x = x.view((n, -1))
        x = torch.relu(self.lin1(x))
        x = torch.relu(self.lin2(x))
        mu, logvar = self.mu_logvar_gen(x).view(-1, self.latent_dim, 2).unbind(-1)
        return mu, logvar


class TheirDecoder(nn.Module):
    def __init__(self, latent_dim=10):
        super().__init__()
        self.lin1 = nn.Linear(latent_dim, 256)
        self.lin2 = nn.Linear(256, 256)
        self.lin3 = nn.Linear(256, 32 * 4 * 4)
        self.convT_64 = nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1)
        self.convT1 = nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1)
        self.convT2 = nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1)
        self.convT3 = nn.ConvTranspose2d(32, 1, 4, stride=2, padding=1)

    def forward(self, z):
        n = z.size(0)
        x = torch.relu(self.lin1(z))
        x = torch.relu(self.lin2(x))
        x = torch.relu(self.lin3(x))
        x = x.view(n, 32, 4, 4)
        x = torch.relu(self.convT_64(x))
        x = torch.relu(self.convT1(x))
        x = torch.relu(self.convT2(x))
        return torch.sigmoid(self.convT3(x))


class TheirVAE(nn.Module):
    def __init__(self, latent_dim=10):
        super().__init__()
        self.encoder = TheirEncoder(latent_dim)
        self.decoder = TheirDecoder(latent_dim)


SPECS = {"batch_size": 64, "betaB_G": 1000, "betaB_finC": 25, "betaB_initC": 0, "betaH_B": 4, "btcvae_A": 1,
         "btcvae_B": 6, "btcvae_G": 1, "dataset": "dsprites", "epochs": 30, "factor_G": 6, "img_size": [1, 64, 64],
         "latent_dim": 10, "loss": "betaH", "lr": 0.0005, "lr_disc": 5e-05, "model_type": "Burgess",
         "rec_dist": "bernoulli", "reg_anneal": 10000, "seed": 1234}


def _write_theirs(path: Path, latent_dim=10, seed=0, **specs) -> TheirVAE:
    torch.manual_seed(seed)
    theirs = TheirVAE(latent_dim).eval()
    path.mkdir(parents=True, exist_ok=True)
    torch.save(theirs.state_dict(), path / "model.pt")
    (path / "specs.json").write_text(json.dumps({**SPECS, "latent_dim": latent_dim, **specs}))
    return theirs


def _images(n=16, seed=0) -> torch.Tensor:
    from disentangle.data.render import render_images
    from disentangle.data.ground_truth import GroundTruth
    gt = GroundTruth.dsprites()
    classes = gt.sample_classes(n, np.random.default_rng(seed))
    return torch.from_numpy(render_images(gt, classes).astype(np.float32)).unsqueeze(1)


def _compare(theirs: TheirVAE, ours, x: torch.Tensor) -> dict:
    """Largest differences of means, log-variances, logits (their convT3's output, caught
    by a hook before their sigmoid) and probabilities."""
    caught = {}
    hook = theirs.decoder.convT3.register_forward_hook(lambda m, i, o: caught.update(logits=o))
    try:
        with torch.no_grad():
            mu_t, lv_t = theirs.encoder(x)
            mu_o, lv_o = ours.encode(x)
            probs_t = theirs.decoder(mu_t)
            logits_o = ours.decode(mu_o)
    finally:
        hook.remove()
    return {"mean": (mu_t - mu_o).abs().max().item(), "logvar": (lv_t - lv_o).abs().max().item(),
            "logits": (caught["logits"] - logits_o).abs().max().item(),
            "probs": (probs_t - torch.sigmoid(logits_o)).abs().max().item()}


def test_random_weights_map_exactly(tmp_path):
    theirs = _write_theirs(tmp_path / "m", latent_dim=7, seed=3)
    ours, fields, training = disvae.load_disvae(tmp_path / "m")
    x = _images(12)
    with torch.no_grad():
        mu_t, lv_t = theirs.encoder(x)
        mu_o, lv_o = ours.encode(x)
        # the same decoder input for both (their means)
        logits_o = ours.decode(mu_t)
        pre_sigmoid = theirs.decoder.convT3(torch.relu(theirs.decoder.convT2(torch.relu(theirs.decoder.convT1(
            torch.relu(theirs.decoder.convT_64(torch.relu(theirs.decoder.lin3(torch.relu(theirs.decoder.lin2(
                torch.relu(theirs.decoder.lin1(mu_t)))))).view(12, 32, 4, 4))))))))
    assert torch.equal(mu_t, mu_o) and torch.equal(lv_t, lv_o)
    assert torch.equal(pre_sigmoid, logits_o)   # their convT3 output is our logits, bit for bit
    assert torch.equal(torch.sigmoid(logits_o), theirs.decoder(mu_t))
    assert fields["latent_dim"] == 7 and training["loss"] == "betaH"


def test_interleaving_is_what_is_undone(tmp_path):
    """Reading the head the naive way (first D rows = means) would give other means."""
    theirs = _write_theirs(tmp_path / "m", seed=1)
    ours, _, _ = disvae.load_disvae(tmp_path / "m")
    x = _images(4)
    with torch.no_grad():
        naive_mean = theirs.encoder.mu_logvar_gen.weight[:10]
        assert not torch.equal(naive_mean, ours.encoder.head.weight[:10])
        assert torch.equal(theirs.encoder.mu_logvar_gen.weight[0::2], ours.encoder.head.weight[:10])
        assert torch.equal(theirs.encoder(x)[0], ours.encode(x)[0])


@pytest.mark.parametrize("loss, method, expect", [
    ("VAE", "beta-vae", {"beta": 1.0}),
    ("betaH", "beta-vae", {"beta": 4.0}),
    ("betaB", "annealed-vae", {"gamma": 1000.0, "capacity_max": 25.0, "capacity_steps": 10000}),
    ("btcvae", "beta-tcvae", {"beta": 6.0}),
    ("factor", "factor-vae", {"gamma": 6.0}),
])
def test_training_settings(loss, method, expect):
    fields, training = disvae.training_settings({**SPECS, "loss": loss})
    assert training["method"] == method
    for key, value in expect.items():
        assert fields[key] == value
    assert fields["steps"] == 30 * 11520 and fields["lr"] == 0.0005 and fields["seed"] == 1234


def _damaged(tmp_path, name, **change):
    d = tmp_path / name
    _write_theirs(d)
    return d


def test_refusals(tmp_path):
    with pytest.raises(UserError, match="no such directory"):
        disvae.load_disvae(tmp_path / "nope")
    d = _damaged(tmp_path, "a")
    (d / "specs.json").unlink()
    with pytest.raises(UserError, match="specs.json: missing"):
        disvae.load_disvae(d)
    d = _damaged(tmp_path, "b")
    (d / "specs.json").write_text(json.dumps({**SPECS, "model_type": "Higgins"}))
    with pytest.raises(UserError, match="model_type 'Higgins'"):
        disvae.load_disvae(d)
    (d / "specs.json").write_text(json.dumps({**SPECS, "img_size": [3, 64, 64]}))
    with pytest.raises(UserError, match="img_size"):
        disvae.load_disvae(d)
    (d / "specs.json").write_text(json.dumps({**SPECS, "loss": "dip"}))
    with pytest.raises(UserError, match="loss 'dip'"):
        disvae.load_disvae(d)
    (d / "specs.json").write_text("{not json")
    with pytest.raises(UserError, match="specs.json: unreadable"):
        disvae.load_disvae(d)
    d = _damaged(tmp_path, "c")
    (d / "specs.json").write_text(json.dumps({**SPECS, "latent_dim": 6}))
    with pytest.raises(UserError, match=r"has shape .*\(latent_dim 6 in specs.json\)"):
        disvae.load_disvae(d)
    d = _damaged(tmp_path, "d")
    (d / "model.pt").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="model.pt: unreadable model file"):
        disvae.load_disvae(d)
    state = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    del state["decoder.convT3.bias"]
    torch.save(state, d / "model.pt")
    with pytest.raises(UserError, match="missing decoder.convT3.bias"):
        disvae.load_disvae(d)
    torch.save({"encoder": [1, 2]}, d / "model.pt")
    with pytest.raises(UserError, match="model.pt: not a state dict"):
        disvae.load_disvae(d)
    out = tmp_path / "run"
    out.mkdir()
    (out / "x").write_text("")
    with pytest.raises(UserError, match="not empty"):
        import_disvae(_damaged(tmp_path, "e"), out)


def test_cli_import_evaluate_plot_report(tmp_path, tiny_data_path):
    from click.testing import CliRunner

    from disentangle.cli import main
    from disentangle.io import file_sha256
    from disentangle.results import collect
    theirs = _write_theirs(tmp_path / "theirs" / "betaB_dsprites", loss="betaB")
    runner = CliRunner()
    out = tmp_path / "results" / "disvae-betaB"
    res = runner.invoke(main, ["import", "disvae", str(tmp_path / "theirs" / "betaB_dsprites"), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "annealed-vae" in res.output
    saved = json.loads((out / "config.json").read_text())
    assert saved["origin"]["kind"] == "disvae"
    assert saved["origin"]["model_sha256"] == file_sha256(tmp_path / "theirs" / "betaB_dsprites" / "model.pt")
    assert saved["origin"]["training"]["specs"]["betaB_G"] == 1000
    status = json.loads((out / "status.json").read_text())
    assert status["state"] == "finished" and status["model_sha256"] == file_sha256(out / "model.pt")
    res = runner.invoke(main, ["evaluate", str(out), "--metric", "mig", "--data", str(tiny_data_path),
                               "--device", "cpu", "--param", "mig.num_train=300"])
    assert res.exit_code == 0, res.output
    scores = json.loads((out / "scores.json").read_text())
    assert scores["mig"]["model_sha256"] == status["model_sha256"]
    assert scores["mig"]["data"]["matches_training_data"] is None   # trained on the official file
    # the table was encoded by the imported model: equal to their encoder's means
    import h5py

    from disentangle.data.dsprites import DSpritesData
    data = DSpritesData(tiny_data_path)
    with h5py.File(out / "codes.h5") as f:
        table = f["mean"][:64]
    with torch.no_grad():
        mu = theirs.encoder(torch.from_numpy(data.images(np.arange(64)).astype(np.float32)).unsqueeze(1))[0]
    np.testing.assert_allclose(table, mu.numpy(), rtol=0, atol=1e-5)
    res = runner.invoke(main, ["plot", "traversal", str(out), "--data", str(tiny_data_path), "--device", "cpu",
                               "--out", str(tmp_path / "trav.png")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "trav.png").stat().st_size > 1000
    df = collect(tmp_path / "results")
    row = df.iloc[0]
    assert row["method"] == "annealed-vae"
    assert row["gamma"] == 1000.0 and np.isfinite(row["mig.discrete_mig"])
    res = runner.invoke(main, ["import", "disvae", str(tmp_path / "nothing"), "--out", str(tmp_path / "r2")])
    assert res.exit_code == 1 and res.output.count("\n") == 1 and "no such directory" in res.output


@pytest.fixture(scope="module")
def released():
    if not RELEASED.is_dir():
        pytest.skip(f"disentangling-vae's released models not found at {RELEASED} "
                    f"(../shared/released_models is absent)")
    return RELEASED


@pytest.mark.parametrize("name", RELEASED_NAMES)
def test_released_models_forward_equal(released, name):
    """Each released model: their forward pass (re-implemented above, their weights loaded
    strictly) and the imported toolkit model give the same means, log-variances and logits."""
    theirs = TheirVAE(10).eval()
    theirs.load_state_dict(torch.load(released / name / "model.pt", map_location="cpu", weights_only=True))
    ours, fields, training = disvae.load_disvae(released / name)
    x = _images(32, seed=5)
    diff = _compare(theirs, ours, x)
    assert diff == {"mean": 0.0, "logvar": 0.0, "logits": 0.0, "probs": 0.0}, diff
    specs = json.loads((released / name / "specs.json").read_text())
    assert training["loss"] == specs["loss"] and fields["lr"] == specs["lr"]
