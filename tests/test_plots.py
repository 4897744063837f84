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
from disentangle.io import read_json
from disentangle.results import collect

from test_report import (RUNS, SIX_METHODS, results_tree, run_name,  # the same tree, built once per session
                         six_method_tree)

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
    for method in ("beta-vae", "annealed-vae"):   # the tree's beta-h and beta-b runs
        runs = df[df["method"] == method]
        points = _by_gid(fig, f"runs:{method}").get_offsets()
        want = runs[["info.rate_nats", "info.distortion_nats"]].to_numpy()
        assert np.allclose(sorted(map(tuple, np.asarray(points))), sorted(map(tuple, want)))
    # one method alone: its runs are coloured by its strength (β), as before methods
    single = plots.rate_distortion(df[df["method"] == "beta-vae"])
    colours = _by_gid(single, "runs:beta-vae").get_array()
    assert sorted(colours) == sorted(df.loc[df["method"] == "beta-vae", "beta"])
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


def test_metric_vs_strength_lines_and_bands_are_the_aggregated_table(df, tmp_path):
    fig = plots.metric_vs_strength(df, ["mig", "info.rate_nats"])
    for col in ("mig.discrete_mig", "info.rate_nats"):
        agg = aggregate(df[df["method"] == "beta-vae"], ["method", "beta"], [col]).sort_values("beta")
        lines = [ln for ln in fig.findobj(lambda a: a.get_gid() == "mean:beta-vae")
                 if ln.axes.get_ylabel() == plots.metric_label(col)]
        assert len(lines) == 1
        line = lines[0]
        assert np.allclose(line.get_xdata(), agg["beta"]) and np.allclose(line.get_ydata(), agg[f"{col}.mean"])
        assert line.axes.get_xscale() == "linear"   # β ∈ {1, 4} spans no decade
        band = [b for b in line.axes.collections if b.get_gid() == "band:beta-vae"][0]
        ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        lo = (agg[f"{col}.mean"] - agg[f"{col}.std"]).min()
        hi = (agg[f"{col}.mean"] + agg[f"{col}.std"]).max()
        assert ys.min() == pytest.approx(lo) and ys.max() == pytest.approx(hi)
        dots = [d for d in line.axes.collections if d.get_gid() == "seeds:beta-vae"][0]
        assert len(dots.get_offsets()) == (df["method"] == "beta-vae").sum()
    # the capacity runs have their own row, on their own hyper-parameter's axis
    capacity = fig.findobj(lambda a: a.get_gid() == "mean:annealed-vae")
    assert len(capacity) == 2 and all(list(ln.get_xdata()) == [5.0] for ln in capacity)
    assert all("C_{\\max}" in ln.axes.get_xlabel() for ln in capacity)
    assert "1,536 images" in _texts(fig)
    _assert_saved(fig, tmp_path / "mvb")
    with pytest.raises(UserError, match="^metric nope: no such score"):
        plots.metric_vs_strength(df, ["nope"])
    assert plots.metric_vs_beta is not None   # the first name still draws the same figure


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
        recon = torch.sigmoid(logits).numpy()[:, 0]     # figure_data's images are (n, C, 64, 64); C = 1
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
    from disentangle.rundir import RunDir
    other = render_dataset(tmp_path / "other.h5", GroundTruth.dsprites().subgrid(
        {"scale": [0], "orientation": [0], "pos_x": [0, 16], "pos_y": [0, 16]}))
    with pytest.raises(UserError, match="not the dataset"):
        RunDir(tree / run_name(*RUNS[0])).dataset(other, require_training_data=True)


def test_cli_plot_commands_write_png_and_pdf(tree, tmp_path):
    from click.testing import CliRunner

    from disentangle.cli import main
    runner = CliRunner()
    run = str(tree / run_name(*RUNS[0]))
    commands = {
        "rd": ["rate-distortion", str(tree)],
        "mvb": ["metric-vs-beta", str(tree), "--metric", "mig", "--metric", "beta_vae"],
        "mvs": ["metric-vs-strength", str(tree), "--metric", "mig"],
        "trav": ["traversal", run, "--images", "1", "--steps", "3"],
        "rec": ["reconstructions", run, "--images", "3"],
        "train": ["training", run],
    }
    for name, args in commands.items():
        res = runner.invoke(main, ["plot", *args, "--out", str(tmp_path / f"{name}.png")])
        assert res.exit_code == 0, (name, res.output)
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == PDF_MAGIC
    # --dpi sets the PNG's pixel size (the rate-distortion figure is 7.0 in wide for one dataset and
    # several methods: 4.6 in of panel, 2.4 in of legend beside it)
    res = runner.invoke(main, ["plot", "rate-distortion", str(tree), "--dpi", "60", "--out", str(tmp_path / "small")])
    assert res.exit_code == 0, res.output
    assert int.from_bytes((tmp_path / "small.png").read_bytes()[16:20], "big") == round(7.0 * 60)
    # default location: <run>/figures/
    res = runner.invoke(main, ["plot", "training", run])
    assert res.exit_code == 0 and (Path(run) / "figures" / "training.pdf").is_file()
    res = runner.invoke(main, ["plot", "metric-vs-beta", str(tree), "--metric", "nope", "--out", str(tmp_path / "x")])
    assert res.exit_code == 1 and "--metric nope" in res.output and "Traceback" not in res.output


