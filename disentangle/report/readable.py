"""The report a reader takes in: methods, settings and scores named as papers name them,
the headline and information tables (one section per dataset in a study of several),
LaTeX cells and captions, and the report text in each format (:func:`make_report`,
:func:`write_report`).

Aggregation always groups by the dataset as well (the configuration's ``dataset`` where
the table has it, ``data_label`` and ``data_sha256``): scores measured on different
datasets, or on different files of one dataset, are never averaged together. A study of
several datasets reads as one section per dataset (:func:`readable_markdown`); LaTeX and
CSV tables put the dataset first, as row groups.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics import flag_footnote
from disentangle.report.datasets import (DATASET, data_names, dataset_name, one_source_per_dataset, split_by_dataset,
                                         with_datasets)
from disentangle.report.formats import format_setting, to_latex, to_markdown
from disentangle.report.tables import (headline_columns, metric_columns, parse_group_by, run_flags, score_columns,
                                       table_cells, table_sort_key, to_csv)

FORMATS = ("markdown", "csv", "latex")


# --------------------------------------------------------------------------- readable tables
# What a reader sees: methods, strengths and metrics named as papers name them, from the
# registries (these accessors are the only places that read them, so a renamed field is a
# one-line change here).
def method_name(method) -> str:
    """A method as papers write it ("beta-vae" -> "β-VAE"; old objective names too)."""
    from disentangle.config import method_label
    if not isinstance(method, str):
        return format_setting(method)
    return method_label(method)


def setting_symbol(key: str) -> str:
    """A hyper-parameter's symbol in plain text, with its unit ("beta" -> "β",
    "capacity_max" -> "C_max (nats)"), from the configuration's LaTeX names."""
    from disentangle.config import latex_names
    from disentangle.methods import HYPERPARAMETERS
    text = _plain(latex_names().get(key, key))
    unit = HYPERPARAMETERS[key].unit if key in HYPERPARAMETERS else None
    return f"{text} ({unit})" if unit else text


def score_heading(column: str) -> str:
    """A score column's heading: the metric registry's label (with its unit), else the key."""
    from disentangle.evaluation.metrics import METRICS
    metric, _, key = column.partition(".")
    spec = METRICS.get(metric)
    if spec is not None and key in spec.labels:
        return spec.labels[key]
    unit = " (nats)" if key.endswith("_nats") else ""
    if spec is not None and key in spec.latex:   # no label: the table header, as plain text
        return _plain(spec.latex[key]) + unit
    if spec is not None and key:
        return key.replace("_nats", " (nats)").replace("_", " ")
    return column


def _plain(tex: str) -> str:
    # a LaTeX name as plain text: "$\\beta$" -> "β", "$C_{\\max}$" -> "C_max"
    for pattern, plain in ((r"\\beta", "β"), (r"\\gamma", "γ"), (r"\\lambda", "λ"), (r"\\max", "max"),
                           (r"\\mathrm", ""), (r"[${}]", "")):
        tex = re.sub(pattern, plain, tex)
    return tex


def _readable(df, header: list[str], rows: list[list[str]], grouped: bool):
    """Settings as papers write them: the method by its name, its strength as "β = 4" (one
    column; just the value under the symbol when every row has the same hyper-parameter),
    the dataset only when there are several, scores headed by the registry's labels."""
    header, rows = list(header), [list(r) for r in rows]

    def drop(col):
        if col in header:
            k = header.index(col)
            header.pop(k)
            for r in rows:
                r.pop(k)
    if "data_label" in df.columns and df["data_label"].nunique(dropna=False) <= 1:
        drop("data_label")
    if DATASET in df.columns and df[DATASET].nunique(dropna=False) <= 1:
        drop(DATASET)     # one dataset: the section's heading or the data line names it
    if "method" in header and "objective" in header:
        drop("objective")
    if "strength" in header and "strength_name" in header:
        i, j = header.index("strength_name"), header.index("strength")
        names = {r[i] for r in rows}
        single = len(names) == 1 and next(iter(names))
        for r in rows:
            r[j] = r[j] if single or not r[i] else f"{setting_symbol(r[i])} = {r[j]}"
        header[j] = setting_symbol(single) if single else "strength"
        drop("strength_name")
        for name in names:
            if name and name in header:
                drop(name)   # the hyper-parameter's own column repeats the strength
    if not grouped:
        for col in ("path", "status"):
            if col in header and all(r[header.index(col)] in ("", "finished") for r in rows):
                drop(col)
    out = []
    for col in header:
        if col in ("method", "objective"):
            out.append("method")
        elif "." in col:
            out.append(score_heading(col))
        elif col in ("run", "n", "strength", "seed", "data_label", DATASET):
            out.append({"data_label": "data"}.get(col, col))
        else:
            out.append(setting_symbol(col))
    for r in rows:
        for k, col in enumerate(header):
            if col in ("method", "objective"):
                r[k] = method_name(r[k])
            elif col == DATASET:
                r[k] = dataset_name(r[k])
    return out, rows


