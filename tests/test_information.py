"""The info metric: known answers for H(X), rate, I_q, distortion; the fast aggregate-
posterior pass against the straightforward one; the bounds on a trained model."""
from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from disentangle.data.render import pack_images
from disentangle.errors import UserError
from disentangle.evaluation import information as info


class FakeData:
    """The slice of DSpritesData the info metric reads: packed images and provenance."""

    def __init__(self, packed, sha=None):
        self.packed = np.ascontiguousarray(packed, dtype=np.uint8)
        self.num_images = len(self.packed)
        self.path = "fake.h5"
        self.provenance = {"content_sha256": sha, "num_images": self.num_images}

    def images(self, idx):
        from disentangle.data.render import unpack_images
        return unpack_images(self.packed[np.asarray(idx)])


class ConstantDecoder(torch.nn.Module):
    """decode(z) -> the same logits for every z (and an encode that ignores its input)."""

    def __init__(self, logit: float, likelihood: str = "bernoulli", latent_dim: int = 3):
        super().__init__()
        self.logit = torch.nn.Parameter(torch.tensor(float(logit)), requires_grad=False)
        self.likelihood = likelihood
        self.latent_dim = latent_dim

    def encode(self, x):
        n = x.shape[0]
        return torch.zeros(n, self.latent_dim), torch.zeros(n, self.latent_dim)

    def decode(self, z):
        return self.logit.expand(z.shape[0], 1, 64, 64)


def random_packed(n, rng, density=0.1):
    return pack_images((rng.random((n, 64, 64)) < density).astype(np.uint8))


# =========================================================================== H(X)
def test_entropy_by_hand_with_duplicates(tmp_path, monkeypatch):
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path))
    rng = np.random.default_rng(0)
    a, b, c = random_packed(3, rng)
    packed = np.stack([a, c, a, b, c, c])             # counts 2, 1, 3
    counts = np.sort(info.distinct_image_counts(packed))
    assert counts.tolist() == [1, 2, 3]
    by_hand = -(2 / 6 * math.log(2 / 6) + 1 / 6 * math.log(1 / 6) + 3 / 6 * math.log(3 / 6))
    hx = info.dataset_entropy(FakeData(packed, sha="abc"))
    assert hx["entropy_nats"] == pytest.approx(by_hand, abs=1e-12)
    assert hx["entropy_bits"] == pytest.approx(by_hand / math.log(2), abs=1e-12)
    assert (hx["num_distinct"], hx["multiplicities"], hx["cached"]) == (3, {1: 1, 2: 1, 3: 1}, False)
    # second call: from the cache file, same numbers
    again = info.dataset_entropy(FakeData(packed, sha="abc"))
    assert again["cached"] and again["entropy_nats"] == hx["entropy_nats"]
    # a corrupt cache file is recomputed, not trusted
    (tmp_path / "entropy-abc.json").write_text("{not json")
    assert info.dataset_entropy(FakeData(packed, sha="abc"))["cached"] is False


def test_single_pixel_differences_are_distinct_images():
    # every one-pixel image and the blank: 4,097 distinct images, no hash merges them
    imgs = np.zeros((4097, 64 * 64), np.uint8)
    imgs[np.arange(4096), np.arange(4096)] = 1
    packed = pack_images(imgs.reshape(-1, 64, 64))
    packed = np.concatenate([packed, packed[:100]])          # 100 duplicates on top
    counts = info.distinct_image_counts(packed)
    assert len(counts) == 4097 and counts.sum() == 4197 and (counts == 2).sum() == 100


def test_counts_match_sorting_rows():
    rng = np.random.default_rng(1)
    base = random_packed(300, rng, density=0.02)
    packed = base[rng.integers(0, 300, size=2000)]
    _, expect = np.unique(packed.view(np.dtype((np.void, 512))).ravel(), return_counts=True)
    assert np.array_equal(np.sort(info.distinct_image_counts(packed)), np.sort(expect))


