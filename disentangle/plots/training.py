"""Training curves of one or several runs (their train_log.csv): loss, reconstruction, total
KL (with the capacity target), and KL per latent dimension.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable

from disentangle.errors import UserError
from disentangle.plots.figure import data_caption, figure_style, new_figure


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
    with figure_style() as sns:
        fig = new_figure(11.0, 3.0 * nrows + 0.4)
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
        fig.suptitle("Training curves · " + data_caption(labels))
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
