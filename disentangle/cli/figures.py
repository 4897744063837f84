"""`disentangle report` and `disentangle plot ...`: the results table and the figures.
"""
from __future__ import annotations

import sys

import click

from disentangle.config import DEVICES
from disentangle.cli.base import Group, main, unverified_data_option


# --------------------------------------------------------------------------- report and plot
class _WarningsToStderr:
    """Show library warnings (unreadable scores, mixed groups) as one 'warning:' line each."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    shown = 5  # a sweep in progress has many unevaluated runs: name a few, count the rest

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        messages = list(dict.fromkeys(str(w.message) for w in self._caught))
        for message in messages[:self.shown]:
            click.echo(f"warning: {message}", err=True)
        if len(messages) > self.shown:
            click.echo(f"warning: ... and {len(messages) - self.shown} more like these", err=True)
        return False


@main.command("report")
@click.argument("results", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "latex"]), default="markdown",
              show_default=True, help="Table format (LaTeX: booktabs, drops into a paper).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the table here (default: print).")
@click.option("--group-by", default=None,
              help="Aggregate over seeds: comma-separated columns, e.g. method,beta (always split by data source).")
@click.option("--metric", "metrics", multiple=True,
              help="Metric (mig) or score column (info.rate_nats) to show; repeat for several. Default: headline scores.")
@click.option("--detail", is_flag=True,
              help="Markdown: after the headline tables, one table per metric with all its scores.")
def report_cmd(results, fmt, out, group_by, metrics, detail):
    """Table of the runs under RESULTS: one row per run, or mean ± std over seeds. Markdown:
    a headline table (one column per metric, the registry's labels) and an information
    table; --detail adds one table per metric; CSV has every column."""
    from disentangle.report import write_report
    from disentangle.rundir import refuse_run_file
    if out:
        refuse_run_file(out)
    elif sys.stdout is None:
        raise click.ClickException("standard output is closed; give --out FILE")
    with _WarningsToStderr():
        text = write_report(results, fmt, out, group_by, list(metrics) or None, detail)
    if out:
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)


@main.group("plot", cls=Group)
def plot():
    """Figures (PNG and vector PDF side by side): rate-distortion, metric-vs-strength
    (first name: metric-vs-beta), traversal, reconstructions, training."""


def _save(fig, out, dpi):
    from disentangle.plots import output_paths, save_figure
    from disentangle.rundir import refuse_run_file
    for path in output_paths(out):
        refuse_run_file(path)
    for path in save_figure(fig, out, dpi=dpi, echo=lambda msg: click.echo(msg, err=True)):
        click.echo(f"wrote {path}")


def _out_option(fn):
    fn = click.option("--dpi", type=click.IntRange(50, 600), default=200, show_default=True,
                      help="Resolution of the PNG (the PDF is vector).")(fn)
    return click.option("--out", type=click.Path(dir_okay=False), default=None,
                        help="Figure path; .png and .pdf are both written (default: DIR/figures/NAME.png).")(fn)
_device_option = click.option("--device", type=click.Choice(DEVICES), default="cpu",
                              show_default=True, help="Where the decoder runs.")


def _finite(value: float, flag: str) -> float:
    import math
    if not math.isfinite(value):   # click's FloatRange lets NaN through (every comparison is False)
        raise click.BadParameter(f"must be a finite number, got {value}", param_hint=flag)
    return value


def _device(name: str) -> str:
    from disentangle.devices import resolve_device
    return resolve_device(name)


@plot.command("rate-distortion")
@click.argument("results", type=click.Path(file_okay=False))
@_out_option
def plot_rate_distortion(results, out, dpi):
    """Every run on the rate-distortion plane (nats) with D = H(X) - R: coloured by method
    (marker size: strength), or for one method by its strength."""
    from disentangle import plots
    from disentangle.results import collect
    with _WarningsToStderr():
        fig = plots.rate_distortion(collect(results))
    _save(fig, out or plots.default_out(results, "rate_distortion.png"), dpi)


def _metric_vs_strength(results, metrics, out, dpi, name):
    from disentangle import plots
    from disentangle.results import collect
    with _WarningsToStderr():
        fig = plots.metric_vs_strength(collect(results), list(metrics))
    _save(fig, out or plots.default_out(results, f"{name}.png"), dpi)


_metric_option = click.option("--metric", "metrics", multiple=True, required=True,
                              help="Metric (mig) or score column (dci.completeness); repeat for panel columns.")


@plot.command("metric-vs-strength")
@click.argument("results", type=click.Path(file_okay=False))
@_metric_option
@_out_option
def plot_metric_vs_strength(results, metrics, out, dpi):
    """Scores against regularisation strength: a panel row per method on its own
    hyper-parameter's axis (beta, C_max, gamma, lambda_od), a column per metric; mean and
    ±1 std band over seeds."""
    _metric_vs_strength(results, metrics, out, dpi, "metric_vs_strength")


@plot.command("metric-vs-beta")
@click.argument("results", type=click.Path(file_okay=False))
@_metric_option
@click.option("--x", "x", type=click.Choice(["beta", "gamma", "capacity_max"]), default=None, hidden=True)
@_out_option
def plot_metric_vs_beta(results, metrics, x, out, dpi):
    """The first name of metric-vs-strength (default file: figures/metric_vs_beta.png)."""
    if x is not None:
        click.echo("note: --x is no longer needed: every method is drawn on its own hyper-parameter's axis",
                   err=True)
    _metric_vs_strength(results, metrics, out, dpi, "metric_vs_beta")


_study_metrics_option = click.option("--metric", "metrics", multiple=True,
                                     help="Metric to include; repeat for several. Default: every metric with scores.")


def _study_figure(results, metrics, out, dpi, make, name):
    from disentangle import plots
    from disentangle.report import headline_column
    from disentangle.results import collect
    with _WarningsToStderr():
        df = collect(results)
        columns = [headline_column(df, m) for m in metrics] or None
        fig = make(df, columns)
    _save(fig, out or plots.default_out(results, name), dpi)


@plot.command("metric-correlation")
@click.argument("results", type=click.Path(file_okay=False))
@_study_metrics_option
@_out_option
def plot_metric_correlation(results, metrics, out, dpi):
    """Spearman rank correlation between the metrics over all runs under RESULTS, one
    heatmap per dataset (Locatello et al. 2019, Fig. 3); needs 5 runs with every metric."""
    from disentangle import plots
    _study_figure(results, metrics, out, dpi, plots.metric_correlation, "metric_correlation.png")


@plot.command("metric-distribution")
@click.argument("results", type=click.Path(file_okay=False))
@_study_metrics_option
@_out_option
def plot_metric_distribution(results, metrics, out, dpi):
    """Distribution of each metric per method over all runs under RESULTS: one panel per
    metric, a violin per method, each run a dot (Locatello et al. 2019)."""
    from disentangle import plots
    _study_figure(results, metrics, out, dpi, plots.metric_distribution, "metric_distribution.png")


@plot.command("traversal")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dataset file (default: the one the run recorded; its checksum must match).")
@click.option("--images", "n_images", type=click.IntRange(1, 12), default=3, show_default=True, help="Base images.")
@click.option("--steps", type=click.IntRange(2, 21), default=9, show_default=True, help="Values per sweep.")
@click.option("--span", type=click.FloatRange(0, 100, min_open=True), default=3.0, show_default=True,
              callback=lambda ctx, param, v: _finite(v, "--span"),
              help="Sweep z_d over [-span, span] prior standard deviations.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Chooses the base images.")
@click.option("--dims", "max_dims", type=click.IntRange(min=1), default=10, show_default=True,
              help="Show the DIMS latent dimensions with the most KL.")
@click.option("--gif", type=click.Path(dir_okay=False), default=None,
              help="Also write an animated GIF here: one frame per value, latents x base images.")
@click.option("--frame-ms", type=click.IntRange(min=20), default=250, show_default=True,
              help="GIF frame duration (milliseconds).")
@_device_option
@_out_option
@unverified_data_option
def plot_traversal(run, data, n_images, steps, span, seed, max_dims, gif, frame_ms, device, out, dpi):
    """Latent traversals of RUN around real images, dimensions sorted by KL, each row
    labelled with its KL; --out x.gif writes only the animated GIF."""
    from disentangle import plots
    from disentangle.evaluation import figure_data
    if gif is not None and not str(gif).lower().endswith(".gif"):
        raise click.BadParameter(f"{gif}: must end in .gif", param_hint="--gif")
    t = figure_data.traversals(run, data, n_images=n_images, steps=steps, span=span, seed=seed,
                               device=_device(device), max_dims=max_dims)
    gifs = [p for p in (gif, out) if p is not None and str(p).lower().endswith(".gif")]
    for path in gifs:
        click.echo(f"wrote {plots.save_traversal_gif(t, path, duration_ms=frame_ms)}")
    if not (out and str(out).lower().endswith(".gif")):
        _save(plots.traversal(t), out or plots.default_out(run, "traversal.png"), dpi)


@plot.command("reconstructions")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dataset file (default: the one the run recorded; its checksum must match).")
@click.option("--images", "n_images", type=click.IntRange(1, 32), default=10, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Chooses the images.")
@_device_option
@_out_option
@unverified_data_option
def plot_reconstructions(run, data, n_images, seed, device, out, dpi):
    """Originals over reconstructions of RUN, each labelled with its distortion (nats)."""
    from disentangle import plots
    from disentangle.evaluation import figure_data
    fig = plots.reconstructions(figure_data.reconstructions(run, data, n_images=n_images, seed=seed,
                                                            device=_device(device)))
    _save(fig, out or plots.default_out(run, "reconstructions.png"), dpi)


@plot.command("training")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@_out_option
def plot_training(runs, out, dpi):
    """Loss, reconstruction and KL (total and per dimension) against step for RUNS."""
    from disentangle import plots
    fig = plots.training(runs)
    _save(fig, out or plots.default_training_out(runs), dpi)
