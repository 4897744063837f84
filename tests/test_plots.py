"""Figures on the toolkit-made results tree of test_report.py: files are valid PNG and PDF,
and the plotted data (read back from the matplotlib artists) is the table's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from disentangle import plots
from disentangle.errors import UserError
from disentangle.evaluation import figure_data
from disentangle.report import aggregate
from disentangle.results import collect, read_json

from test_report import RUNS, results_tree, run_name  # the same tree, built once per session

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PDF_MAGIC = b"%PDF-"


@pytest.fixture(scope="session")
def tree(tmp_path_factory, tiny_data_path) -> Path:
    return results_tree(tmp_path_factory.mktemp("tree"), tiny_data_path)


@pytest.fixture()
def df(tree):
    return collect(tree)


def _assert_saved(fig, out: Path):
    png, pdf = plots.save_figure(fig, out)
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5_000
    assert pdf.read_bytes()[:5] == PDF_MAGIC and pdf.read_bytes().rstrip().endswith(b"%%EOF")
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]  # atomic writes left nothing
    return png, pdf


def _texts(fig) -> str:
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")))


def _by_gid(fig, gid: str):
    found = fig.findobj(lambda a: a.get_gid() == gid)
    assert len(found) == 1, gid
    return found[0]


def test_rate_distortion_plots_every_run_and_the_bound(df, tmp_path):
    fig = plots.rate_distortion(df)
    for objective in ("beta-h", "beta-b"):
        runs = df[df["objective"] == objective]
        points = _by_gid(fig, f"runs:{objective}").get_offsets()
        want = runs[["info.rate_nats", "info.distortion_nats"]].to_numpy()
        assert np.allclose(sorted(map(tuple, np.asarray(points))), sorted(map(tuple, want)))
    # beta-h points are coloured by beta
    colours = _by_gid(fig, "runs:beta-h").get_array()
    assert sorted(colours) == sorted(df.loc[df["objective"] == "beta-h", "beta"])
    h = df["info.entropy_x_nats"].iloc[0]
    assert np.allclose(df["info.entropy_x_nats"], h)
    line = _by_gid(fig, f"bound:{round(h, 6)}")
    assert np.allclose(line.get_xdata(), [0, h]) and np.allclose(line.get_ydata(), [h, 0])
    text = _texts(fig)
    assert "rendered (dsprites-render-1), 1,536 images" in text and "(nats)" in text
    ax = line.axes
    assert ax.get_xlim()[1] >= df["info.rate_nats"].max() and ax.get_ylim()[1] >= df["info.distortion_nats"].max()
    _assert_saved(fig, tmp_path / "rd.png")


def test_rate_distortion_draws_no_bound_for_gaussian_runs(df):
    gauss = df.copy()
    gauss["likelihood"] = "gaussian"
    gauss["info.is_bound"] = False
    fig = plots.rate_distortion(gauss)
    assert not fig.findobj(lambda a: str(a.get_gid()).startswith("bound:"))
    assert "no bound" in _texts(fig)


def test_metric_vs_beta_lines_and_bands_are_the_aggregated_table(df, tmp_path):
    fig = plots.metric_vs_beta(df, ["mig", "info.rate_nats"])
    for col in ("mig.discrete_mig", "info.rate_nats"):
        agg = aggregate(df[df["objective"] == "beta-h"], ["objective", "beta"], [col]).sort_values("beta")
        lines = [ln for ln in fig.findobj(lambda a: a.get_gid() == "mean:beta-h")
                 if ln.axes.get_ylabel() == plots.metric_label(col)]
        assert len(lines) == 1
        line = lines[0]
        assert np.allclose(line.get_xdata(), agg["beta"]) and np.allclose(line.get_ydata(), agg[f"{col}.mean"])
        assert line.axes.get_xscale() == "log"
        band = [b for b in line.axes.collections if b.get_gid() == "band:beta-h"][0]
        ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        lo = (agg[f"{col}.mean"] - agg[f"{col}.std"]).min()
        hi = (agg[f"{col}.mean"] + agg[f"{col}.std"]).max()
        assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(hi)
        dots = [d for d in line.axes.collections if d.get_gid() == "seeds:beta-h"][0]
        assert len(dots.get_offsets()) == (df["objective"] == "beta-h").sum()
    # capacity runs do not use beta: they are not on a beta axis
    assert not fig.findobj(lambda a: a.get_gid() == "mean:beta-b")
    assert "1,536 images" in _texts(fig)
    _assert_saved(fig, tmp_path / "mvb")
    with pytest.raises(UserError, match="--metric nope"):
        plots.metric_vs_beta(df, ["nope"])


def test_traversal_rows_sorted_by_kl_and_labelled(tree, tiny_data, tmp_path):
    run = tree / run_name("beta-h", 1.0, 0)
    fig = plots.traversal(figure_data.traversals(run, tiny_data, n_images=2, steps=5))
    info = fig.traversal_info
    kl = info["kl"]
    # the KL of the codes table is the info metric's per-dimension rate
    scores = read_json(run / "scores.json")["info"]["values"]
    assert np.allclose(kl, [scores[f"kl_dim_{d}"] for d in range(len(kl))], rtol=1e-4, atol=1e-6)
    assert list(info["order"]) == sorted(range(len(kl)), key=lambda d: -kl[d])
    assert np.allclose(info["values"], np.linspace(-3, 3, 5))
    image = _by_gid(fig, "traversal:0")
    labels = [t.get_text() for t in image.axes.get_yticklabels()]
    assert labels == [f"z{d}  KL {kl[d]:.2f}" for d in info["order"]]
    h, w = image.get_array().shape
    assert h == len(kl) * (64 + 3) and w == 2 * 64 + 6 + 5 * 64 + 4
    # the base image is the dataset's, shown inverted (object dark on white)
    assert np.array_equal(image.get_array()[:64, :64], 1.0 - tiny_data.images(info["indices"][:1])[0])
    _assert_saved(fig, tmp_path / "traversal.pdf")


def test_kl_per_dimension_rebuilds_a_stale_codes_table_loudly_and_labels_a_sample(tree, tiny_data, tmp_path):
    import shutil

    import h5py

    from disentangle.evaluation.codes import codes_state
    from disentangle.rundir import RunDir
    source = tree / run_name("beta-h", 1.0, 0)
    fresh = read_json(source / "scores.json")["info"]["values"]
    run = RunDir(shutil.copytree(source, tmp_path / "run"))
    model, _ = run.load_model()
    # a table stamped for another model: rebuilt, with a message first (never silently)
    with h5py.File(run.codes_path, "r+") as f:
        f.attrs["model_sha256"] = "0" * 64
    messages = []
    kl = figure_data.kl_per_dimension(run, model, tiny_data, echo=messages.append)
    assert len(messages) == 1 and "model.pt changed" in messages[0] and "re-encoding all 1,536 images" in messages[0]
    assert codes_state(run, tiny_data) == "fresh" and not kl.sampled and kl.num_images == 1536
    assert np.allclose(kl.kl, [fresh[f"kl_dim_{d}"] for d in range(len(kl.kl))], rtol=1e-4, atol=1e-6)
    # no table: a sample estimate, labelled as one in the figure, and nothing written
    run.codes_path.unlink()
    t = figure_data.traversals(run, tiny_data, n_images=1, steps=3, echo=messages.append)
    assert t.kl.sampled and t.kl.num_images == 1536 and not run.codes_path.exists()
    assert len(messages) == 2 and "missing" in messages[1] and "random sample of 1,536 images" in messages[1]
    assert np.allclose(t.kl.kl, kl.kl, rtol=1e-4, atol=1e-6)   # all 1,536 images were the sample
    assert "random sample of 1,536 images (no codes table)" in _texts(plots.traversal(t))


def test_reconstructions_show_the_images_and_their_distortion(tree, tiny_data, tmp_path):
    import torch
    import torch.nn.functional as F

    from disentangle.rundir import load_model
    run = tree / run_name("beta-h", 4.0, 1)
    fig = plots.reconstructions(figure_data.reconstructions(run, tiny_data, n_images=4, seed=3))
    idx = fig.reconstruction_info["indices"]
    x = tiny_data.images(idx).astype(np.float32)
    model, _ = load_model(run)
    with torch.no_grad():
        xt = torch.from_numpy(x).unsqueeze(1)
        logits = model.decode(model.encode(xt)[0])
        nll = F.binary_cross_entropy_with_logits(logits, xt, reduction="none").sum(dim=(1, 2, 3)).numpy()
        recon = torch.sigmoid(logits).numpy()[:, 0]
    assert np.allclose(fig.reconstruction_info["distortion"], nll, rtol=1e-5)
    for k in range(4):
        assert np.array_equal(_by_gid(fig, f"original:{k}").get_array(), 1.0 - x[k])
        assert np.allclose(_by_gid(fig, f"reconstruction:{k}").get_array(), 1.0 - recon[k], atol=1e-6)
    assert f"{nll[0]:.1f}" in _texts(fig) and "(nats)" in _texts(fig)
    _assert_saved(fig, tmp_path / "rec")


def test_training_curves_are_the_log(tree, tmp_path):
    runs = [tree / run_name(*RUNS[0]), tree / run_name("beta-b", 1.0, 0)]
    fig = plots.training(runs)
    for run in runs:
        log = pd.read_csv(run / "train_log.csv")
        for col in ["loss", "reconstruction", "kl"] + [f"kl_{d}" for d in range(3)]:
            line = _by_gid(fig, f"{col}:{run.name}")
            assert np.array_equal(line.get_xdata(), log["step"]) and np.allclose(line.get_ydata(), log[col])
    cap = _by_gid(fig, f"capacity:{runs[1].name}")  # the capacity target of the beta-b run
    assert np.allclose(cap.get_ydata(), pd.read_csv(runs[1] / "train_log.csv")["capacity"])
    assert not fig.findobj(lambda a: a.get_gid() == f"capacity:{runs[0].name}")
    assert "nats" in _texts(fig)
    _assert_saved(fig, tmp_path / "training.png")
    with pytest.raises(UserError, match="train_log.csv"):
        plots.training([tmp_path])


def test_run_data_refuses_a_different_dataset(tree, tmp_path):
    from disentangle.data.dsprites import render_dataset
    from disentangle.data.ground_truth import GroundTruth
    other = render_dataset(tmp_path / "other.h5", GroundTruth.dsprites().subgrid(
        {"scale": [0], "orientation": [0], "pos_x": [0, 16], "pos_y": [0, 16]}))
    with pytest.raises(UserError, match="not the dataset"):
        plots.run_data(tree / run_name(*RUNS[0]), other)


def test_cli_plot_commands_write_png_and_pdf(tree, tmp_path):
    from click.testing import CliRunner

    from disentangle.cli import main
    runner = CliRunner()
    run = str(tree / run_name(*RUNS[0]))
    commands = {
        "rd": ["rate-distortion", str(tree)],
        "mvb": ["metric-vs-beta", str(tree), "--metric", "mig", "--metric", "beta_vae"],
        "trav": ["traversal", run, "--images", "1", "--steps", "3"],
        "rec": ["reconstructions", run, "--images", "3"],
        "train": ["training", run],
    }
    for name, args in commands.items():
        res = runner.invoke(main, ["plot", *args, "--out", str(tmp_path / f"{name}.png")])
        assert res.exit_code == 0, (name, res.output)
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == PDF_MAGIC
    # --dpi sets the PNG's pixel size (the rate-distortion figure is 5.8 in wide for one dataset)
    res = runner.invoke(main, ["plot", "rate-distortion", str(tree), "--dpi", "60", "--out", str(tmp_path / "small")])
    assert res.exit_code == 0, res.output
    assert int.from_bytes((tmp_path / "small.png").read_bytes()[16:20], "big") == round(5.8 * 60)
    # default location: <run>/figures/
    res = runner.invoke(main, ["plot", "training", run])
    assert res.exit_code == 0 and (Path(run) / "figures" / "training.pdf").is_file()
    res = runner.invoke(main, ["plot", "metric-vs-beta", str(tree), "--metric", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "--metric nope" in res.output and "Traceback" not in res.output


def test_mixed_data_sources_get_their_own_panels(tree, tmp_path):
    import shutil

    from disentangle.results import write_json_atomic
    copy = Path(shutil.copytree(tree, tmp_path / "copy", ignore=shutil.ignore_patterns("*.pt", "codes.h5")))
    moved = copy / run_name("beta-h", 4.0, 1)
    cfg = read_json(moved / "config.json")
    cfg["data"] = {"source": "official", "source_checksum": "md5:x", "content_sha256": "f" * 64,
                   "num_images": 737_280}
    write_json_atomic(moved / "config.json", cfg)
    df = collect(copy)
    fig = plots.rate_distortion(df)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_title().startswith("data: ")}
    assert set(panels) == {"data: official", "data: rendered (dsprites-render-1), 1,536 images"}
    official = [c for c in panels["data: official"].collections if str(c.get_gid()).startswith("runs:")]
    assert len(official) == 1 and len(official[0].get_offsets()) == 1
    fig = plots.metric_vs_beta(df, ["mig"])
    means = fig.findobj(lambda a: a.get_gid() == "mean:beta-h")
    assert len(means) == 2  # one line per dataset, never one line through both
    by_title = {ln.axes.get_title(): ln for ln in means}
    official_line = next(ln for t, ln in by_title.items() if "official" in t)
    assert list(official_line.get_xdata()) == [4.0]
    assert official_line.get_ydata()[0] == df.loc[df["run"] == moved.name, "mig.discrete_mig"].item()
