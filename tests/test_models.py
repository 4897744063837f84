"""The β-VAE network, its objectives and the run configuration (no training loop)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from disentangle.config import PRESETS, TrainConfig, differing_keys
from disentangle.errors import ParameterError, UserError
from disentangle.models import methods, objectives
from disentangle.models.architectures import VAE, build_model


def test_shapes_and_architecture():
    model = VAE(latent_dim=7)
    x = torch.zeros(3, 1, 64, 64)
    mean, logvar = model.encode(x)
    assert mean.shape == (3, 7) and logvar.shape == (3, 7)
    assert model.decode(mean).shape == (3, 1, 64, 64)
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (4, 4), (2, 2))] * 4
    fcs = [m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert fcs == [256, 256, 14]
    deconvs = [m for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [d.out_channels for d in deconvs] == [32, 32, 32, 1]


def test_forward_without_noise_decodes_the_mean():
    model = build_model(4, "bernoulli", seed=0)
    x = (torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    logits, mean, _ = model(x)
    torch.testing.assert_close(logits, model.decode(mean))


def test_build_model_depends_only_on_seed_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = build_model(10, "bernoulli", 3), build_model(10, "bernoulli", 3), build_model(10, "bernoulli", 4)
    assert torch.equal(torch.get_rng_state(), state)
    for (k, va), vb, vc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(va, vb), k
    assert not all(torch.equal(va, vc) for va, vc in zip(a.state_dict().values(), c.state_dict().values()))


def test_bernoulli_reconstruction_is_summed_nats_per_image():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 64, 64, generator=g)
    x = (torch.rand(5, 1, 64, 64, generator=g) > 0.7).float()
    p = torch.sigmoid(logits.double())
    by_hand = -(x * p.log() + (1 - x) * (1 - p).log()).sum(dim=(1, 2, 3)).mean()
    got = objectives.reconstruction(logits, x, "bernoulli")
    assert got.item() == pytest.approx(by_hand.item(), rel=1e-5)
    # logits 0 = coin flips: exactly 4096·log 2 nats per image, whatever the batch size
    assert objectives.reconstruction(torch.zeros(3, 1, 64, 64), x[:3], "bernoulli").item() == \
        pytest.approx(4096 * math.log(2), rel=1e-6)


def test_gaussian_reconstruction_is_squared_error_and_a_shifted_nll():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 1, 64, 64, generator=g)
    x = (torch.rand(4, 1, 64, 64, generator=g) > 0.5).float()
    sse = objectives.reconstruction(logits, x, "gaussian")
    mu = torch.sigmoid(logits).double()
    assert sse.item() == pytest.approx(((mu - x) ** 2).sum(dim=(1, 2, 3)).mean().item(), rel=1e-5)
    nll = -torch.distributions.Normal(mu, math.sqrt(0.5)).log_prob(x.double()).sum(dim=(1, 2, 3)).mean()
    assert nll.item() - sse.item() == pytest.approx(objectives.GAUSSIAN_NLL_OFFSET, rel=1e-6)


def test_kl_per_dimension_matches_torch_distributions_and_sums_to_total():
    g = torch.Generator().manual_seed(2)
    mean, logvar = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    kl_dims = objectives.kl_per_dim(mean, logvar)
    q = torch.distributions.Normal(mean, (0.5 * logvar).exp())
    ref = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).mean(dim=0)
    torch.testing.assert_close(kl_dims, ref)
    terms = methods.method_terms("beta-h", torch.ones(6, 1, 64, 64), torch.zeros(6, 1, 64, 64), mean, logvar, mean,
                                 0, likelihood="bernoulli", hyper={"beta": 4.0})
    loss, recon, kl, dims = terms["loss"], terms["reconstruction"], terms["kl"], terms["kl_dims"]
    assert kl.item() == pytest.approx(dims.sum().item())
    assert loss.item() == pytest.approx(recon.item() + 4.0 * kl.item(), rel=1e-6)
    assert objectives.kl_per_dim(torch.zeros(2, 3), torch.zeros(2, 3)).abs().max().item() == 0.0


def test_capacity_schedule():
    cap = objectives.capacity
    assert cap(0, 25.0, 1000) == 0.0
    assert cap(250, 25.0, 1000) == pytest.approx(6.25)
    assert cap(500, 25.0, 1000) == pytest.approx(12.5)
    assert cap(1000, 25.0, 1000) == 25.0
    assert cap(5000, 25.0, 1000) == 25.0   # held after the ramp


def test_beta_b_objective_penalises_distance_from_capacity():
    mean, logvar = torch.full((2, 1), 2.0), torch.zeros(2, 1)   # KL = 2 nats
    x, logits = torch.ones(2, 1, 64, 64), torch.zeros(2, 1, 64, 64)
    for cap, expected in ((0.0, 2000.0), (2.0, 0.0), (5.0, 3000.0)):
        # C = cap at step 1 of a 1-step ramp (0 at step 0)
        terms = methods.method_terms("beta-b", x, logits, mean, logvar, mean, 0 if cap == 0.0 else 1,
                                     likelihood="bernoulli",
                                     hyper={"gamma": 1000.0, "capacity_max": cap, "capacity_steps": 1})
        loss, recon, kl = terms["loss"], terms["reconstruction"], terms["kl"]
        assert kl.item() == pytest.approx(2.0)
        assert (loss - recon).item() == pytest.approx(expected, abs=1e-3)


def test_config_round_trip_presets_and_identity():
    c = TrainConfig.from_preset("dlib", beta=4, seed=3, threads=None)
    assert c.steps == PRESETS["dlib"]["steps"] == 300_000 and c.beta == 4.0 and isinstance(c.beta, float)
    assert TrainConfig.from_dict(c.to_dict()) == c
    d = c.to_dict()
    assert differing_keys(d, {**d, "threads": 2, "device": "cpu", "data": "x.h5", "log_every": 7}) == []
    assert differing_keys(d, {**d, "beta": 8.0, "steps": 10}) == ["beta", "steps"]


@pytest.mark.parametrize("change, parameter", [
    ({"beta": -1.0}, "beta"), ({"steps": 0}, "steps"), ({"steps": -5}, "steps"),
    ({"method": "beta-x"}, "method"), ({"likelihood": "poisson"}, "likelihood"),
    ({"lr": 0.0}, "lr"), ({"batch_size": 0}, "batch_size"), ({"device": "tpu"}, "device"),
    ({"beta": float("nan")}, "beta"), ({"threads": 0}, "threads"),
])
def test_config_validation_names_the_parameter(change, parameter):
    """The library names the parameter; the CLI shows it as its flag."""
    from disentangle.cli import flag_of, user_message
    with pytest.raises(ParameterError, match=f"^{parameter}: ") as info:
        TrainConfig(**change).validate()
    assert info.value.parameter == parameter
    assert user_message(info.value).startswith(flag_of(parameter) + ": ")


def test_unknown_config_key_and_preset_are_refused():
    with pytest.raises(UserError, match="unknown training configuration key"):
        TrainConfig.from_dict({"beta": 1.0, "betta": 2.0})
    with pytest.raises(UserError, match="^preset: unknown preset"):
        TrainConfig.from_preset("paper")


def test_bce_matches_plain_formula_used_by_the_benchmark_baseline():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 1, 64, 64, generator=g) * 4
    x = (torch.rand(4, 1, 64, 64, generator=g) > 0.5).float()
    # independent of torch: -log sigmoid(l) for x = 1, -log(1 - sigmoid(l)) for x = 0, in
    # float64 numpy via the stable form max(l, 0) - l x + log(1 + e^-|l|)
    l, t = logits.numpy().astype(np.float64), x.numpy().astype(np.float64)
    plain = (np.maximum(l, 0) - l * t + np.log1p(np.exp(-np.abs(l)))).reshape(4, -1).sum(axis=1).mean()
    assert objectives.reconstruction(logits, x, "bernoulli").item() == pytest.approx(plain, rel=1e-6)
    # the benchmark's baseline loss (benchmarks/bench_train.py) is the same number
    baseline = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 4
    assert baseline.item() == pytest.approx(plain, rel=1e-6)


def test_execution_settings_keep_the_function_and_the_state_dict():
    model = build_model(10, "bernoulli", seed=0)
    names = {k: v.clone() for k, v in model.state_dict().items()}
    x = (torch.rand(8, 1, 64, 64, generator=torch.Generator().manual_seed(4)) > 0.8).float()
    noise = torch.randn(8, 10, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref_logits, ref_mean, ref_logvar = model(x, noise)
        model.set_execution(channels_last=True)
        logits, mean, logvar = model(x, noise)
        torch.testing.assert_close(logits, ref_logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mean, ref_mean, rtol=1e-4, atol=1e-5)
        model.set_execution(torch.bfloat16, channels_last=True)
        logits, mean, logvar = model(x, noise)
    # float32 where it matters: posterior parameters and logits
    assert mean.dtype == logvar.dtype == logits.dtype == torch.float32
    # bfloat16 bulk: close to float32 (8-bit mantissa), far from a different model
    assert (logits - ref_logits).abs().max().item() < 0.05 * ref_logits.abs().max().item()
    assert (mean - ref_mean).abs().max().item() < 0.05 * ref_mean.abs().max().item() + 1e-3
    assert model.state_dict().keys() == names.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in names.items())