def test_mixed_data_sources_get_their_own_panels(tree, tmp_path):
    import shutil

    from disentangle.io import write_json_atomic
    copy = Path(shutil.copytree(tree, tmp_path / "copy", ignore=shutil.ignore_patterns("*.pt", "codes.h5")))
    moved = copy / run_name("beta-h", 4.0, 1)
    cfg = read_json(moved / "config.json")
    cfg["data"] = {"source": "official", "source_checksum": "md5:x", "content_sha256": "f" * 64,
                   "num_images": 737_280}
    write_json_atomic(moved / "config.json", cfg)
    df = collect(copy)
    fig = plots.rate_distortion(df)
    # one dataset (dSprites) on two files: a panel per file, titled by dataset and file
    panels = {ax.get_title().split("\n")[-1]: ax for ax in fig.axes if "data: " in ax.get_title()}
    assert set(panels) == {"data: official", "data: rendered (dsprites-render-1), 1,536 images"}
    official = [c for c in panels["data: official"].collections if str(c.get_gid()).startswith("runs:")]
    assert len(official) == 1 and len(official[0].get_offsets()) == 1
    fig = plots.metric_vs_strength(df, ["mig"])
    means = fig.findobj(lambda a: str(a.get_gid()).startswith("mean:beta-vae"))
    assert len(means) == 2  # one line per dataset, never one line through both
    by_gid = {ln.get_gid(): ln for ln in means}
    assert set(by_gid) == {"mean:beta-vae|data: official",
                           "mean:beta-vae|data: rendered (dsprites-render-1), 1,536 images"}
    official_line = by_gid["mean:beta-vae|data: official"]
    assert list(official_line.get_xdata()) == [4.0]
    assert official_line.get_ydata()[0] == df.loc[df["run"] == moved.name, "mig.discrete_mig"].item()


# --------------------------------------------------------------------------- six methods (issue 11)
@pytest.fixture()
def six(tmp_path):
    return collect(six_method_tree(tmp_path / "six"))


def test_metric_vs_strength_has_a_row_per_method_on_its_own_axis(six, tmp_path):
    from disentangle.config import method_label, strength_label
    from disentangle.methods import METHODS as REGISTERED
    fig = plots.metric_vs_strength(six, ["mig", "info.rate_nats"])
    # log where the values span a decade: β 1–16, β 1–10, γ 10–100, λ_od 1–10; C_max 5–25 not
    want_log = {"beta-vae": True, "annealed-vae": False, "beta-tcvae": True, "factor-vae": True,
                "dip-vae-i": True, "dip-vae-ii": True}
    rows = {}
    for m, (method, (key, values)) in enumerate(SIX_METHODS.items()):
        lines = fig.findobj(lambda a, g=f"mean:{method}": a.get_gid() == g)
        assert len(lines) == 2   # one per metric column
        for line in lines:
            ax = line.axes
            spec = ax.get_subplotspec()
            rows.setdefault(method, set()).add(spec.rowspan.start)
            assert ax.get_title() == method_label(method)
            assert ax.get_xlabel() == strength_label(key) + (", log scale" if want_log[method] else "")
            assert ax.get_xscale() == ("log" if want_log[method] else "linear")
            assert list(line.get_xdata()) == values
            if ax.get_ylabel() == "MIG":
                # the mean over seeds 0 and 1 of 0.1·m + 0.05·j + 0.01·seed
                assert np.allclose(line.get_ydata(), [0.1 * m + 0.05 * j + 0.005 for j in range(2)])
                assert spec.colspan.start == 0
            else:
                assert ax.get_ylabel() == plots.metric_label("info.rate_nats") and spec.colspan.start == 1
                assert np.allclose(line.get_ydata(), [2.25 + 3.0 * m + 2.0 * j for j in range(2)])
    # one row per method, in the methods' order; the grid has no other panels
    assert [min(rows[m]) for m in REGISTERED] == list(range(6)) and all(len(r) == 1 for r in rows.values())
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 6 * 2
    _assert_saved(fig, tmp_path / "mvs")


