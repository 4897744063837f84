"""Figures for papers: rate–distortion plane, metric against regularisation strength,
latent traversals, reconstructions, training curves.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot (so no
global figure registry, no interactive backend, nothing to close), styled with seaborn,
and :func:`save_figure` writes it as PNG (raster, for slides and the README) and PDF
(vector, for the paper) through the Agg/PDF canvases. matplotlib and seaborn are
imported inside the functions: ``import disentangle.plots`` is cheap.

Titles name the data source of the runs shown; axes carry units (nats). Figures draw the
arrays and DataFrames they are given: what a run's figures need computed (traversal grids,
reconstructions, KL per dimension) comes from :mod:`disentangle.evaluation.figure_data`.
"""
from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from disentangle.errors import UserError

PNG_DPI = 200


def metric_label(column: str) -> str:
    """Axis label of a score column: the metric registry's label for the key; anything
    else shows its column name."""
    from disentangle.evaluation.metrics import METRICS
    metric, _, key = column.partition(".")
    spec = METRICS.get(metric)
    if spec is not None and key in spec.labels:
        return spec.labels[key]
    return column + (" (nats)" if column.endswith("_nats") and "(nats)" not in column else "")


# --------------------------------------------------------------------------- style and saving
@contextlib.contextmanager
def _style():
    """Seaborn's paper style for the figure being built, without touching global rcParams."""
    import matplotlib
    import seaborn as sns
    rc = {"pdf.fonttype": 42, "ps.fonttype": 42,  # embed TrueType: editable text in the PDF
          "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
          "legend.fontsize": 8, "figure.titlesize": 11}
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"), matplotlib.rc_context(rc):
        yield sns


def _new_figure(width: float, height: float, **kwargs):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def output_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """``out`` names the figure; PNG and PDF are written side by side (foo.png, foo.pdf)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")


FIGURE_CREATOR = "disentangle"   # stamped in each figure's metadata (PNG tEXt, PDF /Creator)


def _is_our_figure(path: Path) -> bool:
    """Whether ``path`` is a figure this toolkit wrote (its Creator stamp)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > (256 << 20):
            return False
        data = path.read_bytes()
    except OSError:
        return False
    return (b"Creator\x00" + FIGURE_CREATOR.encode()) in data or (b"/Creator (" + FIGURE_CREATOR.encode()) in data


def save_figure(fig, out: str | os.PathLike, dpi: int = PNG_DPI, echo=None) -> list[Path]:
    """Write ``fig`` as PNG (``dpi``) and PDF next to each other, atomically; return the
    paths written. When ``out`` names one of them (foo.pdf), the other (foo.png) is written
    only where no file is there yet or one this toolkit wrote: a user's own file that was
    not named is left alone (``echo`` says so)."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from disentangle.io import atomic_path
    png, pdf = output_paths(out)
    named = Path(out).suffix.lower()
    written = []
    if fig.canvas is None or not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    with matplotlib.rc_context({"pdf.fonttype": 42}):
        for path, fmt in ((png, "png"), (pdf, "pdf")):
            if named in (".png", ".pdf") and named != f".{fmt}" and os.path.lexists(path) \
                    and not _is_our_figure(path):
                if echo is not None:
                    echo(f"left {path} alone: not named by --out and not a figure disentangle wrote")
                continue
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, **({"dpi": dpi} if fmt == "png" else {}),
                            metadata={"Creator": FIGURE_CREATOR})
            written.append(path)
    return written


def _data_caption(df_or_labels) -> str:
    if hasattr(df_or_labels, "columns"):
        from disentangle.report import data_names
        labels = data_names(df_or_labels)
    else:
        labels = sorted(set(df_or_labels))
    return "data: " + ("; ".join(labels) if labels else "unknown")


# --------------------------------------------------------------------------- datasets: facets, colours
# A study of several datasets (the configuration's ``dataset`` column): the rate–distortion
# plane and the metric correlation get a panel per dataset (their scales and matrices are
# the dataset's own), wrapped FACET_COLUMNS a row; metric against strength and the
# distribution per method colour by dataset instead (a panel per dataset and metric
# would multiply an already full grid by the number of datasets).
_DATASET_PALETTE = ("Dark2", "Set1")   # not the methods' "colorblind": a colour means one thing a figure
# the datasets studies compare most get the most distinct colours; the rest in the registry's order
_DATASET_COLOUR_ORDER = ("dsprites", "shapes3d", "mpi3d-toy", "smallnorb", "cars3d", "color-dsprites",
                         "noisy-dsprites", "scream-dsprites")


def _datasets(df) -> list[str]:
    from disentangle.report import datasets_of
    return datasets_of(df)


def _dataset_colours(sns) -> dict[str, tuple]:
    """dataset -> colour, fixed per registered dataset (not per figure); other names
    (imported image folders) take the colours after them."""
    from disentangle.data.datasets import REGISTRY
    palette = [c for name in _DATASET_PALETTE for c in sns.color_palette(name)]
    order = [*_DATASET_COLOUR_ORDER, *(d for d in REGISTRY if d not in _DATASET_COLOUR_ORDER)]
    return {d: palette[k % len(palette)] for k, d in enumerate(order)}


def _dataset_colour(colours: dict, dataset: str, others: Sequence[str]) -> tuple:
    if dataset in colours:
        return colours[dataset]
    palette = list(colours.values())
    return palette[(len(colours) + list(others).index(dataset)) % len(palette)]


def _facet_panels(runs) -> list[tuple[str, object]]:
    """[(panel title, its runs)]: one panel per dataset and data source ("Shapes3D · data:
    official"; without a dataset column "data: official"), datasets in the registry's order."""
    from disentangle.report import dataset_name, split_by_dataset
    panels = []
    for dataset, sub in split_by_dataset(runs):
        labels = sub["data_label"].fillna("unknown")
        for label in sorted(labels.unique()):
            title = f"data: {label}" if dataset is None else f"{dataset_name(dataset)}\ndata: {label}"
            panels.append((title, sub[labels == label]))
    return panels


# --------------------------------------------------------------------------- methods: colours, markers
# A method keeps its colour and marker in every figure (the rate–distortion plane, metric
# against strength), whichever methods a study holds: both follow the method registry's order.
_METHOD_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _method_order(methods) -> list[str]:
    from disentangle.methods import METHODS
    present = [m for m in dict.fromkeys(methods) if isinstance(m, str)]
    return [m for m in METHODS if m in present] + sorted(m for m in present if m not in METHODS)


def _method_styles(sns, methods) -> dict[str, tuple]:
    """method -> (colour, marker), fixed per method (not per figure)."""
    from disentangle.methods import METHODS
    everything = list(METHODS) + sorted(m for m in methods if m not in METHODS)
    palette = sns.color_palette("colorblind", max(10, len(everything)))
    return {m: (palette[k % len(palette)], _METHOD_MARKERS[k % len(_METHOD_MARKERS)])
            for k, m in enumerate(everything) if m in set(methods)}


def method_label(method: str) -> str:
    from disentangle.config import method_label
    return method_label(method)


def _spans_decades(values) -> bool:
    """A log axis (or colour scale) for positive values a factor of 10 or more apart."""
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals)]
    return vals.size > 1 and vals.min() > 0 and vals.max() >= 10 * vals.min()


