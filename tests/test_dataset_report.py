"""Issue 20: reports group by dataset, figures facet by it. A fake study of two datasets
(tests/study_fixture.py: every run once on dSprites and once on Shapes3D, Shapes3D's
scores 0.4 higher), read with and without the configuration's ``dataset`` column."""
from __future__ import annotations

import re

import numpy as np
import pytest

from study_fixture import collected, fake_study

TWO = ("shapes3d", "dsprites")   # given out of order: the report puts dSprites first (registry order)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return collected(fake_study(tmp_path_factory.mktemp("two") / "s", datasets=TWO))


@pytest.fixture(scope="module")
def one(tmp_path_factory):
    return collected(fake_study(tmp_path_factory.mktemp("one") / "s", datasets=("dsprites",)))


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    # runs written before the dataset field: no dataset key in config.json, no column
    return collected(fake_study(tmp_path_factory.mktemp("old") / "s"))


def _section_table(text: str, heading: str | None, title: str) -> tuple[list[str], list[list[str]]]:
    if heading is not None:
        text = text.split(f"### {heading}\n", 1)[1].split("\n### ", 1)[0]
    block = text.split(f"**{title}")[1].split("\n\n", 2)[1]
    lines = [ln for ln in block.strip().splitlines() if ln.startswith("|")]
    cells = lambda ln: [c.strip() for c in ln.strip("|").split("|")]   # noqa: E731
    return cells(lines[0]), [cells(ln) for ln in lines[2:]]


# --------------------------------------------------------------------------- tables
def test_the_fixture_has_the_column_both_ways(two, old):
    assert sorted(two["dataset"].unique()) == ["dsprites", "shapes3d"]
    # runs without the key: no column before the configuration has the field, dsprites after
    assert "dataset" not in old.columns or set(old["dataset"]) == {"dsprites"}


def test_aggregation_never_averages_two_datasets(two):
    from disentangle.report import aggregate, study_group_by
    group_by = study_group_by(two)
    assert "dataset" not in group_by   # the dataset is added by aggregate itself, first
    agg = aggregate(two, group_by, ["mig.discrete_mig"])
    assert list(agg.columns[:4]) == ["dataset", "method", "strength_name", "strength"]
    assert len(agg) == 2 * 5 and set(agg["n"]) == {3}
    assert list(agg["dataset"]) == ["dsprites"] * 5 + ["shapes3d"] * 5    # the registry's order
    want = two.groupby(["dataset", "method", "strength"])["mig.discrete_mig"].mean()
    for _, r in agg.iterrows():
        assert r["mig.discrete_mig.mean"] == pytest.approx(want[(r["dataset"], r["method"], r["strength"])])


def test_a_study_of_two_datasets_reads_as_one_section_each(two):
    from disentangle.report import make_report, study_group_by
    text = make_report(two, "markdown", group_by=study_group_by(two))
    assert text.index("### dSprites") < text.index("### Shapes3D") and text.count("### ") == 2
    for heading, name in (("dSprites", "dsprites"), ("Shapes3D", "shapes3d")):
        header, rows = _section_table(text, heading, "Headline scores")
        assert header[:3] == ["method", "strength", "n"] and "dataset" not in header and "data" not in header
        assert len(rows) == 5
        # β = 4 on this dataset: the mean ± sample std of its three seeds, nothing of the other dataset's
        mig = two[(two["dataset"] == name) & (two["method"] == "beta-vae") & (two["strength"] == 4.0)]["mig.discrete_mig"]
        assert len(mig) == 3
        assert rows[1][header.index("MIG")] == f"{mig.mean():.3f} ± {mig.std():.3f}"
    assert "Data: rendered (t)." in text and "Data: official, 480,000 images." in text


def test_one_dataset_names_it_once_and_adds_no_column(one, old):
    from disentangle.report import make_report, study_group_by
    old_line = "Data: dSprites: rendered (t)." if "dataset" in old.columns else "Data: rendered (t)."
    for df, data_line in ((one, "Data: dSprites: rendered (t)."), (old, old_line)):
        text = make_report(df, "markdown", group_by=study_group_by(df))
        assert "### " not in text and text.count(data_line) == 1
        header, rows = _section_table(text, None, "Headline scores")
        assert header[:3] == ["method", "strength", "n"] and len(rows) == 5
        per_run, _ = _section_table(make_report(df, "markdown"), None, "Headline scores")
        assert "dataset" not in per_run and per_run[0] == "run"
        assert "dataset" not in make_report(df, "markdown", metrics=["mig"]).splitlines()[0]


