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
    labels = (sorted(df_or_labels["data_label"].dropna().unique())
              if hasattr(df_or_labels, "columns") else sorted(set(df_or_labels)))
    return "data: " + ("; ".join(labels) if labels else "unknown")


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


def rate_distortion(df):
    """Every run with ``info`` scores on the rate–distortion plane (nats).

    One method: runs coloured by its regularisation strength (β, C_max, γ or λ_od; a log
    scale where the values span decades), with a colour bar. Several methods: colour and
    marker say the method; marker size the strength's value, ranked within the method
    (its own scale: β = 16 and γ = 100 are both their method's largest), the legend
    listing each method's values. For Bernoulli runs the line D = H(X) − R is drawn with the region
    below it shaded: no model can go there, because H(X) − D is a lower bound on I_gen
    and R an upper bound on I_rep, and the line is where they meet (Alemi et al. 2018). A
    Gaussian (squared-error) decoder's D is a density, so for it the line is no bound and
    is not drawn. One panel per dataset."""
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.lines import Line2D

    from disentangle.config import strength_label

    need = ["info.rate_nats", "info.distortion_nats"]
    missing = [c for c in need if c not in df.columns]
    runs = df.dropna(subset=need) if not missing else df.iloc[0:0]
    if runs.empty:
        raise UserError("no run has rate/distortion scores: run `disentangle evaluate RUN --metric info` first")
    runs = runs.assign(method=runs["method"].fillna("unknown"))
    labels = sorted(runs["data_label"].fillna("unknown").unique())
    methods = _method_order(runs["method"].unique())
    several = len(methods) > 1
    with _style() as sns:
        styles = _method_styles(sns, methods)
        fig = _new_figure(4.6 * len(labels) + (2.4 if several else 1.2), 3.8)
        axes = fig.subplots(1, len(labels), squeeze=False)[0]
        colorbar = None
        if not several:
            values = runs["strength"].dropna().unique()
            key = runs["strength_name"].dropna().iloc[0] if runs["strength_name"].notna().any() else None
            norm = (LogNorm if _spans_decades(values) else Normalize)(
                *((values.min(), values.max()) if len(values) > 1 else (0, 1)))
        for ax, label in zip(axes, labels):
            sub = runs[runs["data_label"].fillna("unknown") == label]
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
            ax.set_xlabel("rate R = E KL(q(z|x) ‖ p(z)) (nats)")
            ax.set_ylabel("distortion D = −E log p(x|z) (nats)")
            ax.set_title(f"data: {label}")
            if several:
                # the size key, in grey: size is the hyper-parameter's rank within each method
                # (for AnnealedVAE a larger C_max regularises less, so "value", not "strength")
                handles += [Line2D([], [], linestyle="", marker="o", markersize=math.sqrt(s), markerfacecolor="0.85",
                                   markeredgecolor="black", label=f"{which} value of its method's hyper-parameter")
                            for s, which in zip(RD_SIZES, ("smallest", "largest"))]
            handles += ax.get_legend_handles_labels()[0]  # the bound line and the shaded region
            if several:
                ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=True, fontsize=7)
            else:
                ax.legend(handles=handles, loc="best", frameon=True)
            sns.despine(ax=ax)
        if colorbar is not None:
            sc, ticks, name = colorbar
            cbar = fig.colorbar(sc, ax=list(axes), pad=0.01, fraction=0.05)
            cbar.set_label(name)
            cbar.set_ticks(ticks)
            cbar.set_ticklabels([f"{t:g}" for t in ticks])
            cbar.minorticks_off()
        fig.suptitle("Rate–distortion plane of the trained models")
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
    bernoulli = runs[is_bound]
    h_values = sorted(set(np.round(bernoulli["info.entropy_x_nats"].dropna().to_numpy(dtype=float), 6)))
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
    if len(bernoulli) < len(runs):
        ax.text(0.02, 0.02, "Gaussian decoder runs: D is a density; H(X) − R is no bound for them",
                transform=ax.transAxes, fontsize=7, color="0.3")
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