def test_rendered_orientation_0_and_2pi_collapse(tmp_path, monkeypatch):
    from disentangle.data.dsprites import DSpritesData, render_dataset
    from disentangle.data.ground_truth import GroundTruth
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path / "cache"))
    gt = GroundTruth.dsprites().subgrid({"shape": [0, 2], "scale": [3], "orientation": [0, 39],
                                         "pos_x": range(0, 32, 8), "pos_y": range(0, 32, 8)})
    data = DSpritesData(render_dataset(tmp_path / "dup.h5", gt))
    hx = info.dataset_entropy(data)
    # 2 shapes x 16 positions, each drawn at 0 and at 2 pi: 32 distinct images, twice each
    assert hx["num_distinct"] == 32 and hx["multiplicities"] == {2: 32}
    assert hx["entropy_nats"] == pytest.approx(math.log(32), abs=1e-12)


# =========================================================================== rate
def test_analytic_kl_matches_monte_carlo():
    rng = np.random.default_rng(2)
    mean = rng.normal(size=8) * 1.5
    logvar = rng.uniform(-3, 1.5, size=8)
    analytic = info.kl_to_standard_normal(mean, logvar)
    z = mean + np.exp(0.5 * logvar) * rng.standard_normal((200_000, 8))
    log_ratio = info.gaussian_log_density(z, mean, logvar) - info.gaussian_log_density(z, 0.0, 0.0)
    mc = log_ratio.mean(axis=0)
    se = log_ratio.std(axis=0) / math.sqrt(len(z))
    assert np.all(np.abs(mc - analytic) < 4 * se + 1e-9)
    assert info.kl_to_standard_normal(np.zeros(3), np.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_rate_per_dim_and_active_dims():
    rng = np.random.default_rng(3)
    mean = np.zeros((1000, 3), np.float32)
    logvar = np.zeros((1000, 3), np.float32)
    mean[:, 1] = rng.normal(size=1000) * 2
    logvar[:, 1] = -4
    mean[:, 2] = 0.05                                   # KL 0.00125: below the threshold
    kl = info.rate_per_dim(mean, logvar)
    assert kl[0] == 0.0
    assert kl[1] == pytest.approx(info.kl_to_standard_normal(mean[:, 1], logvar[:, 1]).mean(), rel=1e-12)
    assert kl[2] == pytest.approx(0.5 * 0.05 ** 2, rel=1e-5)
    assert int((kl > info.ACTIVE_THRESHOLD_NATS).sum()) == 1


# =========================================================================== I_q
def test_encoder_that_ignores_its_input_carries_no_information():
    rng = np.random.default_rng(4)
    n = 800
    prior = info.mutual_information(np.zeros((n, 4), np.float32), np.zeros((n, 4), np.float32), rng,
                                    min_samples=500)
    assert abs(prior["i_q_nats"]) < 1e-5 and abs(prior["total_correlation_nats"]) < 1e-5
    assert abs(prior["dimension_wise_kl_nats"]) < 1e-5
    assert info.rate_per_dim(np.zeros((n, 4)), np.zeros((n, 4))).sum() == 0.0
    # the same posterior for every image but not the prior: R > 0, I_q still 0
    mean = np.tile(np.array([[1.0, -2.0, 0.5]], np.float32), (n, 1))
    logvar = np.tile(np.array([[-1.0, 0.3, -2.0]], np.float32), (n, 1))
    same = info.mutual_information(mean, logvar, rng, min_samples=500)
    assert abs(same["i_q_nats"]) < 1e-5 and abs(same["total_correlation_nats"]) < 1e-5
    rate = info.rate_per_dim(mean, logvar).sum()
    assert rate > 2.0
    # marginal KL = R - I_q = TC + dimension-wise KL; here all of R is dimension-wise KL
    assert same["dimension_wise_kl_nats"] == pytest.approx(rate, abs=5 * same["dimension_wise_kl_se_nats"] + 1e-6)


def test_far_apart_tiny_posteriors_give_the_entropy_of_the_data():
    rng = np.random.default_rng(5)
    # 1,536 images, 600 distinct ones with uneven multiplicities; identical images share a code
    image_of = np.concatenate([np.arange(600), rng.integers(0, 600, size=936)])
    distinct_means = rng.normal(size=(600, 4)) * 30
    mean = distinct_means[image_of].astype(np.float32)
    logvar = np.full(mean.shape, -12.0, np.float32)
    counts = np.bincount(image_of)
    h = info.entropy_from_counts(counts)
    assert h < math.log(1536)
    mi = info.mutual_information(mean, logvar, rng, min_samples=2000, se_target=0.01)
    assert mi["i_q_nats"] == pytest.approx(h, abs=3 * mi["i_q_se_nats"] + 1e-3)
    assert mi["i_q_nats"] <= math.log(1536) + 1e-9
    # with every image distinct, I_q -> log N exactly (no sampling error left)
    mi_all = info.mutual_information(distinct_means.astype(np.float32), np.full((600, 4), -12.0, np.float32),
                                     rng, min_samples=500)
    assert mi_all["i_q_nats"] == pytest.approx(math.log(600), abs=1e-4)
    assert mi_all["i_q_se_nats"] < 1e-4


def test_fast_pass_matches_straightforward_log_sum_exp():
    rng = np.random.default_rng(6)
    n, d = 3000, 5
    mean = (rng.normal(size=(n, d)) * 2).astype(np.float32)
    logvar = rng.uniform(-14, 1, size=(n, d)).astype(np.float32)   # sigma from 1e-3 to 1.6
    post = info.AggregatePosterior(mean, logvar)
    idx = rng.integers(0, n, size=300)
    z = info.sample_posterior(mean, logvar, idx, rng)
    joint, marg = post.log_densities(z, idx, row_tile=128, col_tile=512)   # uneven last tiles
    joint_ref, marg_ref = info.log_aggregate_reference(z, mean, logvar)
    np.testing.assert_allclose(joint, joint_ref, atol=2e-4, rtol=0)
    np.testing.assert_allclose(marg, marg_ref, atol=2e-4, rtol=0)


def test_overflowing_rows_fall_back_to_the_exact_pass():
    # the sample's own posterior is wide; another is 1e-5 wide and sits on the sample:
    # its density is e^115 times larger, beyond float32 -> those rows are recomputed
    d = 10
    z = np.full((2, d), 0.3, np.float32)
    mean = np.stack([np.zeros(d), np.full(d, 0.3)]).astype(np.float32)
    logvar = np.stack([np.zeros(d), np.full(d, -23.0)]).astype(np.float32)
    post = info.AggregatePosterior(mean, logvar)
    joint, marg = post.log_densities(z, np.array([0, 0]))
    assert post.fallback_rows == 2
    joint_ref, marg_ref = info.log_aggregate_reference(z, mean, logvar)
    np.testing.assert_allclose(joint, joint_ref, rtol=1e-12)
    np.testing.assert_allclose(marg, marg_ref, rtol=1e-12)
    # a posterior so wide that every 1-D density is below e^-87: the floor would
    # dominate the sum, so the row is recomputed exactly too
    mean, logvar = np.zeros((3, 2), np.float32), np.full((3, 2), 180.0, np.float32)
    post = info.AggregatePosterior(mean, logvar)
    z = np.array([[1.0, -2.0]], np.float32)
    joint, marg = post.log_densities(z, np.array([1]))
    assert post.fallback_rows == 1
    np.testing.assert_allclose(marg, -0.5 * (math.log(2 * math.pi) + 180.0) + np.zeros((1, 2)), rtol=1e-9)
    np.testing.assert_allclose(joint, marg.sum(axis=1), rtol=1e-9)


def test_sample_count_reaches_the_standard_error_target():
    rng = np.random.default_rng(7)
    mean = (rng.normal(size=(2000, 3)) * 2).astype(np.float32)
    logvar = rng.uniform(-4, 0, size=(2000, 3)).astype(np.float32)
    mi = info.mutual_information(mean, logvar, rng, se_target=0.02, min_samples=300, max_samples=50_000)
    assert mi["i_q_se_nats"] <= 0.021 and mi["i_q_samples"] > 300
    capped = info.mutual_information(mean, logvar, rng, se_target=1e-6, min_samples=300, max_samples=700)
    assert capped["i_q_samples"] == 700


# =========================================================================== distortion
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_distortion_of_a_constant_decoder_is_known(likelihood):
    from disentangle.models.objectives import GAUSSIAN_NLL_OFFSET
    rng = np.random.default_rng(8)
    imgs = (rng.random((50, 64, 64)) < 0.2).astype(np.uint8)
    data = FakeData(pack_images(imgs))
    model = ConstantDecoder(0.7, likelihood)
    mean = rng.normal(size=(50, 3)).astype(np.float32)
    logvar = np.zeros((50, 3), np.float32)
    out = info.distortion(model, data, mean, logvar, rng, images="all", batch_size=16)
    on = imgs.reshape(50, -1).sum(axis=1)
    if likelihood == "bernoulli":   # -log p = on*softplus(-l) + off*softplus(l)
        sp = lambda v: math.log1p(math.exp(v))  # noqa: E731
        per_image = on * sp(-0.7) + (4096 - on) * sp(0.7)
    else:                           # -log N(x; sigmoid(l), 1/2)
        mu = 1 / (1 + math.exp(-0.7))
        per_image = on * (1 - mu) ** 2 + (4096 - on) * mu ** 2 + GAUSSIAN_NLL_OFFSET
    assert out["distortion_nats"] == pytest.approx(per_image.mean(), rel=1e-6)
    assert out["distortion_se_nats"] == pytest.approx(per_image.std(ddof=1) / math.sqrt(50), rel=1e-4)
    assert out["distortion_images"] == 50 and out["likelihood"] == likelihood
    sub = info.distortion(model, data, mean, logvar, rng, images=20)
    assert sub["distortion_images"] == 20


# =========================================================================== the metric
def _codes_of(model, data):
    from disentangle.evaluation.codes import encode_dataset
    mean, logvar, _ = encode_dataset(model, data, progress=False)
    return SimpleNamespace(mean=mean, logvar=logvar)


def test_gaussian_decoder_reports_no_bound(tiny_data, tmp_path, monkeypatch):
    from disentangle.models.architectures import build_model
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path))
    model = build_model(4, "gaussian", seed=1).eval()
    codes = _codes_of(model, tiny_data)
    v = info.information_scores(model, codes, tiny_data, np.random.default_rng(0),
                                distortion_images=200, iq_min_samples=300, iq_se_target=0.2)
    assert v["likelihood"] == "gaussian" and v["is_bound"] is False
    assert math.isnan(v["i_gen_lower_nats"])
    # same seed, same numbers
    again = info.information_scores(model, codes, tiny_data, np.random.default_rng(0),
                                    distortion_images=200, iq_min_samples=300, iq_se_target=0.2)
    for key, value in v.items():
        if not key.startswith("seconds"):
            assert again[key] == value or (value != value and again[key] != again[key]), key
    text = info.format_summary(v)
    assert "NOT a bound" in text and "lower bound on I_gen" not in text
    with pytest.raises(UserError, match="unknown parameter"):
        info.information_scores(model, codes, tiny_data, np.random.default_rng(0), samples=3)
    for bad in ({"distortion_images": "some"}, {"distortion_images": 1}, {"iq_se_target": 0},
                {"iq_max_samples": 50, "iq_min_samples": 100}, {"decode_batch_size": 0}):
        with pytest.raises(UserError, match=rf"^info\.{next(iter(bad))} "):
            info.information_scores(model, codes, tiny_data, np.random.default_rng(0), **bad)


