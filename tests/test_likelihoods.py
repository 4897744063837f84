"""The discretised likelihoods for 8-bit pixels (normalised, against scipy/numpy and
mpmath, finite gradients), H(X) of byte rows, whether H(X) - D is reported as a bound,
and the bound on a model trained on a small 8-bit image set."""
from __future__ import annotations

import math
from collections import Counter
from types import SimpleNamespace

import mpmath
import numpy as np
import pytest
import torch
from scipy.stats import norm

from disentangle.errors import ParameterError
from disentangle.evaluation import information as info
from disentangle.models import likelihoods as L

LEVELS = torch.arange(256, dtype=torch.float64) / 255
LOG_PROB = {"discretized-gaussian": L.discretized_gaussian_log_prob,
            "discretized-logistic": L.discretized_logistic_log_prob}


CDF = {"discretized-gaussian": norm.cdf, "discretized-logistic": lambda y: 1.0 / (1.0 + np.exp(-y))}
SF = {"discretized-gaussian": norm.sf, "discretized-logistic": lambda y: 1.0 / (1.0 + np.exp(y))}


def reference_log_prob(name, k, mu, scale):
    """log P(level k) in numpy float64: CDF differences over bins of width 1/255 centred on
    k/255, the first and last open-ended (survival functions right of the mean, so the
    difference is of the two small numbers)."""
    k = np.asarray(k, dtype=np.float64)
    hi_y, lo_y = (k / 255 + 0.5 / 255 - mu) / scale, (k / 255 - 0.5 / 255 - mu) / scale
    left = np.where(k == 255, 1.0, CDF[name](hi_y)) - np.where(k == 0, 0.0, CDF[name](lo_y))
    right = np.where(k == 0, 1.0, SF[name](lo_y)) - np.where(k == 255, 0.0, SF[name](hi_y))
    return np.log(np.where(k / 255 > mu, right, left))


# =========================================================================== the likelihoods
@pytest.mark.parametrize("name", L.DISCRETIZED)
def test_the_256_levels_sum_to_one(name):
    # locations inside, at and far outside [0, 1]; scales from 1/80 of a level to e^15
    mus = torch.tensor([-3.0, -1e-3, 0.0, 1e-4, 0.5 / 255, 0.3, 0.5, 127.5 / 255, 0.77, 1.0, 1.002, 5.0],
                       dtype=torch.float64)
    log_scales = torch.tensor([-10.0, -8.0, -6.0, -5.5, -3.0, -1.0, 0.0, 2.0, 5.0, 15.0], dtype=torch.float64)
    lp = LOG_PROB[name](LEVELS[:, None, None], mus[None, :, None], log_scales[None, None, :])   # (256, μ, σ)
    assert lp.shape == (256, len(mus), len(log_scales))
    assert torch.isfinite(lp).all() and (lp <= 0).all()
    total = torch.logsumexp(lp, dim=0)
    assert total.abs().max().item() < 1e-12
    # a very narrow scale puts (almost) all the probability on the level holding the mean
    centre = LOG_PROB[name](LEVELS, torch.tensor(77 / 255, dtype=torch.float64), torch.tensor(-10.0))
    assert centre.argmax().item() == 77 and centre[77].item() > -1e-12