def test_latex_and_csv_put_the_dataset_first(two, one):
    from disentangle.report import make_report, study_group_by
    latex = make_report(two, "latex", group_by=study_group_by(two), metrics=["mig.discrete_mig"])
    body = latex.split("\\midrule\n")[1].split("\\bottomrule")[0].strip().splitlines()
    assert latex.split("\\toprule\n")[1].startswith("dataset & method")
    assert [ln.split(" & ")[0] for ln in body] == ["dSprites"] * 5 + ["Shapes3D"] * 5
    assert "rendered (t)" not in "".join(body)   # each dataset's one file: the caption names it
    assert "dSprites: rendered (t); Shapes3D: official, 480,000 images" in latex
    single = make_report(one, "latex", group_by=study_group_by(one), metrics=["mig.discrete_mig"])
    assert "dataset &" not in single and "dSprites" not in single.split("\\midrule")[1]
    csv = make_report(two, "csv", group_by=study_group_by(two))
    assert csv.splitlines()[0].startswith("dataset,method,strength_name,strength,")
    per_run = make_report(two, "csv").splitlines()[0]
    assert per_run.startswith("dataset,") and per_run.count("dataset") == 1
    # the per-run Markdown table of several datasets: the dataset first, as papers' row groups
    header = make_report(two, "markdown", metrics=["mig"]).splitlines()[0]
    assert re.match(r"\|\s*dataset\s*\|\s*run\s*\|", header)


def test_runs_without_a_dataset_count_as_dsprites(two):
    from disentangle.report import aggregate, datasets_of, study_group_by
    mixed = two.copy()
    mixed.loc[mixed["dataset"] == "dsprites", "dataset"] = np.nan   # config.json written before the field
    assert datasets_of(mixed) == ["dsprites", "shapes3d"]
    agg = aggregate(mixed, study_group_by(mixed), ["mig.discrete_mig"])
    assert list(agg["dataset"]) == ["dsprites"] * 5 + ["shapes3d"] * 5


def test_a_dataset_section_shows_only_its_scored_metrics(two):
    from disentangle.report import make_report, study_group_by
    df = two.copy()
    df.loc[df["dataset"] == "shapes3d", "mig.discrete_mig"] = np.nan   # say, a dataset without that metric
    text = make_report(df, "markdown", group_by=study_group_by(df))
    assert "MIG" in _section_table(text, "dSprites", "Headline scores")[0]
    assert "MIG" not in _section_table(text, "Shapes3D", "Headline scores")[0]


# --------------------------------------------------------------------------- figures
def _png_size(paths):
    from PIL import Image
    with Image.open(paths[0]) as im:
        return im.size


def test_metric_vs_strength_colours_by_dataset(two, tmp_path):
    from matplotlib.colors import to_hex

    from disentangle import plots
    from disentangle.report import aggregate
    fig = plots.metric_vs_strength(two, ["mig", "dci"])
    colours = {}
    for name, label in (("dsprites", "dSprites"), ("shapes3d", "Shapes3D")):
        lines = fig.findobj(lambda a, g=f"mean:beta-vae|{label}": a.get_gid() == g)
        assert len(lines) == 2   # one per metric panel
        mig = next(ln for ln in lines if ln.axes.get_ylabel() == "MIG")
        sub = two[(two["dataset"] == name) & (two["method"] == "beta-vae")]
        agg = aggregate(sub, ["method", "strength"], ["mig.discrete_mig"]).sort_values("strength")
        assert np.allclose(mig.get_xdata(), agg["strength"]) and np.allclose(mig.get_ydata(), agg["mig.discrete_mig.mean"])
        colours[name] = {to_hex(ln.get_color()) for ln in lines}
    assert len(colours["dsprites"]) == 1 and colours["dsprites"] != colours["shapes3d"]
    # the grid stays methods × metrics: two datasets add lines, not panels
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 2 * 2
    assert _png_size(plots.save_figure(fig, tmp_path / "mvs")) == (1000, round(200 * (2 * 2.1 + 0.9)))
    # one dataset: the method's colour, as before
    single = plots.metric_vs_strength(two[two["dataset"] == "dsprites"], ["mig"])
    assert len(single.findobj(lambda a: a.get_gid() == "mean:beta-vae")) == 1