def test_summary_warns_when_the_sandwich_breaks():
    kl = {f"kl_dim_{j}": 1.0 for j in range(3)}
    good = dict(entropy_x_nats=7.0, num_distinct_images=1500, log_num_images_nats=7.3, distortion_nats=5.0,
                distortion_se_nats=0.1, distortion_images=1536, likelihood="bernoulli", is_bound=True,
                rate_nats=3.0, i_q_nats=2.5, i_q_se_nats=0.04, i_q_samples=1000, i_gen_lower_nats=2.0,
                marginal_kl_nats=0.5, total_correlation_nats=0.1, total_correlation_se_nats=0.01,
                dimension_wise_kl_nats=0.4, dimension_wise_kl_se_nats=0.01, active_dims=3,
                active_threshold_nats=0.01, **kl)
    text = info.format_summary(good)
    assert "2.000 <= 2.500 <= 3.000" in text and "WARNING" not in text
    assert "WARNING" in info.format_summary({**good, "i_q_nats": 3.1})          # above R
    assert "WARNING" in info.format_summary({**good, "i_gen_lower_nats": 2.7})  # lower bound above I_q
    assert "WARNING" not in info.format_summary({**good, "i_q_nats": 3.03})     # within one SE


class OracleAutoencoder(torch.nn.Module):
    """Codes far apart per distinct image (sigma = e^-6); decode(z) returns +-20 logits of
    the image whose code is nearest: I_q = H(X), D ~ 4096 softplus(-20) ~ 1e-5."""

    likelihood = "bernoulli"

    def __init__(self, packed, rng):
        super().__init__()
        _, first, image_of = np.unique(packed.view(np.dtype((np.void, 512))).ravel(), return_index=True,
                                       return_inverse=True)
        self.latent_dim = 3
        self.register_buffer("centres", torch.from_numpy(rng.normal(size=(len(first), 3)) * 40).float())
        imgs = np.unpackbits(packed[first], axis=1).astype(np.float32)
        self.register_buffer("logits", torch.from_numpy((2 * imgs - 1) * 20).view(-1, 1, 64, 64))
        self.mean = self.centres[torch.from_numpy(image_of.ravel())].numpy()
        self.logvar = np.full(self.mean.shape, -12.0, np.float32)

    def decode(self, z):
        return self.logits[torch.cdist(z, self.centres).argmin(dim=1)]


