"""Figures of a study (one point, line or violin per run, from :func:`disentangle.results.collect`'s
table): the rate–distortion plane, metric against regularisation strength, and Locatello et
al. 2019's metric correlation and distribution; methods and datasets keep one colour and marker
in every figure.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from disentangle.errors import UserError
from disentangle.plots.figure import data_caption, figure_style, metric_label, new_figure


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
    with figure_style() as sns:
        styles = _method_styles(sns, methods)
        fig = new_figure(*size)
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
    with figure_style() as sns:
        styles = _method_styles(sns, methods)
        dataset_colours = _dataset_colours(sns)
        nrows = rows_per_method * len(methods)
        fig = new_figure(FACET_WIDTH * ncols, FACET_HEIGHT * nrows + 0.9)
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
        fig.suptitle(f"Scores against regularisation strength: {what}\n" + data_caption(runs))
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
    with figure_style() as sns:
        fig = new_figure(side * ncols + 0.8, (side + 0.2) * nrows + 0.3)
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
    with figure_style() as sns:
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
        fig = new_figure(FACET_WIDTH * ncols, FACET_HEIGHT * nrows + 0.8)
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
                     + ", ".join(f"{method_label(m)} n = {n[m]}" for m in methods) + "\n" + data_caption(runs),
                     fontsize=9)
        _name_left_out(fig, [c.split(".", 1)[0] for c in columns])
    fig.metrics_drawn = [c.split(".", 1)[0] for c in columns]
    return fig
