"""The architectures (shapes, parameter counts, TF layout) and the six methods' losses
against independent numpy computations (no training loop)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from disentangle.config import PRESETS, TrainConfig, check_hyperparameters_given
from disentangle.errors import UserError
from disentangle.models import methods
from disentangle.models.architectures import (ARCHITECTURES, FcDiscriminator, build_discriminator, build_model,
                                              parameter_count, tf_same_padding)


# --------------------------------------------------------------------------- architectures
def conv(cin, cout, k):
    return cin * cout * k * k + cout


def dense(n_in, n_out):
    return n_in * n_out + n_out


# by hand, from dlib's architectures.py (10 latents)
DLIB_ENCODER = conv(1, 32, 4) + conv(32, 32, 4) + conv(32, 64, 2) + conv(64, 64, 2) + dense(1024, 256) + 2 * dense(256, 10)
DLIB_DECODER = dense(10, 256) + dense(256, 1024) + conv(64, 64, 4) + conv(64, 32, 4) + conv(32, 32, 4) + conv(32, 1, 4)
FC_ENCODER = dense(4096, 1200) + dense(1200, 1200) + 2 * dense(1200, 10)
FC_DECODER = dense(10, 1200) + 2 * dense(1200, 1200) + dense(1200, 4096)
BURGESS_ENCODER = 4 * 0 + conv(1, 32, 4) + 3 * conv(32, 32, 4) + dense(512, 256) + dense(256, 256) + dense(256, 20)
BURGESS_DECODER = dense(10, 256) + dense(256, 256) + dense(256, 512) + 3 * conv(32, 32, 4) + conv(32, 1, 4)


@pytest.mark.parametrize("architecture,encoder,decoder", [
    ("burgess", BURGESS_ENCODER, BURGESS_DECODER), ("dlib", DLIB_ENCODER, DLIB_DECODER), ("fc", FC_ENCODER, FC_DECODER)])
def test_parameter_counts_and_shapes(architecture, encoder, decoder):
    assert (DLIB_ENCODER, DLIB_DECODER) == (309_204, 381_313)
    model = build_model(10, "bernoulli", 0, architecture)
    assert parameter_count(model.encoder) == encoder and parameter_count(model.decoder) == decoder
    x = (torch.rand(3, 1, 64, 64, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    for mixed, channels_last in ((None, False), (None, True), (torch.bfloat16, True)):
        model.set_execution(mixed, channels_last)
        mean, logvar = model.encode(x)
        logits = model.decode(mean)
        assert mean.shape == logvar.shape == (3, 10) and logits.shape == (3, 1, 64, 64)
        # the posterior and the logits stay float32 in mixed precision
        assert mean.dtype == logvar.dtype == logits.dtype == torch.float32
        if mixed is None and channels_last:
            torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)   # layout changes nothing
        reference = logits


def test_dlib_layers_and_tf_same_padding():
    model = build_model(10, "bernoulli", 0, "dlib")
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0]) for c in convs] == \
        [(32, 4, 2, 1), (32, 4, 2, 1), (64, 2, 2, 0), (64, 2, 2, 0)]
    deconvs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(d.out_channels, d.kernel_size[0], d.stride[0], d.padding[0]) for d in deconvs] == \
        [(64, 4, 2, 1), (32, 4, 2, 1), (32, 4, 2, 1), (1, 4, 2, 1)]
    # TF "same": out = ceil(in / s), pad_total = (out − 1)·s + k − in, split evenly here
    assert [tf_same_padding(n, 4, 2) for n in (64, 32)] == [1, 1]
    assert [tf_same_padding(n, 2, 2) for n in (16, 8)] == [0, 0]
    with pytest.raises(ValueError, match="asymmetric"):
        tf_same_padding(63, 4, 2)


def test_dlib_flatten_follows_tensorflow_hwc_order():
    """Feature h·(4·64) + w·64 + c of the encoder's fc input is conv channel c at (h, w),
    as tf.layers.flatten of an NHWC tensor; the decoder's reshape is the inverse."""
    model = build_model(10, "bernoulli", 0, "dlib")
    x = (torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    act = model.encoder.conv(x)                                 # (n, 64, 4, 4) NCHW
    tf_flat = act.detach().numpy().transpose(0, 2, 3, 1).reshape(2, -1)
    fc = model.encoder.fc[0]
    got = torch.relu(fc(torch.from_numpy(tf_flat)))
    torch.testing.assert_close(model.encoder.fc(act.permute(0, 2, 3, 1).reshape(2, -1)), got)
    mean, _ = model.encoder(x)
    torch.testing.assert_close(mean, model.encoder.mean(got))
    # decoder: feature i of fc 1024 lands at NHWC position (i // 256, (i // 64) % 4, i % 64)
    z = torch.randn(2, 10, generator=torch.Generator().manual_seed(2))
    feats = model.decoder.fc(model.decoder.stem(z)).detach().numpy()
    grid = feats.reshape(2, 4, 4, 64).transpose(0, 3, 1, 2)     # TF reshape, then to NCHW
    torch.testing.assert_close(model.decoder(z), model.decoder.head(torch.relu(model.decoder.deconv(torch.from_numpy(grid.copy())))))


@pytest.mark.parametrize("architecture", ["dlib", "fc"])
def test_tf1_default_initialisation(architecture):
    model = build_model(10, "bernoulli", 3, architecture)
    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    for m in layers:
        assert torch.count_nonzero(m.bias) == 0
        w = m.weight.detach()
        rf = w[0, 0].numel() if w.dim() == 4 else 1
        fan_sum = (w.shape[0] + w.shape[1]) * rf
        limit = math.sqrt(6.0 / fan_sum)
        assert float(w.abs().max()) <= limit
        if w.numel() >= 2000:   # uniform on [−limit, limit]: std limit/√3
            assert float(w.std()) == pytest.approx(limit / math.sqrt(3), rel=0.1)


def test_discriminator_shape_and_clipping():
    d = FcDiscriminator(10)
    assert parameter_count(d) == dense(10, 1000) + 5 * dense(1000, 1000) + dense(1000, 2)
    logits, probs = d(torch.randn(5, 10) * 1e4)
    assert logits.shape == probs.shape == (5, 2)
    lo, hi = torch.tensor(1e-6), torch.tensor(1 - 1e-6)   # the clip bounds in float32
    assert probs.min() == lo and probs.max() == hi and bool(((probs >= lo) & (probs <= hi)).all())


# --------------------------------------------------------------------------- losses vs numpy
N, D = 7, 3


@pytest.fixture
def batch():
    g = np.random.default_rng(0)
    x = (g.random((N, 1, 8, 8)) > 0.6).astype(np.float32)
    logits = g.normal(size=(N, 1, 8, 8)).astype(np.float32)
    mean = g.normal(size=(N, D)).astype(np.float32)
    logvar = (0.5 * g.normal(size=(N, D))).astype(np.float32)
    z = (mean + np.exp(0.5 * logvar) * g.normal(size=(N, D))).astype(np.float32)
    return {k: v.astype(np.float64) for k, v in dict(x=x, logits=logits, mean=mean, logvar=logvar, z=z).items()}


def torch_terms(batch, objective, step=0, **kw):
    t = {k: torch.from_numpy(v) for k, v in batch.items()}
    hyper = {"beta": 1.0, "gamma": 1.0, "capacity_max": 0.0, "capacity_steps": 1, "lambda_od": 1.0, **kw.pop("hyper", {})}
    out = methods.method_terms(objective, t["x"], t["logits"], t["mean"], t["logvar"], t["z"], step,
                               likelihood="bernoulli", hyper=hyper, **kw)
    return {k: v.detach().numpy() for k, v in out.items()}


def np_recon(b):
    p = 1 / (1 + np.exp(-b["logits"]))
    return float(-(b["x"] * np.log(p) + (1 - b["x"]) * np.log(1 - p)).sum() / N)


def np_kl(b):
    return float((0.5 * (b["mean"] ** 2 + np.exp(b["logvar"]) - b["logvar"] - 1)).sum(axis=1).mean())


def np_tc(z, mean, logvar):
    """Σ over j of [log Σ_i q(z_j|x_i) − Σ_l log Σ_i q(z_jl|x_i)] / n, by loops."""
    n, d = z.shape
    total = 0.0
    for j in range(n):
        joint = [sum(-0.5 * ((z[j, l] - mean[i, l]) ** 2 / math.exp(logvar[i, l]) + logvar[i, l] + math.log(2 * math.pi))
                     for l in range(d)) for i in range(n)]
        log_qz = math.log(sum(math.exp(v) for v in joint))
        marg = 0.0
        for l in range(d):
            marg += math.log(sum(math.exp(-0.5 * ((z[j, l] - mean[i, l]) ** 2 / math.exp(logvar[i, l])
                                                  + logvar[i, l] + math.log(2 * math.pi))) for i in range(n)))
        total += log_qz - marg
    return total / n


def test_beta_vae_and_aliases(batch):
    got = torch_terms(batch, "beta-vae", hyper={"beta": 4.0})
    assert got["loss"] == pytest.approx(np_recon(batch) + 4.0 * np_kl(batch), rel=1e-12)
    assert got["kl_dims"].sum() == pytest.approx(np_kl(batch), rel=1e-12)
    assert torch_terms(batch, "beta-h", hyper={"beta": 4.0})["loss"] == got["loss"]


def test_annealed_vae_capacity_schedule(batch):
    hyper = {"gamma": 100.0, "capacity_max": 25.0, "capacity_steps": 1000}
    for step in (0, 200, 1000, 5000):
        c = min(25.0, 25.0 * step / 1000)
        want = np_recon(batch) + 100.0 * abs(np_kl(batch) - c)
        assert torch_terms(batch, "annealed-vae", step, hyper=hyper)["loss"] == pytest.approx(want, rel=1e-12)
        assert torch_terms(batch, "beta-b", step, hyper=hyper)["loss"] == pytest.approx(want, rel=1e-12)


def test_beta_tcvae_against_loops(batch):
    got = torch_terms(batch, "beta-tcvae", hyper={"beta": 6.0})
    tc = np_tc(batch["z"], batch["mean"], batch["logvar"])
    assert got["tc"] == pytest.approx(tc, rel=1e-10)
    assert got["loss"] == pytest.approx(np_recon(batch) + np_kl(batch) + 5.0 * tc, rel=1e-10)


def test_tc_estimator_identical_posteriors_is_minus_d_minus_1_log_n():
    # every image has the same posterior: q(z) = q(z|x) factorises, and dlib's estimator
    # (constants dropped) gives log n − D·log n whatever z is
    g = torch.Generator().manual_seed(3)
    n, d = 16, 5
    mean = torch.randn(1, d, generator=g, dtype=torch.float64).expand(n, d)
    logvar = torch.randn(1, d, generator=g, dtype=torch.float64).expand(n, d)
    z = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    assert float(methods.total_correlation(z, mean, logvar)) == pytest.approx(-(d - 1) * math.log(n), rel=1e-12)


@pytest.mark.parametrize("method,factor", [("dip-vae-i", 10.0), ("dip-vae-ii", 1.0)])
def test_dip_vae_against_numpy(batch, method, factor):
    got = torch_terms(batch, method, hyper={"lambda_od": 2.0})
    cov = np.cov(batch["mean"].T, bias=True)
    if method == "dip-vae-ii":
        cov = cov + np.diag(np.exp(batch["logvar"]).mean(axis=0))
    off = float(((cov - np.diag(np.diag(cov))) ** 2).sum())
    diag = float(((np.diag(cov) - 1) ** 2).sum())
    assert got["dip_off_diagonal"] == pytest.approx(off, rel=1e-10)
    assert got["dip_diagonal"] == pytest.approx(diag, rel=1e-10)
    assert got["loss"] == pytest.approx(np_recon(batch) + np_kl(batch) + 2.0 * off + factor * 2.0 * diag, rel=1e-10)


def np_discriminator(d: FcDiscriminator, z: np.ndarray):
    h = z
    layers = [m for m in d.modules() if isinstance(m, torch.nn.Linear)]
    for i, m in enumerate(layers):
        h = h @ m.weight.detach().double().numpy().T + m.bias.detach().double().numpy()
        if i < len(layers) - 1:
            h = np.where(h > 0, h, 0.2 * h)
    p = np.exp(h - h.max(axis=1, keepdims=True))
    return h, np.clip(p / p.sum(axis=1, keepdims=True), 1e-6, 1 - 1e-6)


def test_factor_vae_against_numpy(batch):
    d = build_discriminator(D, seed=0).double()
    g = torch.Generator().manual_seed(0)
    z_shuffled = methods.shuffle_codes(torch.from_numpy(batch["z"]), g)
    zs = z_shuffled.numpy()
    # each column is a permutation of the same column of z, and the columns differ in order
    for l in range(D):
        assert sorted(zs[:, l]) == sorted(batch["z"][:, l])
    got = torch_terms(batch, "factor-vae", hyper={"gamma": 30.0}, discriminator=d, z_shuffled=z_shuffled)
    logits_z, p_z = np_discriminator(d, batch["z"])
    logits_s, p_s = np_discriminator(d, zs)
    tc = float((logits_z[:, 0] - logits_z[:, 1]).mean())
    assert got["tc"] == pytest.approx(tc, rel=1e-9)
    assert got["loss"] == pytest.approx(np_recon(batch) + np_kl(batch) + 30.0 * tc, rel=1e-10)
    disc = 0.5 * np.log(p_z[:, 0]).mean() + 0.5 * np.log(p_s[:, 1]).mean()
    assert got["discriminator_loss"] == pytest.approx(-disc, rel=1e-9)
    acc = 0.5 * ((logits_z.argmax(1) == 0).mean() + (logits_s.argmax(1) == 1).mean())
    assert got["discriminator_accuracy"] == pytest.approx(acc)


def test_factor_vae_discriminator_separates_correlated_codes_from_their_shuffle():
    """z with two strongly correlated dimensions: the product of its marginals (the
    shuffle) fills the square, q(z) a thin diagonal; dlib's discriminator and optimizer
    tell them apart within a few hundred steps (here: 50 steps of batch 32)."""
    torch.manual_seed(0)
    d = build_discriminator(2, seed=0)
    opt = torch.optim.Adam(d.parameters(), **methods.DISCRIMINATOR_ADAM)
    g = torch.Generator().manual_seed(1)
    accs, losses = [], []
    for _ in range(50):
        a = torch.randn(32, 1, generator=g)
        z = torch.cat([a, a + 0.1 * torch.randn(32, 1, generator=g)], dim=1)
        zs = methods.shuffle_codes(z, g)
        logits_z, p_z = d(z)
        logits_s, p_s = d(zs)
        loss = -(0.5 * p_z[:, 0].log().mean() + 0.5 * p_s[:, 1].log().mean())
        opt.zero_grad()
        loss.backward()
        opt.step()
        accs.append(0.5 * float((logits_z.argmax(1) == 0).float().mean() + (logits_s.argmax(1) == 1).float().mean()))
        losses.append(float(loss.detach()))
    assert losses[0] == pytest.approx(math.log(2), abs=0.1)   # starts at chance
    assert np.mean(accs[-20:]) > 0.8 and np.mean(losses[-20:]) < 0.5


# --------------------------------------------------------------------------- configuration
def test_preset_dlib_is_the_study_setting():
    c = TrainConfig.from_preset("dlib").validate()
    assert (c.architecture, c.lr, c.batch_size, c.steps, c.latent_dim, c.likelihood) == \
        ("dlib", 1e-4, 64, 300_000, 10, "bernoulli")
    assert PRESETS["dlib"]["architecture"] == "dlib"
    assert TrainConfig().architecture == "burgess" and set(ARCHITECTURES) == {"burgess", "dlib", "fc"}


def test_unused_hyperparameter_and_unknown_names_are_one_line_errors():
    with pytest.raises(UserError, match=r"^gamma: not a hyper-parameter of method beta-tcvae \(it uses beta\)$"):
        check_hyperparameters_given("beta-tcvae", ["gamma", "steps"])
    with pytest.raises(UserError, match=r"^beta: not a hyper-parameter of method dip-vae-i \(it uses lambda_od\)"):
        check_hyperparameters_given("dip-vae-i", ["beta"])
    check_hyperparameters_given("beta-b", ["gamma", "capacity_max", "capacity_steps", "seed"])
    with pytest.raises(UserError, match=r"^architecture: unknown architecture 'resnet' \(choose from burgess, dlib, fc\)"):
        TrainConfig(architecture="resnet").validate()
    with pytest.raises(UserError, match=r"^method: unknown method 'vae' \(choose from beta-vae, annealed-vae, "
                                        r"beta-tcvae, factor-vae, dip-vae-i, dip-vae-ii, beta-h, beta-b\)"):
        TrainConfig(method="vae").validate()