def test_oracle_autoencoder_closes_the_sandwich(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path))
    model = OracleAutoencoder(tiny_data.packed, np.random.default_rng(9))
    codes = SimpleNamespace(mean=model.mean, logvar=model.logvar)
    v = info.information_scores(model, codes, tiny_data, np.random.default_rng(0), distortion_images="all")
    assert 0 < v["distortion_nats"] < 1e-4
    assert v["i_q_nats"] == pytest.approx(v["entropy_x_nats"], abs=3 * v["i_q_se_nats"] + 1e-4)
    assert v["i_gen_lower_nats"] == pytest.approx(v["entropy_x_nats"], abs=1e-4)
    assert v["i_gen_lower_nats"] <= v["i_q_nats"] + v["i_q_se_nats"] <= v["rate_nats"]
    assert v["sandwich_violations"] == 0 and v["rate_nats"] > 30
    assert v["active_dims"] == 3


def test_bounds_hold_on_a_trained_model(tiny_data, tiny_data_path, tmp_path, monkeypatch):
    from disentangle.config import TrainConfig
    from disentangle.rundir import load_model
    from disentangle.train import train
    monkeypatch.setenv(info.CACHE_ENV_VAR, str(tmp_path / "cache"))
    # beta-b with a 10-nat capacity: a 40-step run cannot collapse to zero rate
    config = TrainConfig(method="beta-b", gamma=100.0, capacity_max=10.0, capacity_steps=20, steps=40,
                         batch_size=16, lr=1e-3, latent_dim=4, seed=0, data=str(tiny_data_path),
                         device="cpu", threads=1, checkpoint_every=1000, log_every=20)
    run = train(config, tmp_path / "run")
    model, _ = load_model(run)
    codes = _codes_of(model, tiny_data)
    v = info.information_scores(model, codes, tiny_data, np.random.default_rng(0), distortion_images=512,
                                iq_se_target=0.05)
    assert v["distortion_images"] == 512 and v["is_bound"] is True
    assert v["i_q_se_nats"] <= 0.05 * 1.2
    assert v["rate_nats"] > 1.0                        # the capacity kept the rate up
    assert v["sandwich_violations"] == 0
    assert v["i_gen_lower_nats"] <= v["i_q_nats"] + v["i_q_se_nats"] + v["distortion_se_nats"]
    assert v["i_q_nats"] <= v["rate_nats"] + v["i_q_se_nats"]
    assert v["i_q_nats"] <= v["entropy_x_nats"] + v["i_q_se_nats"]
    assert v["marginal_kl_nats"] == pytest.approx(v["rate_nats"] - v["i_q_nats"])
    # marginal KL = TC + dimension-wise KL (three estimates from the same samples)
    assert v["marginal_kl_nats"] == pytest.approx(v["total_correlation_nats"] + v["dimension_wise_kl_nats"],
                                                  abs=4 * (v["i_q_se_nats"] + v["total_correlation_se_nats"]
                                                           + v["dimension_wise_kl_se_nats"]))
    assert sum(v[f"kl_dim_{j}"] for j in range(4)) == pytest.approx(v["rate_nats"])
    assert "sandwich holds" in info.format_summary(v)
