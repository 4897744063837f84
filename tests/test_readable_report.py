"""Issue 23: reports a reader takes in (headline table with the registries' labels,
per-metric detail), figures that name every registered metric they leave out, the study's
classic figures (rank correlation, distribution per method), progress bars only on a
terminal, the CPU's instruction set in the environment record."""
from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest

from disentangle.config import method_label
from disentangle.evaluation.metrics import METRICS, metrics_of_kind
from disentangle.results import collect
from study_fixture import STUDY_RUNS, fake_study


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return fake_study(tmp_path_factory.mktemp("study") / "s")


@pytest.fixture()
def df(study):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return collect(study)


def _table(text: str, title: str) -> tuple[list[str], list[list[str]]]:
    block = text.split(f"**{title}")[1].split("\n\n", 2)[1]
    lines = [ln for ln in block.strip().splitlines() if ln.startswith("|")]
    cells = lambda ln: [c.strip() for c in ln.strip("|").split("|")]   # noqa: E731
    return cells(lines[0]), [cells(ln) for ln in lines[2:]]


def _scored_metrics() -> list[str]:
    # the fixture's scored metrics but the information ones, in the registry's display order
    from disentangle.evaluation.metrics import display_order
    return [m for m in display_order(METRICS) if METRICS[m].kind != "information"]


# --------------------------------------------------------------------------- tables
def test_headline_table_uses_the_registry_labels(df):
    from disentangle.report import make_report, study_group_by
    text = make_report(df, "markdown", group_by=study_group_by(df))
    header, rows = _table(text, "Headline scores")
    scored = _scored_metrics()
    # one column per disentanglement metric (UDR's per-run scores too), headed by its registry label, in display order
    assert header == ["method", "strength", "n"] + [METRICS[m].label(METRICS[m].headline) for m in scored]
    assert [r[0] for r in rows] == [method_label("beta-vae")] * 3 + [method_label("factor-vae")] * 2
    assert [r[1] for r in rows] == ["β = 1", "β = 4", "β = 16", "γ = 10", "γ = 40"]
    assert {r[2] for r in rows} == {"3"}
    # the cell is the mean ± sample std over the three seeds
    mig = df[(df["method"] == "beta-vae") & (df["strength"] == 4.0)]["mig.discrete_mig"]
    assert rows[1][header.index("MIG")] == f"{mig.mean():.3f} ± {mig.std():.3f}"
    info_header, _ = _table(text, "Information (nats)")
    from disentangle.report import score_heading
    assert info_header[3:] == [score_heading(f"info.{k}") for k in METRICS["info"].headline_keys]
    assert info_header[3:6] == ["rate R (nats)", "distortion D (nats)", "H(X) (nats)"]
    assert "modularity_explicitness.modularity_score" not in text   # no raw keys


def test_detail_tables_one_per_metric(df):
    from disentangle.report import make_report
    text = make_report(df, "markdown", group_by="method,strength", detail=True)
    for metric in metrics_of_kind("disentanglement"):
        header, rows = _table(text, f"{metric}: every score")
        assert METRICS[metric].label(METRICS[metric].headline) in header
        assert "extra detail key" in header and len(rows) == 5
    assert "--detail" not in text


def test_per_run_table_reads_like_a_paper(df):
    from disentangle.report import make_report
    text = make_report(df[df["method"] == "beta-vae"], "markdown")
    header, rows = _table(text, "Headline scores")
    assert header[:4] == ["run", "method", "β", "seed"] and len(rows) == 9


# --------------------------------------------------------------------------- figures
def _png_size(paths):
    from PIL import Image
    with Image.open(paths[0]) as im:
        return im.size


def test_metric_vs_strength_wraps_and_names_what_it_leaves_out(df, tmp_path):
    from disentangle import plots
    fig = plots.metric_vs_strength(df, ["mig", "dci", "sap", "irs"])
    drawn = fig.metrics_drawn
    assert set(drawn) | set(fig.metrics_left_out) == set(metrics_of_kind("disentanglement"))
    assert not set(drawn) & set(fig.metrics_left_out)
    left = next(t for t in fig.findobj() if getattr(t, "get_gid", lambda: None)() == "left-out")
    assert all(m in left.get_text() for m in fig.metrics_left_out)
    # 4 metrics, 3 a row: two rows per method, 7.5 in wide = 1,500 px at the default dpi
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 4 * 2
    assert _png_size(plots.save_figure(fig, tmp_path / "m"))[0] == 1500


def test_every_metric_with_scores_is_drawn(df):
    from disentangle import plots
    fig = plots.metric_distribution(df)
    assert fig.metrics_drawn == _scored_metrics() and fig.metrics_left_out == []


def test_distribution_one_panel_per_metric(df, tmp_path):
    from disentangle import plots
    fig = plots.metric_distribution(df, ["mig.discrete_mig", "dci.disentanglement", "sap.sap_score", "irs.IRS"])
    panels = [ax for ax in fig.axes if (ax.get_gid() or "").startswith("distribution:")]
    assert len(panels) == 4 and sum(ax.get_visible() for ax in fig.axes) == 4
    # each panel: a violin per method, the methods as papers write them
    assert [t.get_text() for t in panels[0].get_xticklabels()] == ["β-VAE", "FactorVAE"]
    assert set(fig.metrics_left_out) == set(metrics_of_kind("disentanglement")) - {"mig", "dci", "sap", "irs"}
    width, height = _png_size(plots.save_figure(fig, tmp_path / "d"))
    assert (width, height) == (1500, round(200 * (2 * 2.1 + 0.8)))