@pytest.mark.parametrize("name", L.DISCRETIZED)
@pytest.mark.parametrize("scale", [0.004, 0.05, 0.3, 2.0])
def test_log_prob_matches_scipy_and_numpy(name, scale):
    rng = np.random.default_rng(1)
    k = np.concatenate([[0, 1, 254, 255], rng.integers(0, 256, 200)])
    # locations a few scales around the level, and anywhere
    near = np.clip(k[4:104] / 255 + rng.normal(0, 3 * scale, 100), -0.05, 1.05)
    mu = np.concatenate([[0.0, 1.0, 0.5, 1.0], near, rng.uniform(-0.05, 1.05, 100)])
    with np.errstate(divide="ignore"):
        ref = reference_log_prob(name, k, mu, scale)
    ok = ref > -700          # where the float64 probabilities have not underflowed
    got = LOG_PROB[name](torch.from_numpy(k / 255), torch.from_numpy(mu),
                         torch.tensor(math.log(scale), dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-9, atol=1e-9)
    assert ok.sum() > 100


@pytest.mark.parametrize("name", L.DISCRETIZED)
def test_far_tails_match_mpmath(name):
    # bins tens of scales from the mean, where CDF differences in float64 would be 0 or 1 - 1
    mpmath.mp.dps = 60
    cdf = (lambda y: mpmath.ncdf(y)) if name == "discretized-gaussian" else (lambda y: 1 / (1 + mpmath.exp(-y)))
    for k, mu, scale in [(200, 0.1, 0.01), (3, 0.9, 0.02), (128, 0.3, 0.004), (0, 0.9, 0.01), (255, 0.1, 0.01),
                         (100, 100.5 / 255, 1e-4), (10, 0.5, 1e3)]:
        lo_y = (mpmath.mpf(k) / 255 - mpmath.mpf(1) / 510 - mpmath.mpf(mu)) / scale
        hi_y = (mpmath.mpf(k) / 255 + mpmath.mpf(1) / 510 - mpmath.mpf(mu)) / scale
        if k / 255 > mu:     # right of the mean: the mirror image (both distributions are symmetric)
            p = (1 if k == 0 else cdf(-lo_y)) - (0 if k == 255 else cdf(-hi_y))
        else:
            p = (1 if k == 255 else cdf(hi_y)) - (0 if k == 0 else cdf(lo_y))
        want = float(mpmath.log(p))
        got = LOG_PROB[name](torch.tensor(k / 255, dtype=torch.float64), torch.tensor(mu, dtype=torch.float64),
                             torch.tensor(math.log(scale), dtype=torch.float64)).item()
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (k, mu, scale)


@pytest.mark.parametrize("name", L.DISCRETIZED)
def test_per_image_nll_and_training_loss(name):
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.integers(0, 256, (3, 1, 64, 64)) / 255).float()
    logits = torch.from_numpy(rng.normal(0, 2, (3, 1, 64, 64))).float()
    raw = torch.tensor([-2.5])
    nll = L.nll_per_image(logits, x, name, raw)
    scale = math.exp(L.effective_log_scale(raw.double()).item())
    mu = 1 / (1 + np.exp(-logits.double().numpy()))
    ref = -reference_log_prob(name, np.rint(x.double().numpy() * 255), mu, scale).reshape(3, -1).sum(1)
    np.testing.assert_allclose(nll.numpy(), ref, rtol=1e-10)
    assert nll.dtype == torch.float64
    # the training term: the batch mean, through the objectives' dispatch
    from disentangle.models.objectives import reconstruction
    loss = reconstruction(logits, x, L.ScaledLikelihood(name, raw))
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(ref.mean(), rel=1e-6)
    with pytest.raises(ParameterError, match="log_scale"):
        L.nll_per_image(logits, x, name)
    with pytest.raises(ParameterError, match="likelihood"):
        L.nll_per_image(logits, x, "poisson")


def test_soft_floor_of_the_log_scale():
    raw = torch.tensor([-50.0, -10.0, 0.0, 3.0], dtype=torch.float64)
    eff = L.effective_log_scale(raw)
    assert eff[0].item() == pytest.approx(L.LOG_SCALE_MIN, abs=1e-15)
    assert eff[2].item() == pytest.approx(0.0, abs=1e-4) and eff[3].item() == pytest.approx(3.0, abs=1e-5)
    assert (eff >= L.LOG_SCALE_MIN).all() and (eff[1:] > raw[1:] - 1e-12).all()


@pytest.mark.parametrize("name", L.DISCRETIZED)
def test_gradients_are_finite_at_the_edges(name):
    # levels 0, 1, 128, 254, 255 under saturated and moderate logits, scales from the floor to e^12
    x = torch.tensor([0, 1, 128, 254, 255], dtype=torch.float32) / 255
    for logit in (-40.0, -8.0, 0.0, 8.0, 40.0):
        for raw in (-30.0, -10.0, -5.0, 0.0, 12.0):
            logits = torch.full((1, 1, 1, 5), logit, requires_grad=True)
            log_scale = torch.tensor([raw], requires_grad=True)
            loss = L.reconstruction_loss(logits, x.view(1, 1, 1, 5), L.ScaledLikelihood(name, log_scale))
            loss.backward()
            assert torch.isfinite(loss), (logit, raw)
            assert torch.isfinite(logits.grad).all() and torch.isfinite(log_scale.grad).all(), (logit, raw)


