"""A study's report (report.md: the runs' states, score tables over seeds and per run,
every failed run with its reason) and its figures (figures/: rate–distortion, metrics
against β, a traversal per β), written by the report layer for ``disentangle sweep``.
A study of several datasets: the score tables in one section per dataset, the
rate–distortion plane and the metric correlation a panel per dataset, metrics against
strength and their distribution coloured by dataset.
The sweep calls :func:`write_study_report` with the study's state (its study.json record
and every run's status row); this module imports nothing of the sweep, which sits above
it. Plots and tables come from :mod:`disentangle.plots` and :mod:`disentangle.report`."""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Callable

from disentangle.config import format_value
from disentangle.errors import UserError, exception_reason
from disentangle.io import write_text_atomic
from disentangle.rundir import RUN_STATES

REPORT_FILE = "report.md"
FIGURES_DIR = "figures"


def write_study_report(results_dir: str | os.PathLike, record: dict, status_rows: list[dict],
                       echo: Callable[[str], None] = print) -> tuple[Path, list[Path]]:
    """report.md (tables over seeds and per run, every failed run with its reason) and
    figures/ (rate–distortion, metrics against β, a traversal per β) for the study.

    ``record``: the study's study.json (name, grid, fixed, blocks, metrics, eval_seed,
    swept); ``status_rows``: one row per run as `sweep status` shows it (name, state,
    step, steps, detail). The caller holds the study lock."""
    import warnings

    from disentangle.results import collect
    results_dir = Path(results_dir)
    with warnings.catch_warnings():
        # unfinished runs have no scores yet: the status table says so once
        warnings.simplefilter("ignore")
        df = collect(results_dir)
    figures, figure_notes = _study_figures(results_dir, df, record)
    text = _report_markdown(results_dir, df, record, status_rows, figures, figure_notes)
    out = results_dir / REPORT_FILE
    write_text_atomic(out, text)
    for note in figure_notes:
        echo(f"  note: {note}")
    return out, figures


def _scored(df):
    cols = [c for c in df.columns if c.startswith("info.") or "." in c]
    return df[df[cols].notna().any(axis=1)] if cols else df.iloc[0:0]


def _study_figures(results_dir: Path, df, record: dict) -> tuple[list[Path], list[str]]:
    """Each figure on its own: one that cannot be drawn (e.g. no run has info scores yet)
    is noted in the report, the others are still written."""
    import matplotlib
    matplotlib.use("Agg")
    from disentangle import plots
    from disentangle.evaluation import figure_data
    from disentangle.report import headline_column

    fig_dir = results_dir / FIGURES_DIR
    written: list[Path] = []
    notes: list[str] = []

    def attempt(label: str, make: Callable[[], Any], out: Path) -> None:
        import matplotlib.pyplot as plt
        try:
            fig = make()
            paths = plots.save_figure(fig, out)
            plt.close(fig)
            written.append(Path(paths[0]))
        except Exception as exc:  # one figure's problem must not lose the report
            notes.append(f"{label}: not drawn ({exception_reason(exc)})")

    scored = _scored(df)
    if scored.empty:
        return written, ["no run has scores yet: no figures"]
    if "info.rate_nats" in scored.columns:
        attempt("rate–distortion", lambda: plots.rate_distortion(scored), fig_dir / "rate_distortion.png")
    from disentangle.evaluation.metrics import score_metrics
    metrics = []
    for metric in score_metrics():
        try:
            if scored[headline_column(scored, metric)].notna().any():
                metrics.append(metric)
        except Exception:
            continue
    if metrics and "strength" in scored.columns and scored["strength"].notna().any():
        # one row per method, each on its own hyper-parameter's axis
        attempt("metric vs strength", lambda: plots.metric_vs_strength(scored, metrics),
                fig_dir / "metric_vs_strength.png")
    # the study's classic figures (Locatello et al. 2019), drawn when they mean something:
    # a rank correlation over >= MIN_RUNS_CORRELATION runs with every metric, a violin per
    # method over >= MIN_RUNS_DISTRIBUTION runs of some method
    from disentangle.report import MIN_RUNS_CORRELATION, MIN_RUNS_DISTRIBUTION, split_by_dataset, study_metric_columns
    columns = study_metric_columns(scored)
    # a matrix per dataset: the dataset with the most complete runs decides whether any is drawn
    complete = max((len(sub[columns].dropna()) for _, sub in split_by_dataset(scored)), default=0) if columns else 0
    if len(columns) >= 2 and complete >= MIN_RUNS_CORRELATION:
        attempt("metric correlation", lambda: plots.metric_correlation(scored, columns),
                fig_dir / "metric_correlation.png")
    elif columns:
        notes.append(f"metric correlation: not drawn ({complete} run(s) with every metric on any one dataset; "
                     f"a rank correlation needs at least {MIN_RUNS_CORRELATION})")
    per_method = scored.groupby("method").size() if "method" in scored.columns else []
    if columns and len(per_method) and per_method.max() >= MIN_RUNS_DISTRIBUTION:
        attempt("metric distribution", lambda: plots.metric_distribution(scored, columns),
                fig_dir / "metric_distribution.png")
    # a traversal per method and strength (first seed): what each setting's latents came to encode
    for run_dir in _traversal_runs(df[df["status"] == "finished"]):
        attempt(f"traversal {run_dir.name}", lambda rd=run_dir: plots.traversal(figure_data.traversals(rd)),
                fig_dir / f"traversal_{run_dir.name}.png")
    return written, notes