def left_out_metrics(drawn: Sequence[str], kind: str = "disentanglement") -> list[str]:
    """The registered metrics of ``kind`` a figure of ``drawn`` metrics leaves out."""
    from disentangle.evaluation.metrics import metrics_of_kind
    return [m for m in metrics_of_kind(kind) if m not in set(drawn)]


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
    architecture), get lines of their own, never one line through both."""
    from disentangle.config import strength_label
    from disentangle.report import aggregate, headline_column, settings_varying_within

    if not metrics:
        raise UserError("metric-vs-strength: name at least one --metric (e.g. --metric mig)")
    columns = [headline_column(df, m) for m in metrics]
    runs = df.dropna(subset=["method", "strength"]) if "strength" in df.columns else df.iloc[0:0]
    if runs.empty:
        raise UserError("metric-vs-strength: no runs of a known method with a strength to plot")
    runs = runs.assign(data_label=runs["data_label"].fillna("unknown"))
    methods = _method_order(runs["method"].unique())
    keys = ["method", "strength_name", "strength"]
    # wrapped facets: each method's metrics fill rows of at most FACET_COLUMNS panels, every
    # method starting on a new row, so the figure keeps a page's width however many metrics
    ncols = min(FACET_COLUMNS, len(columns))
    rows_per_method = math.ceil(len(columns) / ncols)
    with _style() as sns:
        styles = _method_styles(sns, methods)
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
            # lines: one per dataset and per other setting that varies inside this method
            extra = settings_varying_within(sub, keys + ["data_label", "data_sha256"])
            line_keys = ["data_label", *extra]
            lines = sub[line_keys].drop_duplicates().sort_values(line_keys).to_dict("records")
            ticks = sorted(sub["strength"].astype(float).unique())
            log = _spans_decades(ticks)
            colour, marker = styles[method]
            for j, col in enumerate(columns):
                ax = grid[i][j]
                agg = aggregate(sub, keys + extra, [col])
                for k, line_key in enumerate(lines):
                    name = _line_name(line_key, extra, several=len(lines) > 1)
                    gid = method + (f"|{name}" if name else "")
                    sel_agg = _select(agg, line_key).sort_values("strength")
                    sel_agg = sel_agg[sel_agg[f"{col}.count"] > 0]
                    if sel_agg.empty:
                        continue
                    xs = sel_agg["strength"].to_numpy(dtype=float)
                    mean = sel_agg[f"{col}.mean"].to_numpy(dtype=float)
                    std = np.nan_to_num(sel_agg[f"{col}.std"].to_numpy(dtype=float))
                    style = _LINESTYLES[k % len(_LINESTYLES)]
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
        n = runs.groupby(["data_label", *keys], dropna=False).size()
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
def traversal(t):
    """Latent traversals as computed by :func:`disentangle.evaluation.figure_data.traversals`
    (``t``): rows are dimensions sorted by their KL (most informative first) and labelled
    with it; one panel per base image, the base image and its reconstruction at the left.
    ``fig.traversal_info`` holds what was drawn: dimension order, KL per dimension, image
    indices, sweep values."""
    order, kl, values, n_images, steps = t.order, t.kl.kl, t.values, len(t.indices), len(t.values)
    with _style():
        cell = 0.34  # inches per 64x64 image: small multiples stay legible, 3 panels fit a page width
        fig = _new_figure(1.1 + n_images * (steps + 2.3) * cell, 0.9 + len(order) * cell * 1.05)
        axes = fig.subplots(1, n_images, squeeze=False)[0]
        gap, sep = 6, 0.12  # separators in light grey (0 = background, shown white)
        blank = np.zeros((64, 64))
        for b, ax in enumerate(axes):
            # base image and its reconstruction in the first two columns, a gap, then the sweep
            rows = []
            for r in range(len(order)):
                left = [t.originals[b] if r == 0 else blank, t.reconstructions[b] if r == 0 else blank]
                cells = []
                for cell in t.grids[b][r]:
                    cells += [cell, np.full((64, 1), sep)]
                row = np.concatenate(left + [np.zeros((64, gap))] + cells[:-1], axis=1)
                rows.append(np.pad(row, ((0, gap // 2), (0, 0)), constant_values=sep))
            montage = np.concatenate(rows, axis=0)
            im = ax.imshow(1.0 - montage, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
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


# --------------------------------------------------------------------------- reconstructions
def reconstructions(r):
    """Originals (top row) over reconstructions from the posterior mean (bottom row), as
    computed by :func:`disentangle.evaluation.figure_data.reconstructions` (``r``); each
    reconstruction is labelled with its distortion −log p(x|z) (nats; for a Gaussian
    decoder a density). ``fig.reconstruction_info`` holds the image indices and their
    distortions."""
    n_images = len(r.indices)
    with _style():
        fig = _new_figure(0.95 * n_images + 0.9, 2.6)
        axes = fig.subplots(2, n_images, squeeze=False)
        for k in range(n_images):
            for row, img in enumerate((r.originals[k], r.reconstructions[k])):
                ax = axes[row][k]
                im = ax.imshow(1.0 - img, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
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
    red. ``fig.correlation`` holds the matrices."""
    from disentangle.report import metric_rank_correlation, study_metric_columns
    columns = list(columns or study_metric_columns(df))
    matrices = metric_rank_correlation(df, columns)
    k = max(len(m.columns) for m in matrices.values())
    side = max(3.2, 0.42 * k + 1.6)
    with _style() as sns:
        fig = _new_figure(side * len(matrices) + 0.8, side + 0.5)
        axes = fig.subplots(1, len(matrices), squeeze=False)[0]
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
            title = f"data: {dataset} ({matrix.attrs['n']} runs)"
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
    dot; methods in their fixed colours. ``fig.metrics_drawn`` lists the panels."""
    from disentangle.report import study_metric_columns
    columns = list(columns or study_metric_columns(df))
    runs = df.dropna(subset=["method"]) if "method" in df.columns else df.iloc[0:0]
    columns = [c for c in columns if c in runs.columns and runs[c].notna().any()]
    if runs.empty or not columns:
        raise UserError("metric-distribution: no run of a known method has scores")
    methods = _method_order(runs["method"].unique())
    names = [method_label(m) for m in methods]
    ncols = min(FACET_COLUMNS, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    with _style() as sns:
        styles = _method_styles(sns, methods)
        palette = {method_label(m): styles[m][0] for m in methods}
        fig = _new_figure(FACET_WIDTH * ncols, FACET_HEIGHT * nrows + 0.8)
        panels = fig.subplots(nrows, ncols, squeeze=False)
        data = runs.assign(method_name=runs["method"].map(method_label))
        for j, col in enumerate(columns):
            ax = panels[j // ncols][j % ncols]
            sub = data.dropna(subset=[col])
            sns.violinplot(data=sub, x="method_name", y=col, hue="method_name", order=names, hue_order=names,
                           palette=palette, ax=ax, cut=0, inner=None, linewidth=0.6, density_norm="width",
                           legend=False)
            for collection in ax.collections:
                collection.set_alpha(0.55)
            sns.stripplot(data=sub, x="method_name", y=col, order=names, color="0.15", size=2.2, jitter=0.15, ax=ax)
            ax.set_xlabel("")
            ax.set_ylabel(metric_label(col), fontsize=8)
            ax.tick_params(axis="x", labelrotation=30 if len(methods) > 3 else 0, labelsize=7)
            ax.set_gid(f"distribution:{col}")
            sns.despine(ax=ax)
        for j in range(len(columns), nrows * ncols):
            panels[j // ncols][j % ncols].set_visible(False)
        n = runs.groupby("method").size()
        fig.suptitle("Distribution of each metric per method over all runs (every strength and seed): "
                     + ", ".join(f"{method_label(m)} n = {n[m]}" for m in methods) + "\n" + _data_caption(runs),
                     fontsize=9)
        _name_left_out(fig, [c.split(".", 1)[0] for c in columns])
    fig.metrics_drawn = [c.split(".", 1)[0] for c in columns]
    return fig