def test_bernoulli_and_gaussian_are_the_old_formulas():
    rng = np.random.default_rng(3)
    x = torch.from_numpy((rng.random((4, 1, 64, 64)) < 0.3).astype(np.float32))
    logits = torch.from_numpy(rng.normal(size=(4, 1, 64, 64)).astype(np.float32))
    import torch.nn.functional as F
    from disentangle.models.objectives import reconstruction
    assert torch.equal(reconstruction(logits, x, "bernoulli"),
                       F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 4)
    assert torch.equal(reconstruction(logits, x, "gaussian"), (torch.sigmoid(logits) - x).square().sum() / 4)
    assert torch.equal(info.reconstruction_nll(logits, x, "gaussian"),
                       (logits.sigmoid() - x).square().flatten(1).sum(dim=1) + L.GAUSSIAN_NLL_OFFSET)


def test_the_model_holds_and_saves_its_log_scale():
    from disentangle.models.architectures import VAE, build_model
    plain = build_model(4, "bernoulli", seed=5)
    model = build_model(4, "discretized-logistic", seed=5)
    assert "log_scale" not in plain.state_dict() and plain.output_likelihood() == "bernoulli"
    state = model.state_dict()
    assert state["log_scale"].tolist() == [pytest.approx(math.log(0.1))]
    # the networks' weights do not depend on the likelihood
    assert all(torch.equal(v, state[k]) for k, v in plain.state_dict().items())
    assert any(p is model.log_scale for p in model.parameters())        # the optimizer trains it
    with torch.no_grad():
        model.log_scale.fill_(-3.0)
    again = VAE(4, "discretized-logistic")
    again.load_state_dict(model.state_dict())
    assert again.log_scale.item() == -3.0
    assert again.output_likelihood().name == "discretized-logistic"


# =========================================================================== H(X) of byte rows
class EightBitData:
    """The slice of a dataset the info metric reads: ``images(indices)`` as floats in
    [0, 1] (grey, (n, 64, 64)), ``num_images``, provenance. No bit-packed images."""

    def __init__(self, levels: np.ndarray, sha=None):
        self.levels = np.asarray(levels, dtype=np.uint8)
        self.num_images = len(self.levels)
        self.path = "eight-bit"
        self.provenance = {"content_sha256": sha}

    def images(self, idx):
        return self.levels[np.asarray(idx)].astype(np.float32) / 255


def counter_entropy(rows):
    counts = np.array(list(Counter(bytes(r) for r in rows).values()), dtype=np.float64)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum()), len(counts)


@pytest.mark.parametrize("row_bytes", [3, 8, 4096, 4099])
def test_distinct_byte_rows_against_a_counter(row_bytes):
    rng = np.random.default_rng(row_bytes)
    base = rng.integers(0, 256, (40, row_bytes), dtype=np.uint8)
    base[1] = base[0]
    base[2, :-1] = base[0, :-1]                  # differs in the last byte only
    base[2, -1] = base[0, -1] ^ 1
    rows = base[rng.integers(0, 40, 300)]
    counts = info.distinct_image_counts(rows)
    h, distinct = counter_entropy(rows)
    assert counts.sum() == 300 and len(counts) == distinct
    assert info.entropy_from_counts(counts) == pytest.approx(h, abs=1e-12)


def test_entropy_of_an_eight_bit_dataset(tmp_path, monkeypatch):
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path))
    rng = np.random.default_rng(4)
    distinct = rng.integers(0, 256, (7, 64, 64), dtype=np.uint8)
    distinct[3] = distinct[2]
    distinct[4] = distinct[2]
    distinct[4, 10, 10] ^= 1                      # one level apart in one pixel: another image
    levels = distinct[rng.integers(0, 7, 90)]
    data = EightBitData(levels, sha="eightbit")
    hx = info.dataset_entropy(data)
    want, n_distinct = counter_entropy(levels.reshape(90, -1))
    assert hx["entropy_nats"] == pytest.approx(want, abs=1e-12) and hx["num_distinct"] == n_distinct == 6
    assert hx["pixels"] == "8-bit" and hx["cached"] is False
    again = info.dataset_entropy(data)
    assert again["cached"] and again["pixels"] == "8-bit" and again["entropy_nats"] == hx["entropy_nats"]
    # binary pixels read through images(): "binary"; off the 8-bit grid: "continuous", still exact
    assert info.dataset_entropy(EightBitData((levels > 127).astype(np.uint8) * 255), cache=False)["pixels"] == "binary"

    class Continuous(EightBitData):
        def images(self, idx):
            return super().images(idx) + 1e-3
    hc = info.dataset_entropy(Continuous(levels), cache=False)
    assert hc["pixels"] == "continuous" and hc["entropy_nats"] == pytest.approx(want, abs=1e-12)