def _values_text(values) -> str:
    vals = sorted(set(float(v) for v in values if np.isfinite(v)))
    return ", ".join(f"{v:g}" for v in vals)


# --------------------------------------------------------------------------- rate–distortion
RD_SIZES = (16.0, 110.0)   # marker areas (pt²) of a method's smallest and largest strength value
RD_PANEL_WIDTH, RD_PANEL_HEIGHT = 2.5, 2.4   # inches, a panel of a several-dataset plane (3 a row: a page)


def rate_distortion(df):
    """Every run with ``info`` scores on the rate–distortion plane (nats).

    One method: runs coloured by its regularisation strength (β, C_max, γ or λ_od; a log
    scale where the values span decades), with a colour bar. Several methods: colour and
    marker say the method; marker size the strength's value, ranked within the method
    (its own scale: β = 16 and γ = 100 are both their method's largest), the legend
    listing each method's values. For runs whose D is a proper discrete likelihood of
    their pixels (``info.is_bound``: Bernoulli on binary images, a discretised Gaussian or
    logistic on 8-bit ones) the line D = H(X) − R is drawn with the region below it
    shaded: no model can go there, because H(X) − D is a lower bound on I_gen and R an
    upper bound on I_rep, and the line is where they meet (Alemi et al. 2018). Otherwise
    (a Gaussian decoder's density, a Bernoulli on 8-bit intensities) the line is no bound
    and is not drawn. One panel per dataset and data file (their R and D scales are the
    dataset's own), :data:`FACET_COLUMNS` a row; with several panels and methods the
    method legend is the figure's, once, and each panel's own legend names its bound."""
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.lines import Line2D

    from disentangle.config import strength_label

    need = ["info.rate_nats", "info.distortion_nats"]
    missing = [c for c in need if c not in df.columns]
    runs = df.dropna(subset=need) if not missing else df.iloc[0:0]
    if runs.empty:
        raise UserError("no run has rate/distortion scores: run `disentangle evaluate RUN --metric info` first")
    runs = runs.assign(method=runs["method"].fillna("unknown"))
    facets = _facet_panels(runs)
    methods = _method_order(runs["method"].unique())
    several = len(methods) > 1
    ncols = min(FACET_COLUMNS, len(facets))
    nrows = math.ceil(len(facets) / ncols)
    # one panel as before; a grid of smaller panels, the methods' legend once, beside it
    shared_legend = several and len(facets) > 1
    if len(facets) == 1:
        size = (4.6 + (2.4 if several else 1.2), 3.8)
    else:   # the methods' legend under the panels; a single method's colour bar beside them
        size = (RD_PANEL_WIDTH * ncols + (0 if several else 0.7),
                RD_PANEL_HEIGHT * nrows + 0.6 + (0.22 * math.ceil((len(methods) + 2) / 2) if several else 0))
    with _style() as sns:
        styles = _method_styles(sns, methods)
        fig = _new_figure(*size)
        grid = fig.subplots(nrows, ncols, squeeze=False)
        axes = [grid[k // ncols][k % ncols] for k in range(len(facets))]
        for k in range(len(facets), nrows * ncols):
            grid[k // ncols][k % ncols].set_visible(False)
        colorbar = None
        method_handles: dict[str, object] = {}
        if not several:
            values = runs["strength"].dropna().unique()
            key = runs["strength_name"].dropna().iloc[0] if runs["strength_name"].notna().any() else None
            norm = (LogNorm if _spans_decades(values) else Normalize)(
                *((values.min(), values.max()) if len(values) > 1 else (0, 1)))
        for ax, (title, sub) in zip(axes, facets):
            handles = []
            for method in methods:
                group = sub[sub["method"] == method]
                if group.empty:
                    continue
                colour, marker = styles[method]
                style = dict(marker=marker, edgecolors="black", linewidths=0.5, zorder=3)
                xy = (group["info.rate_nats"], group["info.distortion_nats"])
                strengths = group["strength"].astype(float)
                all_values = sorted(runs.loc[runs["method"] == method, "strength"].dropna().unique())
                name = group["strength_name"].dropna()
                symbol = strength_label(name.iloc[0]).split(" (")[0] if len(name) else "strength"
                if several:
                    # size by rank within the method: each method's strengths are on their own scale
                    rank = {v: k for k, v in enumerate(all_values)}
                    frac = np.array([rank.get(v, 0) / max(1, len(all_values) - 1) for v in strengths])
                    sizes = RD_SIZES[0] + frac * (RD_SIZES[1] - RD_SIZES[0])
                    sc = ax.scatter(*xy, s=sizes, color=colour, alpha=0.85, **style)
                    handles.append(Line2D([], [], linestyle="", marker=marker, markersize=7, markerfacecolor=colour,
                                          markeredgecolor="black",
                                          label=f"{method_label(method)}: {symbol} ∈ {{{_values_text(all_values)}}}"))
                elif len(all_values) > 1:
                    sc = ax.scatter(*xy, s=38, c=strengths, norm=norm, cmap="viridis", **style)
                    colorbar = (sc, all_values, strength_label(key) if key else "strength")
                    handles.append(Line2D([], [], linestyle="", marker=marker, markersize=6, markerfacecolor="0.75",
                                          markeredgecolor="black", label=method_label(method)))
                else:
                    # one strength for all: a colour scale would encode nothing
                    sc = ax.scatter(*xy, s=38, color=colour, **style)
                    handles.append(Line2D([], [], linestyle="", marker=marker, markersize=6, markerfacecolor=colour,
                                          markeredgecolor="black", label=method_label(method)
                                          + (f", {symbol} = {all_values[0]:g}" if all_values else "")))
                sc.set_gid(f"runs:{method}")
            _draw_rd_bound(ax, sub)
            if len(facets) == 1:
                ax.set_xlabel("rate R = E KL(q(z|x) ‖ p(z)) (nats)")
                ax.set_ylabel("distortion D = −E log p(x|z) (nats)")
            else:   # the suptitle defines R and D once
                ax.set_xlabel("rate R (nats)")
                ax.set_ylabel("distortion D (nats)")
            ax.set_title(title, fontsize=8 if len(facets) > 1 else None)
            if shared_legend:
                # the methods' entries go to the figure's legend; the panel keeps its bound
                for h in handles:
                    method_handles.setdefault(h.get_label(), h)
                handles = []
            if several:
                # the size key, in grey: size is the hyper-parameter's rank within each method
                # (for AnnealedVAE a larger C_max regularises less, so "value", not "strength")
                handles += [Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(s), markerfacecolor="0.85",
                                   markeredgecolor="black", label=f"{which} value of its method's hyper-parameter")
                            for s, which in zip(RD_SIZES, ("smallest", "largest"))]
            if shared_legend:
                for h in handles:
                    method_handles.setdefault(h.get_label(), h)
                handles = []
            handles += ax.get_legend_handles_labels()[0]  # the bound line and the shaded region
            if several and not shared_legend:
                ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=True, fontsize=7)
            elif handles:
                ax.legend(handles=handles, loc="best", frameon=True, fontsize=6 if len(facets) > 1 else None)
            sns.despine(ax=ax)
        if shared_legend:
            legend = fig.legend(handles=list(method_handles.values()), loc="outside lower center", frameon=True,
                                fontsize=7, ncols=2)
            legend.set_gid("methods")
        if colorbar is not None:
            sc, ticks, name = colorbar
            cbar = fig.colorbar(sc, ax=[ax for row in grid for ax in row], pad=0.01, fraction=0.05)
            cbar.set_label(name)
            cbar.set_ticks(ticks)
            cbar.set_ticklabels([f"{t:g}" for t in ticks])
            cbar.minorticks_off()
        fig.suptitle("Rate–distortion plane of the trained models" + (
            "" if len(facets) == 1 else "\nR = E KL(q(z|x) ‖ p(z)), D = −E log p(x|z); one panel per dataset"))
    return fig


def _draw_rd_bound(ax, runs) -> None:
    if "info.entropy_x_nats" not in runs.columns:
        return
    # the info metric says whether H(X) - D bounds I_gen (a discrete likelihood); older
    # scores without the flag fall back to the run's configured likelihood
    is_bound = runs["likelihood"].eq("bernoulli") if "likelihood" in runs.columns else runs["method"].isna()
    if "info.is_bound" in runs.columns:
        flag = runs["info.is_bound"]
        is_bound = flag.where(flag.notna(), is_bound).astype(bool)
    bounded = runs[is_bound]
    h_values = sorted(set(np.round(bounded["info.entropy_x_nats"].dropna().to_numpy(dtype=float), 6)))
    r_max = float(runs["info.rate_nats"].max())
    d_max = float(runs["info.distortion_nats"].max())
    for h in h_values:
        # the segment from the auto-decoding limit (R=0, D=H) to the auto-encoding limit (R=H, D=0)
        line, = ax.plot([0.0, h], [h, 0.0], color="0.25", linestyle="--", linewidth=1.1, zorder=2,
                        label=f"D = H(X) − R, H(X) = {h:.2f} nats")
        line.set_gid(f"bound:{h}")
        # the legend names the shaded region: a label inside it is unreadable when D >> H(X)
        ax.fill_between([0.0, h], [h, 0.0], 0.0, color="0.8", zorder=1, linewidth=0,
                        label="infeasible: D < H(X) − R" if h == h_values[0] else None)
        r_max, d_max = max(r_max, h), max(d_max, h)
    if len(bounded) < len(runs):
        ax.text(0.02, 0.02, f"{len(runs) - len(bounded)} run(s) whose D is no discrete likelihood of their "
                            f"pixels: H(X) − R is no bound for them", transform=ax.transAxes, fontsize=7, color="0.3")
    ax.set_xlim(0, r_max * 1.06)
    ax.set_ylim(0, d_max * 1.06)


# --------------------------------------------------------------------------- metric against strength
_LINESTYLES = ("-", "--", ":", "-.")
# wrapped facets (metric against strength, the distribution per method): at most this many
# panels a row, each this many inches; 3 × 2.5 in = 7.5 in, a page's text width
# (1,500 px at PNG_DPI)
FACET_COLUMNS = 3
FACET_WIDTH = 2.5
FACET_HEIGHT = 2.1


def left_out_metrics(drawn: Sequence[str]) -> list[str]:
    """The registered disentanglement scores a figure of ``drawn`` metrics leaves out."""
    from disentangle.evaluation.metrics import score_metrics
    return [m for m in score_metrics() if m not in set(drawn)]


def _name_left_out(fig, drawn: Sequence[str]) -> None:
    # every registered metric is either drawn or named here (issue 23)
    missing = left_out_metrics(drawn)
    if missing:
        text = fig.supxlabel("not drawn (no scores in these runs, or not asked for): " + ", ".join(missing),
                             fontsize=7, color="0.35")
        text.set_gid("left-out")
    fig.metrics_left_out = missing


def metric_vs_strength(df, metrics: Sequence[str]):
    """Scores against regularisation strength: one panel row per method, each on its own
    hyper-parameter's axis (β, C_max, γ or λ_od, from ``strength_name``; log where the
    values span decades), one panel column per metric (y shared down a column, so
    methods compare). Mean line and ±1 std band over seeds, each seed a faint dot. Runs
    on different datasets, or differing in another setting inside a method (say the
    architecture), get lines of their own, never one line through both. Several datasets
    (the ``dataset`` column): a line per dataset in each panel, coloured by dataset (fixed
    per dataset) with a legend; the grid stays methods × metrics however many datasets."""
    from disentangle.config import strength_label
    from disentangle.report import (DATASET, aggregate, dataset_name, headline_column, settings_varying_within,
                                    with_datasets)

    if not metrics:
        raise UserError("metric-vs-strength: name at least one --metric (e.g. --metric mig)")
    columns = [headline_column(df, m) for m in metrics]
    runs = df.dropna(subset=["method", "strength"]) if "strength" in df.columns else df.iloc[0:0]
    if runs.empty:
        raise UserError("metric-vs-strength: no runs of a known method with a strength to plot")
    runs = with_datasets(runs.assign(data_label=runs["data_label"].fillna("unknown")))
    datasets = _datasets(runs)
    by_dataset = len(datasets) > 1
    methods = _method_order(runs["method"].unique())
    keys = ["method", "strength_name", "strength"]
    # wrapped facets: each method's metrics fill rows of at most FACET_COLUMNS panels, every
    # method starting on a new row, so the figure keeps a page's width however many metrics
    ncols = min(FACET_COLUMNS, len(columns))
    rows_per_method = math.ceil(len(columns) / ncols)
    with _style() as sns:
        styles = _method_styles(sns, methods)
        dataset_colours = _dataset_colours(sns)
        nrows = rows_per_method * len(methods)
        fig = _new_figure(FACET_WIDTH * ncols, FACET_HEIGHT * nrows + 0.9)
        panels = fig.subplots(nrows, ncols, squeeze=False)
        grid = [[panels[i * rows_per_method + j // ncols][j % ncols] for j in range(len(columns))]
                for i in range(len(methods))]
        for i in range(len(methods)):
            for j in range(len(columns), rows_per_method * ncols):
                panels[i * rows_per_method + j // ncols][j % ncols].set_visible(False)
        for i, method in enumerate(methods):
            sub = runs[runs["method"] == method]
            key = sub["strength_name"].iloc[0]
            # lines: one per dataset, data file and other setting that varies inside this method
            lead = [DATASET] if DATASET in sub.columns else []
            extra = settings_varying_within(sub, keys + lead + ["data_label", "data_sha256"])
            line_keys = [*lead, "data_label", *extra]
            lines = sub[line_keys].drop_duplicates().sort_values(line_keys).to_dict("records")
            if by_dataset:
                rank = {d: k for k, d in enumerate(datasets)}
                lines.sort(key=lambda v: rank[v[DATASET]])
            ticks = sorted(sub["strength"].astype(float).unique())
            log = _spans_decades(ticks)
            colour, marker = styles[method]
            for j, col in enumerate(columns):
                ax = grid[i][j]
                agg = aggregate(sub, keys + extra, [col])
                for k, line_key in enumerate(lines):
                    if by_dataset:
                        # colour: the dataset; line style: its data files and other settings
                        mine = [v for v in lines if v[DATASET] == line_key[DATASET]]
                        name = ", ".join(filter(None, [dataset_name(line_key[DATASET]), _line_name(
                            line_key, extra, several=len(mine) > 1)]))
                        colour = _dataset_colour(dataset_colours, line_key[DATASET], datasets)
                        style = _LINESTYLES[mine.index(line_key) % len(_LINESTYLES)]
                    else:
                        name = _line_name(line_key, extra, several=len(lines) > 1)
                        style = _LINESTYLES[k % len(_LINESTYLES)]
                    gid = method + (f"|{name}" if name else "")
                    sel_agg = _select(agg, line_key).sort_values("strength")
                    sel_agg = sel_agg[sel_agg[f"{col}.count"] > 0]
                    if sel_agg.empty:
                        continue
                    xs = sel_agg["strength"].to_numpy(dtype=float)
                    mean = sel_agg[f"{col}.mean"].to_numpy(dtype=float)
                    std = np.nan_to_num(sel_agg[f"{col}.std"].to_numpy(dtype=float))
                    line, = ax.plot(xs, mean, marker=marker, color=colour, linestyle=style, zorder=3,
                                    label=name or method_label(method))
                    line.set_gid(f"mean:{gid}")
                    band = ax.fill_between(xs, mean - std, mean + std, color=colour, alpha=0.2, linewidth=0)
                    band.set_gid(f"band:{gid}")
                    seeds = _select(sub, line_key).dropna(subset=[col])
                    dots = ax.scatter(seeds["strength"].astype(float), seeds[col], color=colour, s=9, alpha=0.45,
                                      linewidths=0, zorder=2)
                    dots.set_gid(f"seeds:{gid}")
                if log:
                    ax.set_xscale("log")
                ax.margins(x=0.08)   # end points off the frame
                ax.set_xticks(ticks)
                ax.set_xticklabels([f"{t:g}" for t in ticks])
                ax.minorticks_off()
                ax.set_xlabel(strength_label(key) + (", log scale" if log else ""))
                ax.set_ylabel(metric_label(col), fontsize=8)
                ax.set_title(method_label(method), fontsize=9)
                sns.despine(ax=ax)
                if len(lines) > 1 and j == 0:
                    ax.legend(fontsize=6, loc="best")
        # a metric shares its y range across methods, so the methods compare
        for j in range(len(columns)):
            lows, highs = zip(*(grid[i][j].get_ylim() for i in range(len(methods))))
            for i in range(len(methods)):
                grid[i][j].set_ylim(min(lows), max(highs))
        n = runs.groupby([*([DATASET] if DATASET in runs.columns else []), "data_label", *keys], dropna=False).size()
        n_text = f"{n.min()}" if n.min() == n.max() else f"{n.min()}–{n.max()}"
        what = ("one seed per setting" if n.max() == 1
                else f"mean ± 1 std over {n_text} seeds (dots: single runs)")
        fig.suptitle(f"Scores against regularisation strength: {what}\n" + _data_caption(runs))
        _name_left_out(fig, [c.split(".", 1)[0] for c in columns])
    fig.metrics_drawn = [c.split(".", 1)[0] for c in columns]
    return fig


def metric_vs_beta(df, metrics: Sequence[str]):
    """The figure's first name (``plot metric-vs-beta``): :func:`metric_vs_strength`."""
    return metric_vs_strength(df, metrics)


def _select(table, values: dict):
    mask = np.ones(len(table), dtype=bool)
    for k, v in values.items():
        col = table[k]
        mask &= (col.isna().to_numpy() if _is_missing(v) else (col == v).to_numpy())
    return table[mask]


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _line_name(values: dict, extra: Sequence[str], several: bool) -> str:
    """A line's legend entry: the other settings that tell it apart, and its data when
    the panel has more than one line."""
    parts = [f"{k} = {values[k]:g}" if isinstance(values[k], float) else f"{k} = {values[k]}" for k in extra]
    if several:
        parts.append(f"data: {values['data_label']}")
    return ", ".join(parts)


# --------------------------------------------------------------------------- runs: model, data
def _run_title(run_name: str, data_label: str) -> str:
    return f"{run_name} · data: {data_label}"


# --------------------------------------------------------------------------- traversal
# In display space (what imshow is given): grey images are drawn inverted (the object dark
# on white, as papers print dSprites), colour images as they are; white gaps and blanks,
# light grey separators between cells.
_WHITE, _SEPARATOR = 1.0, 0.88


def _display(image) -> np.ndarray:
    """One (C, 64, 64) image in [0, 1] (or a grey (64, 64) one) as (64, 64, C) display
    values: grey inverted, colour unchanged."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[None]
    if image.shape[0] == 1:
        return 1.0 - image.transpose(1, 2, 0)
    return np.clip(image.transpose(1, 2, 0), 0.0, 1.0)


def _show(ax, montage):
    """imshow of a (H, W, C) display montage: grey (C = 1) with the grey colour map (the
    array drawn is 2-D), colour as RGB."""
    if montage.shape[-1] == 1:
        return ax.imshow(montage[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    return ax.imshow(montage, interpolation="nearest")


def traversal(t):
    """Latent traversals as computed by :func:`disentangle.evaluation.figure_data.traversals`
    (``t``): rows are dimensions sorted by their KL (most informative first) and labelled
    with it; one panel per base image, the base image and its reconstruction at the left.
    Colour images (C = 3) are drawn in colour, grey ones (C = 1) in grey.
    ``fig.traversal_info`` holds what was drawn: dimension order, KL per dimension, image
    indices, sweep values."""
    order, kl, values, n_images, steps = t.order, t.kl.kl, t.values, len(t.indices), len(t.values)
    channels = _display(t.originals[0]).shape[-1]
    with _style():
        cell = 0.34  # inches per 64x64 image: small multiples stay legible, 3 panels fit a page width
        fig = _new_figure(1.1 + n_images * (steps + 2.3) * cell, 0.9 + len(order) * cell * 1.05)
        axes = fig.subplots(1, n_images, squeeze=False)[0]
        gap = 6
        blank = np.full((64, 64, channels), _WHITE)
        for b, ax in enumerate(axes):
            # base image and its reconstruction in the first two columns, a gap, then the sweep
            rows = []
            for r in range(len(order)):
                left = ([_display(t.originals[b]), _display(t.reconstructions[b])] if r == 0 else [blank, blank])
                cells = []
                for image in t.grids[b][r]:
                    cells += [_display(image), np.full((64, 1, channels), _SEPARATOR)]
                row = np.concatenate(left + [np.full((64, gap, channels), _WHITE)] + cells[:-1], axis=1)
                rows.append(np.pad(row, ((0, gap // 2), (0, 0), (0, 0)), constant_values=_SEPARATOR))
            im = _show(ax, np.concatenate(rows, axis=0))
            im.set_gid(f"traversal:{b}")
            row_h = 64 + gap // 2
            ax.set_yticks([r * row_h + 32 for r in range(len(order))])
            ax.set_yticklabels([f"z{int(d)}  KL {kl[d]:.2f}" for d in order] if b == 0 else [])
            x0 = 2 * 64 + gap
            ax.set_xticks([32, 96] + [x0 + 32 + 65 * k for k in range(steps)])
            ax.set_xticklabels(["input", "recon."] + [f"{v:+.1f}".replace("-", "\u2212") for v in values], fontsize=6)
            ax.tick_params(length=0)
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(f"image {int(t.indices[b])}", fontsize=8)
        fig.suptitle(f"Latent traversals, z_d ∈ [−{t.span:g}, {t.span:g}] prior std; rows sorted by KL (nats, "
                     f"mean over {t.kl.description})\n{_run_title(t.run_name, t.data_label)}", fontsize=9)
    fig.traversal_info = {"order": order, "kl": kl, "indices": t.indices, "values": values}
    return fig


GIF_FRAME_MS = 250   # per traversal value: a ±3 sweep of 9 values loops in about 2 s
GIF_SCALE = 2        # pixels per image pixel (64x64 cells are small on a screen)


def traversal_frames(t, scale: int = GIF_SCALE) -> list[np.ndarray]:
    """The animated traversal's frames, one per sweep value: uint8 (H, W, C) images, each
    the grid of latents (rows, sorted by KL as in :func:`traversal`) × base images
    (columns) at that value, grey inverted as in the figure, 2-pixel separators."""
    rows, n_images, steps = len(t.order), len(t.indices), len(t.values)
    channels = _display(t.originals[0]).shape[-1]
    sep = 2
    height, width = rows * 64 + (rows - 1) * sep, n_images * 64 + (n_images - 1) * sep
    frames = []
    for k in range(steps):
        frame = np.full((height, width, channels), _SEPARATOR)
        for r in range(rows):
            for b in range(n_images):
                y, x = r * (64 + sep), b * (64 + sep)
                frame[y:y + 64, x:x + 64] = _display(t.grids[b][r][k])
        frame = np.rint(frame * 255.0).astype(np.uint8)
        frames.append(frame.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else frame)
    return frames


def save_traversal_gif(t, out: str | os.PathLike, duration_ms: int = GIF_FRAME_MS,
                       scale: int = GIF_SCALE) -> Path:
    """Write :func:`traversal_frames` as an animated GIF that loops forever (Pillow),
    atomically; ``duration_ms`` per frame. Colour frames get an adaptive 256-colour
    palette each; the GIF writer merges consecutive identical frames (summing their
    durations), so a traversal that changes nothing has fewer frames."""
    from PIL import Image

    from disentangle.io import atomic_path
    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise UserError(f"{out}: a traversal GIF's name must end in .gif")
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or duration_ms < 20:
        raise UserError(f"GIF frame duration must be an integer of at least 20 ms, got {duration_ms!r}")
    images = []
    for frame in traversal_frames(t, scale):
        if frame.shape[-1] == 1:
            images.append(Image.fromarray(frame[..., 0], mode="L"))
        else:
            images.append(Image.fromarray(frame, mode="RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256))
    with atomic_path(out) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return out


# --------------------------------------------------------------------------- reconstructions
def reconstructions(r):
    """Originals (top row) over reconstructions from the posterior mean (bottom row), as
    computed by :func:`disentangle.evaluation.figure_data.reconstructions` (``r``); each
    reconstruction is labelled with its distortion −log p(x|z) (nats; for a Gaussian
    decoder a density). Colour images are drawn in colour, grey ones in grey (inverted).
    ``fig.reconstruction_info`` holds the image indices and their distortions."""
    n_images = len(r.indices)
    with _style():
        fig = _new_figure(0.95 * n_images + 0.9, 2.6)
        axes = fig.subplots(2, n_images, squeeze=False)
        for k in range(n_images):
            for row, img in enumerate((r.originals[k], r.reconstructions[k])):
                ax = axes[row][k]
                im = _show(ax, _display(img))
                im.set_gid(f"{'original' if row == 0 else 'reconstruction'}:{k}")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_edgecolor("0.7")
            axes[1][k].set_xlabel(f"{r.distortion[k]:.1f}", fontsize=7)
        axes[0][0].set_ylabel("input", fontsize=8)
        axes[1][0].set_ylabel("recon.", fontsize=8)
        fig.suptitle("Reconstructions from the posterior mean; below: −log p(x|z) (nats)"
                     + (f", {r.likelihood} decoder: a density" if r.likelihood == "gaussian" else ""),
                     fontsize=9)
        fig.supxlabel(_run_title(r.run_name, r.data_label), fontsize=8)
    fig.reconstruction_info = {"indices": r.indices, "distortion": r.distortion}
    return fig


# --------------------------------------------------------------------------- training curves
def training(run_dirs: Iterable[str | os.PathLike]):
    """Training curves against step: loss, reconstruction and total KL (with the capacity
    target C for beta-b runs), one line per run; then per-dimension KL, one panel per run
    (legend sorted by final KL)."""
    import pandas as pd
    from matplotlib.ticker import FuncFormatter

    from disentangle.results import data_label
    from disentangle.rundir import RunDir

    run_dirs = [Path(r) for r in run_dirs]
    if not run_dirs:
        raise UserError("training: name at least one run directory")
    logs, labels = [], []
    for r in run_dirs:
        logs.append(RunDir(r).read_train_log())
        try:
            labels.append(data_label(RunDir(r).training_data()))
        except UserError:
            labels.append("unknown")
    n = len(run_dirs)
    ncols = 3
    nrows = 1 + math.ceil(n / ncols)
    with _style() as sns:
        fig = _new_figure(11.0, 3.0 * nrows + 0.4)
        grid = fig.subplots(nrows, ncols, squeeze=False)
        palette = sns.color_palette("colorblind", n)
        top = {"loss": grid[0][0], "reconstruction": grid[0][1], "kl": grid[0][2]}
        for k, (r, log) in enumerate(zip(run_dirs, logs)):
            for col, ax in top.items():
                if col in log.columns:
                    line, = ax.plot(log["step"], log[col], color=palette[k], label=r.name, linewidth=1.2)
                    line.set_gid(f"{col}:{r.name}")
            if "capacity" in log.columns and (pd.to_numeric(log["capacity"], errors="coerce").fillna(0) > 0).any():
                cap, = top["kl"].plot(log["step"], log["capacity"], color=palette[k], linestyle="--", linewidth=1,
                                      label=f"{r.name}: capacity C")
                cap.set_gid(f"capacity:{r.name}")
        titles = {"loss": ("training loss", "loss (nats per image)"),
                  "reconstruction": ("reconstruction", "−log p(x|z) (nats per image)"),
                  "kl": ("KL(q(z|x) ‖ p(z)), total", "KL (nats per image)")}
        # early losses are an order of magnitude above late ones: a log scale keeps both
        # readable; loss and reconstruction share the choice so the panels compare
        values = pd.concat([lg[c] for lg in logs for c in ("loss", "reconstruction") if c in lg.columns])
        log_scale = bool(len(values)) and bool((values > 0).all()) and values.max() > 10 * values.min()
        for col, ax in top.items():
            title, ylabel = titles[col]
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.set_ylabel(ylabel)
            if col != "kl" and log_scale:
                ax.set_yscale("log")
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))  # 200, not 2×10²
                ax.yaxis.set_minor_formatter(FuncFormatter(_label_2_and_5))
            sns.despine(ax=ax)
        top["kl"].legend(fontsize=7, loc="best")
        for k, (r, log) in enumerate(zip(run_dirs, logs)):
            ax = grid[1 + k // ncols][k % ncols]
            dims = sorted((c for c in log.columns if _is_kl_dim(c)), key=lambda c: int(c.split("_")[-1]))
            final = {c: float(log[c].iloc[-1]) for c in dims}
            dim_palette = sns.color_palette("husl", len(dims)) if dims else []
            for c, color in zip(sorted(dims, key=lambda c: -final[c]), dim_palette):
                line, = ax.plot(log["step"], log[c], color=color, linewidth=1.0,
                                label=f"z{c.split('_')[-1]} ({final[c]:.2f})")
                line.set_gid(f"{c}:{r.name}")
            ax.set_title(f"KL per dimension: {r.name}" + (f"\ndata: {labels[k]}" if len(set(labels)) > 1 else ""),
                         fontsize=9)
            ax.set_xlabel("step")
            ax.set_ylabel("KL (nats)")
            if dims:
                ax.legend(fontsize=6, ncol=2, loc="best", title="dim (final KL, nats)", title_fontsize=6)
            sns.despine(ax=ax)
        for k in range(n, (nrows - 1) * ncols):
            grid[1 + k // ncols][k % ncols].set_visible(False)
        fig.suptitle("Training curves · " + _data_caption(labels))
    return fig


def _label_2_and_5(value: float, _pos=None) -> str:
    # minor ticks of a log axis: label 2x and 5x only, the others would overlap
    if value <= 0:
        return ""
    lead = round(value / 10 ** math.floor(math.log10(value)))
    return f"{value:g}" if lead in (2, 5) else ""


def _is_kl_dim(column: str) -> bool:
    head, _, tail = column.rpartition("_")
    return head in ("kl", "kl_dim") and tail.isdigit()


# --------------------------------------------------------------------------- one call per CLI command
def default_out(target: str | os.PathLike, name: str) -> Path:
    """Where a figure goes when --out is not given: <results or run dir>/figures/<name>."""
    return Path(target) / "figures" / name


def default_training_out(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """One run: <run>/figures/training.png; several: <their common parent>/figures/training.png."""
    paths = [Path(r).resolve() for r in run_dirs]
    if len(paths) == 1:
        return default_out(paths[0], "training.png")
    return default_out(Path(os.path.commonpath(paths)), "training.png")


# --------------------------------------------------------------------------- the study's classic figures (Locatello et al. 2019)
def metric_correlation(df, columns: Sequence[str] | None = None):
    """Spearman rank correlation between the metrics over all runs of a study, one heatmap
    per dataset (Locatello et al. 2019, Fig. 3), as computed by
    :func:`disentangle.report.metric_rank_correlation`; each cell annotated, −1 blue to +1
    red. ``fig.correlation`` holds the matrices (keyed by dataset, or by data source for
    runs without a dataset column). Several datasets: the heatmaps wrap, three a row (two
    where a matrix of many metrics is large), in the registry's order of datasets."""
    from disentangle.report import DATASET, dataset_name, metric_rank_correlation, study_metric_columns
    columns = list(columns or study_metric_columns(df))
    matrices = metric_rank_correlation(df, columns)
    k = max(len(m.columns) for m in matrices.values())
    side = max(3.2, 0.42 * k + 1.6)
    ncols = min(len(matrices), FACET_COLUMNS if side <= 3.5 else 2)
    nrows = math.ceil(len(matrices) / ncols)
    named = DATASET in df.columns
    with _style() as sns:
        fig = _new_figure(side * ncols + 0.8, (side + 0.2) * nrows + 0.3)
        grid = fig.subplots(nrows, ncols, squeeze=False)
        axes = [grid[j // ncols][j % ncols] for j in range(len(matrices))]
        for j in range(len(matrices), nrows * ncols):
            grid[j // ncols][j % ncols].set_visible(False)
        for ax, (dataset, matrix) in zip(axes, matrices.items()):
            labels = [_short_metric_label(c) for c in matrix.columns]
            sns.heatmap(matrix.to_numpy(), ax=ax, vmin=-1, vmax=1, cmap="RdBu_r", center=0, square=True,
                        annot=True, fmt=".2f", annot_kws={"fontsize": 6}, cbar=ax is axes[-1],
                        cbar_kws={"shrink": 0.7, "label": "Spearman ρ"}, xticklabels=labels, yticklabels=labels,
                        linewidths=0.5, linecolor="white")
            ax.collections[0].set_gid(f"correlation:{dataset}")
            ax.tick_params(axis="x", labelrotation=90, labelsize=7)
            ax.tick_params(axis="y", labelrotation=0, labelsize=7)
            ax.grid(False)
            title = f"{dataset_name(dataset) if named else 'data: ' + dataset} ({matrix.attrs['n']} runs)"
            if matrix.attrs.get("constant"):
                # a metric with one value over the runs has no ranks to correlate
                title += "\nconstant here, no rank correlation: " + ", ".join(
                    _short_metric_label(c) for c in matrix.attrs["constant"])
            ax.set_title(title, fontsize=8)
        fig.suptitle("Rank correlation between the metrics over all runs")
        _name_left_out(fig, [c.split(".", 1)[0] for c in columns])
    fig.correlation = matrices
    fig.metrics_drawn = [c.split(".", 1)[0] for c in columns]
    return fig


def _short_metric_label(column: str) -> str:
    # heatmap ticks: the registry's label without its parenthesised gloss ("MIG", "SAP score")
    return metric_label(column).split(" (")[0]


def metric_distribution(df, columns: Sequence[str] | None = None):
    """The distribution of each metric per method over all runs of a study (Locatello
    et al. 2019's violin plots): one panel per metric (wrapped, :data:`FACET_COLUMNS` a
    row), a violin per method (its runs over every strength and seed) with each run a
    dot; methods in their fixed colours. ``fig.metrics_drawn`` lists the panels. Several
    datasets (the ``dataset`` column): under each method a violin per dataset, side by
    side, coloured by dataset (fixed per dataset) with one legend; the panels stay one
    per metric."""
    from disentangle.report import dataset_name, study_metric_columns, with_datasets
    columns = list(columns or study_metric_columns(df))
    runs = with_datasets(df.dropna(subset=["method"])) if "method" in df.columns else df.iloc[0:0]
    columns = [c for c in columns if c in runs.columns and runs[c].notna().any()]
    if runs.empty or not columns:
        raise UserError("metric-distribution: no run of a known method has scores")
    methods = _method_order(runs["method"].unique())
    names = [method_label(m) for m in methods]
    ncols = min(FACET_COLUMNS, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    with _style() as sns:
        styles = _method_styles(sns, methods)
        datasets = _datasets(runs)
        by_dataset = len(datasets) > 1
        data = runs.assign(method_name=runs["method"].map(method_label))
        if by_dataset:
            colours = _dataset_colours(sns)
            hue, hue_order = "dataset_name", [dataset_name(d) for d in datasets]
            palette = {dataset_name(d): _dataset_colour(colours, d, datasets) for d in datasets}
            data = data.assign(dataset_name=data["dataset"].map(dataset_name))
        else:
            hue, hue_order = "method_name", names
            palette = {method_label(m): styles[m][0] for m in methods}
        fig = _new_figure(FACET_WIDTH * ncols, FACET_HEIGHT * nrows + 0.8)
        panels = fig.subplots(nrows, ncols, squeeze=False)
        for j, col in enumerate(columns):
            ax = panels[j // ncols][j % ncols]
            sub = data.dropna(subset=[col])
            sns.violinplot(data=sub, x="method_name", y=col, hue=hue, order=names, hue_order=hue_order,
                           palette=palette, ax=ax, cut=0, inner=None, linewidth=0.6, density_norm="width",
                           legend=False, dodge=by_dataset)
            for collection in ax.collections:
                collection.set_alpha(0.55)
            if by_dataset:
                sns.stripplot(data=sub, x="method_name", y=col, hue=hue, order=names, hue_order=hue_order,
                              palette={k: "0.15" for k in hue_order}, dodge=True, size=2.2, jitter=0.1, ax=ax,
                              legend=False)
            else:
                sns.stripplot(data=sub, x="method_name", y=col, order=names, color="0.15", size=2.2, jitter=0.15,
                              ax=ax)
            ax.set_xlabel("")
            ax.set_ylabel(metric_label(col), fontsize=8)
            ax.tick_params(axis="x", labelrotation=30 if len(methods) > 3 else 0, labelsize=7)
            ax.set_gid(f"distribution:{col}")
            sns.despine(ax=ax)
        for j in range(len(columns), nrows * ncols):
            panels[j // ncols][j % ncols].set_visible(False)
        if by_dataset:
            from matplotlib.patches import Patch
            # the colour key once, in the first panel
            legend = panels[0][0].legend(handles=[Patch(facecolor=palette[h], alpha=0.55, label=h)
                                                  for h in hue_order], loc="best", frameon=True, fontsize=6)
            legend.set_gid("datasets")
        n = runs.groupby("method").size()
        fig.suptitle("Distribution of each metric per method over all runs (every strength and seed): "
                     + ", ".join(f"{method_label(m)} n = {n[m]}" for m in methods) + "\n" + _data_caption(runs),
                     fontsize=9)
        _name_left_out(fig, [c.split(".", 1)[0] for c in columns])
    fig.metrics_drawn = [c.split(".", 1)[0] for c in columns]
    return fig