def test_rank_correlation_is_spearman_per_dataset(df, tmp_path):
    from disentangle import plots
    from disentangle.report import metric_rank_correlation
    cols = ["mig.discrete_mig", "dci.disentanglement", "sap.sap_score"]
    (label, matrix), = metric_rank_correlation(df, cols).items()
    ranks = df[cols].rank().to_numpy()
    want = np.corrcoef(ranks, rowvar=False)
    assert np.allclose(matrix.to_numpy(), want) and matrix.attrs["n"] == len(STUDY_RUNS)
    # a dataset column facets: one heatmap per dataset
    two = df.assign(dataset=["dsprites" if i % 2 else "shapes3d" for i in range(len(df))])
    fig = plots.metric_correlation(two, cols)
    heatmaps = [ax for ax in fig.axes if any((c.get_gid() or "").startswith("correlation:") for c in ax.collections)]
    assert len(heatmaps) == 2
    assert sorted(fig.correlation) == ["dsprites", "shapes3d"]
    width, height = _png_size(plots.save_figure(plots.metric_correlation(df, cols), tmp_path / "c"))
    assert (width, height) == (round(200 * (3.2 + 0.8)), round(200 * (3.2 + 0.5)))


def test_correlation_refuses_too_few_runs(df):
    from disentangle.errors import UserError
    from disentangle.report import MIN_RUNS_CORRELATION, metric_rank_correlation
    with pytest.raises(UserError, match=f"at least {MIN_RUNS_CORRELATION} runs"):
        metric_rank_correlation(df.iloc[:MIN_RUNS_CORRELATION - 1], ["mig.discrete_mig", "dci.disentanglement"])


def test_study_report_draws_the_classic_figures_only_with_enough_runs(df, study, tmp_path):
    from disentangle import study_report
    written, notes = study_report._study_figures(study, df.assign(status="x"), {})
    names = {p.stem for p in written}
    assert {"metric_correlation", "metric_distribution", "metric_vs_strength"} <= names
    few = df.iloc[:3]
    written, notes = study_report._study_figures(tmp_path, few.assign(status="x"), {})
    assert "metric_correlation" not in {p.stem for p in written}
    assert any("needs at least 5" in n for n in notes)


def test_cli_plots_the_classic_figures(study, tmp_path):
    from click.testing import CliRunner

    from disentangle.cli import main
    for command in ("metric-correlation", "metric-distribution"):
        out = tmp_path / f"{command}.png"
        result = CliRunner().invoke(main, ["plot", command, str(study), "--metric", "mig", "--metric", "dci",
                                           "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.is_file() and out.with_suffix(".pdf").is_file()


# --------------------------------------------------------------------------- progress bars, instruction set
class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal():
    from disentangle.progress import bar, on_terminal
    log = io.StringIO()
    assert not on_terminal(log)
    with bar(1000, "encode", stream=log) as b:
        for _ in range(10):
            b.update(100)
    assert log.getvalue() == ""   # a redirected log gets nothing
    tty = _Terminal()
    with bar(1000, "encode", stream=tty, mininterval=0) as b:
        b.update(1000)
    assert "encode" in tty.getvalue() and "\r" in tty.getvalue()


def test_no_tqdm_outside_the_terminal_bar():
    # every progress bar of the package goes through progress.bar
    from pathlib import Path

    import disentangle
    root = Path(disentangle.__file__).parent
    users = [p.relative_to(root).as_posix() for p in root.rglob("*.py") if "tqdm" in p.read_text()]
    assert users == ["progress.py"]


def test_cpu_instruction_set():
    import platform

    from disentangle.io import cpu_instruction_set
    machine = platform.machine()
    flags = "processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
    assert cpu_instruction_set(flags) == f"{machine} avx2"
    assert cpu_instruction_set(flags.replace("fma", "avx512f avx512_bf16")) == f"{machine} avx512_bf16"
    assert cpu_instruction_set("Features\t: fp asimd\n") == machine     # ARM: the architecture only
    assert cpu_instruction_set("") == machine
    from disentangle.io import environment_info
    assert re.fullmatch(r"\S+( \w+)?", environment_info()["cpu_instruction_set"])


def test_a_constant_metric_is_named_not_drawn_as_blank(df):
    from disentangle import plots
    cols = ["mig.discrete_mig", "dci.disentanglement", "sap.sap_score"]
    flat = df.assign(**{"sap.sap_score": 0.13})
    fig = plots.metric_correlation(flat, cols)
    (matrix,) = fig.correlation.values()
    assert list(matrix.columns) == cols[:2] and matrix.attrs["constant"] == ["sap.sap_score"]
    assert np.isfinite(matrix.to_numpy()).all()
    assert "constant here, no rank correlation: SAP score" in fig.axes[0].get_title()
