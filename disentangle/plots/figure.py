"""A figure's style, its files and where they go: every figure of :mod:`disentangle.plots`
is built in :func:`figure_style` on :func:`new_figure` and written by :func:`save_figure` as PNG and
PDF side by side, atomically, stamped as disentangle's; axis labels from the metric registry.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

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
def figure_style():
    """Seaborn's paper style for the figure being built, without touching global rcParams."""
    import matplotlib
    import seaborn as sns
    rc = {"pdf.fonttype": 42, "ps.fonttype": 42,  # embed TrueType: editable text in the PDF
          "axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
          "legend.fontsize": 8, "figure.titlesize": 11}
    with sns.axes_style("whitegrid"), sns.plotting_context("paper"), matplotlib.rc_context(rc):
        yield sns


def new_figure(width: float, height: float, **kwargs):
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def output_paths(out: str | os.PathLike) -> tuple[Path, Path]:
    """``out`` names the figure; PNG and PDF are written side by side (foo.png, foo.pdf)."""
    out = Path(out)
    stem = out.with_suffix("") if out.suffix.lower() in (".png", ".pdf") else out
    return stem.with_name(stem.name + ".png"), stem.with_name(stem.name + ".pdf")


FIGURE_CREATOR = "disentangle"   # stamped in each figure's metadata (PNG tEXt, PDF /Creator)


def is_our_figure(path: Path) -> bool:
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
                    and not is_our_figure(path):
                if echo is not None:
                    echo(f"left {path} alone: not named by --out and not a figure disentangle wrote")
                continue
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt, **({"dpi": dpi} if fmt == "png" else {}),
                            metadata={"Creator": FIGURE_CREATOR})
            written.append(path)
    return written


def data_caption(df_or_labels) -> str:
    if hasattr(df_or_labels, "columns"):
        from disentangle.report import data_names
        labels = data_names(df_or_labels)
    else:
        labels = sorted(set(df_or_labels))
    return "data: " + ("; ".join(labels) if labels else "unknown")


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