def readable_tables(df, group_by: Sequence[str] | None = None, detail: bool = False) -> list[tuple[str, list, list]]:
    """[(title, header, rows)]: the headline table (one column per metric: its registry
    headline, headed by its label; mean ± std over seeds, n), the information table
    (info's headline keys, nats) and, with ``detail``, one table per metric with all its
    scalar keys. The full wide table is :func:`to_csv`'s."""
    scores, information = headline_columns(df)
    what = "mean ± std over seeds (n runs)" if group_by else "one row per run"
    tables = []
    if scores:
        tables.append((f"Headline scores, {what}", *_readable(df, *table_cells(df, group_by, scores), bool(group_by))))
    if information:
        tables.append((f"Information (nats), {what}",
                       *_readable(df, *table_cells(df, group_by, information), bool(group_by))))
    if detail:
        from disentangle.evaluation.metrics import METRICS, display_order
        for metric in display_order({c.split(".", 1)[0] for c in score_columns(df)}):
            cols = metric_columns(df, [metric])
            header, rows = _readable(df, *table_cells(df, group_by, cols), bool(group_by))
            prefix = METRICS[metric].name if metric in METRICS else metric
            tables.append((f"{prefix}: every score", header, rows))
    return tables


def _scored_here(df):
    # a dataset's section shows the metrics scored on it (CelebA has no factor metrics)
    empty = [c for c in score_columns(df) if not df[c].notna().any()]
    return df.drop(columns=empty)


def readable_markdown(df, group_by: Sequence[str] | None = None, detail: bool = False) -> str:
    """The Markdown report a reader takes in: :func:`readable_tables` with their titles,
    the data named once, the warning footnotes, and where the rest is.

    Several datasets: one section per dataset ("### Shapes3D", registry order), each with
    its own tables and only the metrics scored on it. Rows are methods and strengths as
    in a single-dataset report; datasets as column groups would multiply a headline
    table's ~7 columns by the number of datasets, which no page or terminal holds, and
    the scores of two datasets are never compared cell by cell anyway."""
    import pandas as pd
    sections = split_by_dataset(with_datasets(df))
    parts = []
    for dataset, sub in sections:
        if len(sections) > 1:
            parts += ([""] if parts else []) + [f"### {dataset_name(dataset)}", ""]
            sub = _scored_here(sub)
        for title, header, rows in readable_tables(sub, group_by, detail):
            parts += [f"**{title}**", "", to_markdown(header, rows)]
        names = data_names(sub, with_dataset=len(sections) == 1)
        if len(sections) > 1:
            parts.append(f"Data: {'; '.join(names)}.")
        elif len(names) == 1:
            parts.append(f"Data: {names[0]}.")
    # the footnotes in the sections' order
    notes = flag_footnote(run_flags(pd.concat([sub for _, sub in sections])))
    if notes:
        parts += ["", *notes]
    if not detail:
        parts += ["", "Every score of every metric: `disentangle report --detail` (one table per metric) "
                      "or `--format csv` (the full table)."]
    return "\n".join(parts).rstrip() + "\n"