def test_rate_distortion_colours_by_method_and_sizes_by_strength(six, tmp_path):
    from matplotlib.colors import to_hex

    from disentangle.config import method_label
    fig = plots.rate_distortion(six)
    colours = {}
    for method, (key, values) in SIX_METHODS.items():
        runs = six[six["method"] == method]
        points = _by_gid(fig, f"runs:{method}")
        offsets = np.asarray(points.get_offsets())
        assert np.allclose(offsets, runs[["info.rate_nats", "info.distortion_nats"]].to_numpy())
        faces = {to_hex(c) for c in points.get_facecolors()}
        assert len(faces) == 1   # one colour per method
        colours[method] = faces.pop()
        sizes = np.broadcast_to(points.get_sizes(), (len(runs),))
        small, large = sizes[runs["strength"].to_numpy() == values[0]], sizes[runs["strength"].to_numpy() == values[1]]
        assert (small < large.min()).all()   # the larger value, the larger marker
    assert len(set(colours.values())) == 6
    legend = " ".join(t.get_text() for t in fig.axes[0].get_legend().get_texts())
    for method in SIX_METHODS:
        assert method_label(method) in legend
    assert "$\\gamma$ ∈ {10, 100}" in legend and "smallest value" in legend
    assert len(fig.axes) == 1   # no colour bar: colour is the method
    # one method alone looks as before: coloured by its strength, with a colour bar
    single = plots.rate_distortion(six[six["method"] == "factor-vae"])
    points = _by_gid(single, "runs:factor-vae")
    assert sorted(points.get_array()) == sorted(six.loc[six["method"] == "factor-vae", "strength"])
    assert len(single.axes) == 2 and single.axes[1].get_ylabel() == "$\\gamma$"   # the colour bar's label
    _assert_saved(fig, tmp_path / "rd6")


def test_cli_metric_vs_beta_is_metric_vs_strength(six, tmp_path):
    from click.testing import CliRunner

    from disentangle.cli import main
    tree = tmp_path / "six"
    runner = CliRunner()
    for name in ("metric-vs-strength", "metric-vs-beta"):
        res = runner.invoke(main, ["plot", name, str(tree), "--metric", "mig"])
        assert res.exit_code == 0, res.output
    assert (tree / "figures" / "metric_vs_strength.png").read_bytes()[:8] == PNG_MAGIC
    assert (tree / "figures" / "metric_vs_beta.png").read_bytes()[:8] == PNG_MAGIC
    # the old --x option is accepted, with a note that it is no longer needed
    res = runner.invoke(main, ["plot", "metric-vs-beta", str(tree), "--metric", "mig", "--x", "gamma",
                               "--out", str(tmp_path / "x")])
    assert res.exit_code == 0 and "no longer needed" in res.output


@pytest.mark.parametrize("architecture", ["dlib", "fc"])
def test_traversal_and_reconstructions_for_every_architecture(architecture, tiny_data, tiny_data_path, tmp_path):
    import torch
    import torch.nn.functional as F

    from disentangle.config import TrainConfig
    from disentangle.rundir import load_model
    from disentangle.train import train
    config = TrainConfig(method="beta-vae", architecture=architecture, beta=4.0, steps=3, batch_size=8,
                         latent_dim=3, lr=1e-3, data=str(tiny_data_path), device="cpu", threads=1, log_every=1,
                         checkpoint_every=100).validate()
    run = train(config, tmp_path / architecture)
    t = figure_data.traversals(run, tiny_data, n_images=2, steps=3, echo=lambda m: None)
    assert t.grids.shape == (2, 3, 3, 1, 64, 64) and np.isfinite(t.grids).all()
    assert t.grids.min() >= 0 and t.grids.max() <= 1
    fig = plots.traversal(t)
    assert _by_gid(fig, "traversal:0").get_array().shape == (3 * (64 + 3), 2 * 64 + 6 + 3 * 64 + 2)
    _assert_saved(fig, tmp_path / f"trav_{architecture}")
    r = figure_data.reconstructions(run, tiny_data, n_images=3, seed=1)
    model, _ = load_model(run)
    assert type(model.encoder).__name__ == {"dlib": "DlibEncoder", "fc": "FcEncoder"}[architecture]
    x = torch.from_numpy(tiny_data.images(r.indices).astype(np.float32)).unsqueeze(1)
    with torch.no_grad():
        logits = model.decode(model.encode(x)[0])
    nll = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=(1, 2, 3)).numpy()
    assert np.allclose(r.distortion, nll, rtol=1e-5)
    assert np.allclose(r.reconstructions, torch.sigmoid(logits).numpy(), atol=1e-6)
    fig = plots.reconstructions(r)
    assert np.allclose(_by_gid(fig, "reconstruction:0").get_array(), 1.0 - r.reconstructions[0, 0], atol=1e-6)
    _assert_saved(fig, tmp_path / f"rec_{architecture}")