# =========================================================================== bound or not
@pytest.mark.parametrize("likelihood,pixels,proper", [
    ("bernoulli", "binary", True), ("bernoulli", "8-bit", False), ("gaussian", "binary", False),
    ("gaussian", "8-bit", False), ("discretized-gaussian", "8-bit", True), ("discretized-logistic", "8-bit", True),
    ("discretized-gaussian", "binary", True), ("discretized-logistic", "continuous", False)])
def test_which_distortions_bound(likelihood, pixels, proper):
    is_proper, reason = L.proper_discrete(likelihood, pixels)
    assert is_proper is proper and (reason is None) is proper
    hx = {"entropy_nats": 4.0, "entropy_bits": 4.0 / math.log(2), "num_images": 100, "num_distinct": 60,
          "pixels": pixels}
    mi = {"i_q_nats": 3.0, "i_q_se_nats": 0.04, "i_q_samples": 1000, "total_correlation_nats": 0.1,
          "total_correlation_se_nats": 0.01, "dimension_wise_kl_nats": 0.2, "dimension_wise_kl_se_nats": 0.01}
    dist = {"distortion_nats": 2.0, "distortion_se_nats": 0.1, "distortion_images": 100, "likelihood": likelihood}
    from disentangle.evaluation.information.scores import assemble_values
    v = assemble_values(hx, np.array([2.0, 1.5]), mi, dist, 0.01, {})
    text = info.format_summary(v)
    assert v["is_bound"] is proper and v["pixels"] == pixels
    if proper:
        assert v["i_gen_lower_nats"] == 2.0 and v["no_bound_reason"] is None
        assert "lower bound on I_gen" in text and "2.000 <= 3.000 <= 3.500" in text
    else:
        assert math.isnan(v["i_gen_lower_nats"]) and v["no_bound_reason"]
        assert "NOT a bound: " + v["no_bound_reason"] in text
        assert "lower bound on I_gen" not in text and "H(X) - D <=" not in text


# =========================================================================== trained model
def shapes_on_backgrounds():
    """64 distinct grey 8-bit images (a 16x16 square at 4x4 positions in 4 levels on a
    background level), 5 copies each: H(X) = log 64."""
    imgs = []
    for fg in (60, 120, 180, 250):
        for i in range(4):
            for j in range(4):
                im = np.full((64, 64), 20, np.uint8)
                im[16 * i:16 * i + 16, 16 * j:16 * j + 16] = fg
                imgs.append(im)
    return np.repeat(np.stack(imgs), 5, axis=0)