# --------------------------------------------------------------------------- the report in each format
def make_report(df, fmt: str = "markdown", group_by: Sequence[str] | str | None = None,
                metrics: Sequence[str] | None = None, detail: bool = False) -> str:
    """The report text in ``fmt`` ('markdown', 'csv' or 'latex'). Markdown without
    ``metrics``: :func:`readable_markdown` (headline and information tables; ``detail``:
    one table per metric); with ``metrics``: one table of exactly those columns."""
    if fmt not in FORMATS:
        raise ParameterError("format", f"choose one of {', '.join(FORMATS)}", value=fmt)
    group_by = parse_group_by(group_by)
    if df.empty:
        raise UserError(f"no runs found in {df.attrs.get('results_dir', 'the results directory')} "
                        f"(a run directory holds {'config.json'})")
    if fmt == "csv":
        return to_csv(df, group_by, metrics)
    if fmt == "markdown" and not metrics:
        return readable_markdown(df, group_by, detail)
    df = with_datasets(df)
    if DATASET in df.columns:
        # several datasets: row groups, in the registry's order
        df = df.sort_values(DATASET, kind="stable", key=table_sort_key)
    header, rows = table_cells(df, group_by, metrics)
    shown = {h.split(".", 1)[0] for h in header if "." in h}
    notes = flag_footnote({k: v for k, v in run_flags(df).items() if k[1] in shown})
    # one dataset: no dataset column (LaTeX: no data column either, the caption names it)
    constant = [c for c in ((DATASET,) if fmt == "markdown" else (DATASET, "data_label"))
                if c in header and df[c].nunique(dropna=False) == 1]
    if (fmt == "latex" and DATASET in header and "data_label" in header and "data_label" not in constant
            and one_source_per_dataset(df)):
        constant.append("data_label")   # the caption names each dataset's file
    for col in constant:
        # one dataset: the caption names it; a column repeating it would only widen the table
        k = header.index(col)
        header = header[:k] + header[k + 1:]
        rows = [r[:k] + r[k + 1:] for r in rows]
    if DATASET in header:
        k = header.index(DATASET)
        rows = [r[:k] + [dataset_name(r[k])] + r[k + 1:] for r in rows]
    if fmt == "markdown":
        return to_markdown(header, rows) + ("\n" + "\n".join(notes) + "\n" if notes else "")
    partial = any(re.search(r"\(\d+ of \d+\)", c) for r in rows for c in r)
    rows = [[latex_setting(h, c) for h, c in zip(header, r)] for r in rows]
    return to_latex(header, rows, caption_for(df, group_by, header, partial), notes=notes)


def latex_setting(column: str, text: str) -> str:
    """A setting cell as a paper prints it: a method by its name ("$\\beta$-VAE",
    "FactorVAE"), a strength by its symbol ("$C_{\\max}$"); other cells unchanged."""
    from disentangle.config import latex_names, method_label
    if column == "method":
        return method_label(text).replace("β", r"$\beta$")
    if column == "strength_name":
        return latex_names().get(text, text)
    return text


def caption_for(df, group_by: Sequence[str] | None, header: Sequence[str] = (), partial: bool = False) -> str:
    """A LaTeX table's caption: per run or mean ± std over which groups, the data, the
    units, and what a superscript k/n means when some cell has one."""
    labels = data_names(df)
    what = (f"Mean ± standard deviation over seeds, grouped by {', '.join(group_by)}"
            if group_by else "One row per run")
    text = f"{what}; data: {'; '.join(labels) or 'unknown'}."
    if any(str(h).endswith("_nats") for h in header):
        text += " Information quantities in nats."
    if partial:
        text += " A superscript k/n: mean over the k of n runs that have the score."
    return text


def write_report(results_dir: str | os.PathLike, fmt: str = "markdown", out: str | os.PathLike | None = None,
                 group_by: Sequence[str] | str | None = None, metrics: Sequence[str] | None = None,
                 detail: bool = False) -> str:
    """collect() the results, format them, write ``out`` atomically if given; return the text."""
    from disentangle.io import write_text_atomic
    from disentangle.results import collect
    text = make_report(collect(results_dir), fmt, group_by, metrics, detail)
    if out is not None:
        write_text_atomic(Path(out), text)
    return text