def test_rate_distortion_a_panel_per_dataset(two, tmp_path):
    from disentangle import plots
    fig = plots.rate_distortion(two)
    panels = {ax.get_title().split("\n")[0]: ax for ax in fig.axes if ax.get_visible() and ax.get_title()}
    assert list(panels) == ["dSprites", "Shapes3D"]
    for label, name in (("dSprites", "dsprites"), ("Shapes3D", "shapes3d")):
        points = np.concatenate([c.get_offsets() for c in panels[label].collections
                                 if str(c.get_gid()).startswith("runs:")])
        want = two.loc[two["dataset"] == name, ["info.rate_nats", "info.distortion_nats"]].to_numpy()
        assert sorted(map(tuple, points)) == sorted(map(tuple, want))
        # each panel its dataset's bound: H(X) is the dataset's
        h = two.loc[two["dataset"] == name, "info.entropy_x_nats"].iloc[0]
        assert fig.findobj(lambda a, h=h: a.get_gid() == f"bound:{h}")[0].axes is panels[label]
    assert len(fig.findobj(lambda a: a.get_gid() == "methods")) == 1   # the methods' legend once
    assert _png_size(plots.save_figure(fig, tmp_path / "rd"))[0] == 2 * 2.5 * 200


def test_metric_correlation_one_heatmap_per_dataset(two):
    from disentangle import plots
    cols = ["mig.discrete_mig", "dci.disentanglement", "sap.sap_score"]
    fig = plots.metric_correlation(two, cols)
    assert list(fig.correlation) == ["dsprites", "shapes3d"]
    for name, matrix in fig.correlation.items():
        ranks = two.loc[two["dataset"] == name, cols].rank().to_numpy()
        assert np.allclose(matrix.to_numpy(), np.corrcoef(ranks, rowvar=False)) and matrix.attrs["n"] == 15
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["dSprites (15 runs)", "Shapes3D (15 runs)"]


def test_metric_distribution_a_violin_per_method_and_dataset(two):
    from disentangle import plots
    fig = plots.metric_distribution(two, ["mig.discrete_mig", "dci.disentanglement"])
    panels = [ax for ax in fig.axes if (ax.get_gid() or "").startswith("distribution:")]
    assert len(panels) == 2
    legend = fig.findobj(lambda a: a.get_gid() == "datasets")
    assert len(legend) == 1 and [t.get_text() for t in legend[0].get_texts()] == ["dSprites", "Shapes3D"]
    # each run a dot (stripplot's point collections), under its method beside its dataset's violin
    from matplotlib.collections import PathCollection
    dots = [c for c in panels[0].collections if type(c) is PathCollection]
    assert sum(len(c.get_offsets()) for c in dots) == len(two)
    assert len(dots) == 2 * 2   # a collection per method and dataset


def test_study_report_of_two_datasets(two, tmp_path):
    from disentangle import study_report
    root = tmp_path / "study"
    root.mkdir()
    df = two.assign(status="finished")
    written, notes = study_report._study_figures(root, df.assign(status="x"), {})   # no traversals
    assert {p.stem for p in written} >= {"rate_distortion", "metric_vs_strength", "metric_correlation",
                                        "metric_distribution"}
    rows = [{"name": r, "state": "finished", "step": 1, "steps": 1, "detail": ""} for r in df["run"]]
    text = study_report._report_markdown(root, df, {"name": "two"}, rows, written, notes)
    assert "Data: dSprites: rendered (t); Shapes3D: official, 480,000 images." in text
    assert text.count("### dSprites") == 2 and text.count("### Shapes3D") == 2   # over seeds, and per run
    assert "one panel per dataset" in text and "coloured by dataset" in text


def test_traversals_cover_every_dataset(two):
    from disentangle.study_report import _traversal_runs
    picked = [p.name for p in _traversal_runs(two)]
    # two datasets × two methods, each method's weakest and strongest setting (first seed)
    assert picked == [f"{d}_{m}_s0" for d in ("dsprites", "shapes3d")
                      for m in ("beta-vae_beta1", "beta-vae_beta16", "factor-vae_gamma10", "factor-vae_gamma40")]