def test_bound_holds_on_a_model_trained_on_eight_bit_images(tmp_path, monkeypatch):
    from disentangle.models.architectures import build_model
    from disentangle.models.methods import method_terms
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path))
    data = EightBitData(shapes_on_backgrounds())
    torch.manual_seed(0)
    model = build_model(4, "discretized-gaussian", seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = np.random.default_rng(0)
    first = None
    for step in range(STEPS):
        x = torch.from_numpy(data.images(gen.integers(0, data.num_images, 16))).unsqueeze(1)
        mean, logvar = model.encode(x)
        z = model.sample(mean, logvar, torch.randn_like(mean))
        terms = method_terms("beta-vae", x, model.decode(z), mean, logvar, z, step,
                             likelihood=model.output_likelihood(), hyper={"beta": 1.0})
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        first = terms["reconstruction"].item() if first is None else first
    assert terms["reconstruction"].item() < 0.9 * first           # it learned
    model.eval()
    with torch.no_grad():
        x = torch.from_numpy(data.images(np.arange(data.num_images))).unsqueeze(1)
        mean, logvar = (t.numpy() for t in model.encode(x))
    v = info.information_scores(model, SimpleNamespace(mean=mean, logvar=logvar), data, np.random.default_rng(0),
                                distortion_images="all", iq_se_target=0.05)
    print({k: v[k] for k in ("entropy_x_nats", "distortion_nats", "distortion_se_nats", "i_q_nats",
                             "i_q_se_nats", "rate_nats", "i_gen_lower_nats")},
          "scale", math.exp(L.effective_log_scale(model.log_scale.detach()).item()))
    assert v["pixels"] == "8-bit" and v["is_bound"] is True and v["no_bound_reason"] is None
    assert v["entropy_x_nats"] == pytest.approx(math.log(64), abs=1e-12)
    assert v["likelihood"] == "discretized-gaussian"
    assert v["sandwich_violations"] == 0
    assert v["i_gen_lower_nats"] <= v["i_q_nats"] + v["i_q_se_nats"] + v["distortion_se_nats"]
    assert v["i_q_nats"] <= v["rate_nats"] + v["i_q_se_nats"]
    assert "sandwich holds" in info.format_summary(v) and "lower bound on I_gen" in info.format_summary(v)


STEPS = 60


class OracleEightBit(torch.nn.Module):
    """Codes far apart per distinct image; decode(z) puts μ exactly on the levels of the
    image whose code is nearest, with a fixed log-scale: I_q = H(X) and D known in closed form."""

    def __init__(self, levels, log_scale, likelihood="discretized-gaussian"):
        super().__init__()
        _, first, image_of = np.unique(levels.reshape(len(levels), -1), axis=0, return_index=True,
                                       return_inverse=True)
        self.likelihood, self.latent_dim = likelihood, 3
        self.centres = torch.from_numpy(np.random.default_rng(9).normal(size=(len(first), 3)) * 40).float()
        p = levels[first].astype(np.float64) / 255
        self.logits = torch.from_numpy(np.log(p / (1 - p))).float().unsqueeze(1)
        self.log_scale = torch.nn.Parameter(torch.tensor([float(log_scale)]), requires_grad=False)
        self.mean = self.centres[torch.from_numpy(image_of.ravel())].numpy()
        self.logvar = np.full(self.mean.shape, -12.0, np.float32)

    def decode(self, z):
        return self.logits[torch.cdist(z, self.centres).argmin(dim=1)]


def test_oracle_closes_the_eight_bit_sandwich(tmp_path, monkeypatch):
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path))
    data = EightBitData(shapes_on_backgrounds())        # levels 20..250: every pixel an interior bin
    raw = -7.6                                          # σ ≈ 0.12 levels after the soft floor: D ≈ 1.3 nats
    model = OracleEightBit(data.levels, raw)
    codes = SimpleNamespace(mean=model.mean, logvar=model.logvar)
    v = info.information_scores(model, codes, data, np.random.default_rng(0), distortion_images="all")
    sigma = math.exp(L.effective_log_scale(torch.tensor(raw, dtype=torch.float64)).item())
    known_d = -4096 * math.log(math.erf(0.5 / 255 / sigma / math.sqrt(2)))
    assert 1.0 < known_d < 3.0
    assert v["distortion_nats"] == pytest.approx(known_d, rel=1e-5)   # float32 logits and log-scale
    assert v["is_bound"] and v["i_gen_lower_nats"] == pytest.approx(math.log(64) - known_d, rel=1e-5)
    assert v["i_q_nats"] == pytest.approx(math.log(64), abs=3 * v["i_q_se_nats"] + 1e-4)
    assert v["sandwich_violations"] == 0 and v["i_gen_lower_nats"] < v["i_q_nats"] <= v["rate_nats"]
    # the same oracle read as a bernoulli decoder of 8-bit intensities: no bound, and why
    model.likelihood = "bernoulli"
    b = info.information_scores(model, codes, data, np.random.default_rng(0), distortion_images=64)
    assert b["is_bound"] is False and math.isnan(b["i_gen_lower_nats"]) and "soft targets" in b["no_bound_reason"]
    assert "NOT a bound" in info.format_summary(b)


def test_train_and_info_with_a_discretized_likelihood_on_dsprites(tiny_data, tiny_data_path, tmp_path, monkeypatch):
    # through train() and load_model(): the log-scale is trained, saved and read back
    from disentangle.config import TrainConfig
    from disentangle.rundir import load_model
    from disentangle.train import train
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path / "cache"))
    config = TrainConfig(likelihood="discretized-logistic", steps=6, batch_size=8, lr=1e-2, latent_dim=3, seed=0,
                         data=str(tiny_data_path), device="cpu", threads=1, checkpoint_every=1000, log_every=3)
    model, _ = load_model(train(config, tmp_path / "run"))
    assert model.likelihood == "discretized-logistic" and model.log_scale.item() != pytest.approx(math.log(0.1))
    from disentangle.evaluation.codes import encode_dataset
    mean, logvar, _ = encode_dataset(model, tiny_data, progress=False)
    v = info.information_scores(model, SimpleNamespace(mean=mean, logvar=logvar), tiny_data,
                                np.random.default_rng(0), distortion_images=64, iq_min_samples=200, iq_se_target=0.3)
    assert v["pixels"] == "binary" and v["is_bound"] is True and math.isfinite(v["i_gen_lower_nats"])