def _traversal_runs(finished, most: int = 8) -> list[Path]:
    """The runs whose traversals the study report draws: the first seed of each setting;
    with several methods, every method at evenly spaced strengths, its weakest and strongest
    included (at least two each, about ``most`` in all), in the methods' order. Several
    datasets: every method on every dataset, at its middle strength when two each would
    exceed ``most``."""
    import numpy as np

    from disentangle.config import sort_key
    from disentangle.config import METHOD_COLUMNS   # collect's columns: method, strength_name, strength
    from disentangle.report import split_by_dataset
    keys = list(METHOD_COLUMNS)
    groups = []
    for _, runs in split_by_dataset(finished):
        firsts = runs.sort_values(keys + ["seed"], na_position="last", kind="stable",
                                  key=sort_key).drop_duplicates(subset=keys)
        groups += [g for _, g in firsts.groupby("method", sort=False)]
    several = len(split_by_dataset(finished)) > 1
    each = max(1 if several else 2, most // max(1, len(groups)))
    chosen = []
    for group in groups:
        if each == 1:
            picks = np.array([(len(group) - 1) // 2])
        else:
            picks = np.unique(np.linspace(0, len(group) - 1, min(each, len(group))).round().astype(int))
        chosen += [Path(p) for p in group["path"].iloc[picks]]
    return chosen


def _report_markdown(results_dir: Path, df, record: dict, status_rows: list[dict], figures: list[Path],
                     notes: list[str]) -> str:
    from disentangle.report import make_report
    lines = [f"# Study {record.get('name') or results_dir.name}", ""]
    grid = record.get("grid") or {}
    fixed = record.get("fixed") or {}
    if grid:
        lines.append("Grid: " + "; ".join(f"{k} ∈ {{{', '.join(format_value(v) for v in vals)}}}"
                                           for k, vals in grid.items()) + ".  ")
    if fixed:
        lines.append("Fixed: " + ", ".join(f"{k} = {format_value(v)}" for k, v in fixed.items()) + ".  ")
    for number, block in enumerate(record.get("blocks") or [], 1):
        lines.append(f"Block {number}: " + "; ".join(
            f"{k} ∈ {{{', '.join(format_value(v) for v in value)}}}" if isinstance(value, list)
            else f"{k} = {format_value(value)}" for k, value in block.items()) + ".  ")
    if "data_label" in df.columns and df["data_label"].notna().any():
        from disentangle.report import data_names
        lines.append(f"Data: {'; '.join(data_names(df))}.  ")
    lines.append(f"Metrics: {', '.join(record.get('metrics') or ['all'])} (evaluation seed "
                 f"{record.get('eval_seed', 0)}). Written {_utc_now()} by `disentangle sweep`.")
    lines.append("")
    counts = {s: sum(r["state"] == s for r in status_rows) for s in RUN_STATES}
    lines += ["## Runs", "", ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f" of {len(status_rows)}.", ""]
    lines += ["| run | state | step | detail |", "|---|---|---:|---|"]
    for r in status_rows:
        steps = f"{r['step']}/{r['steps']}" if r["steps"] is not None else str(r["step"])
        detail = str(r["detail"]).replace("|", "\\|")
        lines.append(f"| {r['name']} | {r['state']} | {steps} | {detail} |")
    lines.append("")
    scored = _scored(df)
    if not scored.empty:
        swept = [k for k in (record.get("swept") or []) if k in df.columns]
        from disentangle.report import study_group_by
        group_by = study_group_by(scored, swept)
        lines += ["## Scores, mean ± std over seeds", ""]
        lines.append(_safe(lambda: make_report(scored, "markdown", group_by=group_by)))
        lines += ["", "## Scores per run", ""]
        lines.append(_safe(lambda: make_report(scored, "markdown")))
        lines.append("")
    if figures or notes:
        from disentangle.report import datasets_of
        several = len(datasets_of(df)) > 1
        lines += ["## Figures", ""]
        for path in figures:
            rel = path.relative_to(results_dir).as_posix()
            pdf = Path(rel).with_suffix(".pdf").as_posix()
            lines += [f"![{path.stem}]({rel})", f"*{_caption(path.stem, several)}* ([PDF]({pdf}))", ""]
        for note in notes:
            lines.append(f"- {note}")
        lines.append("")
    return "\n".join(lines)


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _caption(stem: str, several_datasets: bool = False) -> str:
    if stem == "rate_distortion":
        return ("Rate–distortion plane: each run's rate R and distortion D (nats), coloured by its "
                "regularisation strength (several methods: colour and marker by method, size by strength)"
                + ("; one panel per dataset." if several_datasets else "."))
    if stem in ("metric_vs_strength", "metric_vs_beta"):
        return ("Disentanglement scores against each method's regularisation strength (each method's "
                "panels on rows of three, one per metric): mean ± std over seeds, each seed a dot"
                + ("; a line per dataset, coloured by dataset" if several_datasets else "")
                + "; registered metrics without scores are named under the figure.")
    if stem == "metric_correlation":
        return ("Spearman rank correlation between the metrics (each metric's headline score) over all "
                "runs of the study, one matrix per dataset (Locatello et al. 2019, Fig. 3).")
    if stem == "metric_distribution":
        return ("Distribution of each metric per method over all runs (every strength and seed): a violin per "
                "method" + (" and dataset, coloured by dataset" if several_datasets else "") + ", each run a dot.")
    if stem.startswith("traversal_"):
        return (f"Latent traversals of {stem[len('traversal_'):]}: each row one latent dimension "
                f"swept over ±3 prior standard deviations, sorted by KL.")
    return stem.replace("_", " ")


def _safe(make: Callable[[], str]) -> str:
    try:
        return make().rstrip()
    except UserError as exc:
        return f"(no table: {exc})"
