"""Result tables: pick score columns, aggregate runs over seeds, write Markdown, CSV or
LaTeX.

The input is the DataFrame of :func:`disentangle.results.collect` (one row per run).
Aggregation always groups by the dataset as well (the configuration's ``dataset`` where
the table has it, ``data_label`` and ``data_sha256``): scores measured on different
datasets, or on different files of one dataset, are never averaged together. A study of
several datasets reads as one section per dataset (:func:`readable_markdown`); LaTeX and
CSV tables put the dataset first, as row groups.
"""
from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Sequence

from disentangle.errors import ParameterError, UserError
from disentangle.evaluation.metrics import FLAG_MARK, flag_footnote
from disentangle.report.datasets import (DATASET, data_names, dataset_name, datasets_of, one_source_per_dataset,
                                         split_by_dataset, with_datasets)
from disentangle.report.formats import (decimals_for, format_number, format_setting, latex_escape, latex_name,
                                        to_latex, to_markdown)

FORMATS = ("markdown", "csv", "latex")

# Which score columns a table shows by default, in which order, and their LaTeX headers
# come from the metric registry (disentangle.evaluation.metrics); the configuration
# columns' names and LaTeX headers from the configuration's fields (disentangle.config).

_DATA_KEYS = ("data_label", "data_sha256")


def _dataset_lead(df) -> list[str]:
    # the dataset column leads every grouping when the table has one
    return [DATASET] if DATASET in df.columns else []


def _shown_dataset(df) -> list[str]:
    # the dataset column a table shows: only when its runs span several datasets (one
    # dataset is named once, under the table)
    return [DATASET] if DATASET in df.columns and df[DATASET].nunique(dropna=False) > 1 else []


def _report_keys(df, group_by: Sequence[str]) -> list[str]:
    """The keys a table groups by: the dataset, ``group_by``, the data file."""
    return list(dict.fromkeys([*_dataset_lead(df), *group_by, *_DATA_KEYS]))


def _sort_key(column):
    # datasets in the registry's order, the rest as the configuration sorts them
    from disentangle.config import sort_key
    if column.name == DATASET:
        from disentangle.data.datasets import REGISTRY
        rank = {d: i for i, d in enumerate(REGISTRY)}
        return column.map(lambda v: (rank.get(v, len(rank)), str(v)))
    return sort_key(column)


class ReportWarning(UserWarning):
    """A table that may mislead: e.g. a group averaging runs of different settings."""


# --------------------------------------------------------------------------- warning flags
# The mark on a score its metric's registry entry warns about (FLAG_MARK) and the footnote
# saying why (flag_footnote) belong to the metric registry: evaluate's table uses them too.


def score_flags(df) -> dict[int, dict[str, list[str]]]:
    """{row position: {metric: warnings}} of a collect() table, from each registered
    metric's ``warnings`` applied to that run's values (its "<metric>.<key>" columns)."""
    from disentangle.evaluation.metrics import METRICS
    by_metric: dict[str, list[str]] = {}
    for col in df.columns:
        if "." in col and col.split(".", 1)[0] in METRICS:
            by_metric.setdefault(col.split(".", 1)[0], []).append(col)
    flags: dict[int, dict[str, list[str]]] = {}
    for pos, (_, row) in enumerate(df.iterrows()):
        for metric, cols in by_metric.items():
            values = {c.split(".", 1)[1]: row[c] for c in cols if not _is_missing(row[c])}
            found = METRICS[metric].warnings(values) if values else []
            if found:
                flags.setdefault(pos, {})[metric] = list(found)
    return flags


def run_flags(df) -> dict[tuple[str, str], list[str]]:
    """{(run, metric): warnings} of a collect() table (what :func:`flag_footnote` takes)."""
    runs = list(df["run"]) if "run" in df.columns else [str(i) for i in range(len(df))]
    return {(str(runs[pos]), metric): found for pos, metrics in score_flags(df).items()
            for metric, found in metrics.items()}


def _is_missing(value) -> bool:
    try:
        return value is None or (isinstance(value, float) and math.isnan(value))
    except TypeError:
        return False


# --------------------------------------------------------------------------- columns
def _per_dim_or_duplicate(column: str, columns: Sequence[str]) -> bool:
    # per-dimension KLs and the *_bits copies of *_nats values would swamp a table
    key = column.split(".", 1)[1] if "." in column else column
    if re.fullmatch(r"kl_dim_\d+|kl_\d+|seconds(_\w+)?", key):
        return True
    if key.endswith("_bits") and column[: -len("_bits")] + "_nats" in columns:
        return True
    return False


def score_columns(df) -> list[str]:
    """The numeric "<metric>.<key>" columns of a collect() table."""
    import pandas as pd
    return [c for c in df.columns if "." in c and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c])]


def _headline_keys(metric: str) -> tuple[str, ...]:
    # the registry's headline keys; a metric it does not know shows all its scalar keys
    from disentangle.evaluation.metrics import METRICS
    spec = METRICS.get(metric)
    return spec.headline_keys if spec is not None else ()


def metric_columns(df, metrics: Sequence[str] | None = None, headline_only: bool = True) -> list[str]:
    """Resolve metric selections to columns.

    ``metrics`` items are a metric name ("mig": all its scalar keys except per-dimension
    and duplicate-unit ones) or a full column ("info.rate_nats"). With no selection,
    every metric's headline keys (``headline_only``) or every score column."""
    available = score_columns(df)
    if not metrics:
        if not headline_only:
            return available
        chosen = []
        from disentangle.evaluation.metrics import display_order
        # disentanglement scores in the registry's order, then the rest, information last
        for metric in display_order(c.split(".", 1)[0] for c in available):
            keys = _headline_keys(metric)
            own = [c for c in available if c.startswith(metric + ".")]
            picked = [f"{metric}.{k}" for k in keys if f"{metric}.{k}" in own] if keys else []
            chosen += picked or [c for c in own if not _per_dim_or_duplicate(c, available)]
        return chosen
    chosen = []
    for item in metrics:
        if item in available:
            chosen.append(item)
            continue
        own = [c for c in available if c.startswith(item + ".")]
        if not own:
            names = sorted({c.split(".", 1)[0] for c in available})
            raise ParameterError("metric", f"no such score in the results "
                                 f"(available metrics: {', '.join(names) or 'none'})", value=item)
        keys = _headline_keys(item)
        # headline keys first, then the rest in file order
        ordered = [f"{item}.{k}" for k in keys if f"{item}.{k}" in own]
        ordered += [c for c in own if c not in ordered and not _per_dim_or_duplicate(c, available)]
        chosen += ordered
    return list(dict.fromkeys(chosen))


def headline_column(df, metric: str) -> str:
    """The one column that stands for ``metric`` in a figure ("mig" -> "mig.discrete_mig")."""
    cols = metric_columns(df, [metric])
    return cols[0]


# --------------------------------------------------------------------------- aggregation
def parse_group_by(text: str | Sequence[str] | None) -> list[str]:
    """Group columns from "a,b" or a list. A regularisation ``strength`` is grouped with
    its ``strength_name`` (β = 4 and λ_od = 4 are different settings, and a table must
    say which hyper-parameter a value is)."""
    if not text:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    keys = [i.strip() for i in items if i.strip()]
    if "strength" in keys and "strength_name" not in keys:
        keys.insert(keys.index("strength"), "strength_name")
    return keys


def study_group_by(df, swept: Sequence[str] = ()) -> list[str]:
    """The default grouping of a study's score table (one row per experiment, averaged
    over seeds). A single-method study: its method and the swept settings
    (``swept``). A multi-method study: method, strength_name, strength (one row per
    method and strength), plus every other setting that still varies inside those groups
    (e.g. the architecture, or annealed-vae's γ when it is swept too), so no group mixes
    experiments."""
    from disentangle.config import replicate_keys
    methods = df["method"].dropna().unique() if "method" in df.columns else []
    if len(methods) <= 1:
        return list(dict.fromkeys(["method", *(k for k in swept if k not in replicate_keys())]))
    keys = ["method", "strength_name", "strength"]
    return keys + _varying_settings(df, [*keys, *_DATA_KEYS, *_dataset_lead(df)])


def _groups(df, keys: Sequence[str]):
    """``df`` grouped by ``keys`` in the report's row order: sorted by the keys, methods
    in the toolkit's method order (:func:`disentangle.config.sort_key`). Every grouping of
    a report goes through here, so the flags of a group and its numbers stay aligned."""
    ordered = df.sort_values(list(keys), na_position="last", kind="stable", key=_sort_key)
    # NaN keys (e.g. gamma of a beta-h run) would silently drop rows in groupby
    return ordered.groupby(list(keys), dropna=False, sort=False)


def aggregate(df, group_by: Sequence[str], columns: Sequence[str]):
    """Mean, sample standard deviation (ddof=1) and count of each column over the runs
    of each group; one row per (group, dataset). Groups are always split by dataset.

    Returns a DataFrame with the dataset (where the table has that column: first), the
    group columns, data_label, data_sha256, ``n`` (runs in the group) and, per score
    column C, "C.mean", "C.std", "C.count" (runs with a value)."""
    import pandas as pd

    unknown = [g for g in group_by if g not in df.columns]
    if unknown:
        raise ParameterError("group_by", f"unknown column(s) {', '.join(unknown)} "
                             f"(columns: {', '.join(c for c in df.columns if '.' not in c)})")
    scores = [g for g in group_by if g in columns]
    if scores:   # a score is what is averaged, not what groups the runs
        raise ParameterError("group_by", f"{', '.join(scores)} is a score column; group by settings "
                             f"(e.g. method,beta)")
    df = with_datasets(df)
    keys = _report_keys(df, group_by)
    varying = _varying_settings(df, keys)
    if varying:
        warnings.warn(f"groups mix runs with different {', '.join(varying)}; "
                      f"add them to --group-by to keep them apart", ReportWarning, stacklevel=2)
    grouped = _groups(df[keys + list(columns)], keys)
    out = grouped.size().rename("n").reset_index()
    stats = {}
    for col in columns:
        agg = grouped[col].agg(["mean", "std", "count"]).reset_index(drop=True)
        for stat in ("mean", "std", "count"):
            stats[f"{col}.{stat}"] = agg[stat].to_numpy()
    return pd.concat([out, pd.DataFrame(stats, index=out.index)], axis=1)


def settings_varying_within(df, keys: Sequence[str]) -> list[str]:
    """The settings (identity fields but the replicates) not in ``keys`` that take more
    than one value inside some group of ``keys``: what a table or figure grouped by
    ``keys`` would otherwise average together. Grouped by ``method``, the old method
    names count as their method's."""
    return _varying_settings(df, keys)


def _varying_settings(df, keys: Sequence[str]) -> list[str]:
    # the configuration's settings (identity fields but the seed) not grouped by must not
    # vary inside a group, or the mean mixes different experiments
    from disentangle.config import setting_keys
    rest = [c for c in setting_keys() if c in df.columns and c not in keys]
    if not rest or df.empty:
        return []
    nunique = df.groupby(list(keys), dropna=False)[rest].nunique(dropna=False)
    return [c for c in rest if (nunique[c] > 1).any()]


# --------------------------------------------------------------------------- formatting


def _display_setting_columns(df, extra: Sequence[str] = ()) -> list[str]:
    """Per-run table: always run, data, (with several methods) method, strength_name and
    strength, the always-shown settings (method, beta) and the seed; other settings only where they vary (a constant column is noise), plus
    status where some run is unfinished."""
    from disentangle.config import METHOD_COLUMNS, always_shown_keys, replicate_keys, setting_keys
    cols = ["run", "data_label"]
    if DATASET in df.columns and df[DATASET].nunique(dropna=False) > 1:
        cols.insert(0, DATASET)        # several datasets: each run's first, as row groups
    if "method" in df.columns and df["method"].nunique() > 1:
        cols += list(METHOD_COLUMNS)   # several methods: each run's strength, named
    cols += list(always_shown_keys())
    for c in setting_keys():
        if c not in cols and c in df.columns and df[c].nunique(dropna=False) > 1:
            cols.append(c)
    cols += list(replicate_keys())
    if "status" in df.columns and (df["status"] != "finished").any():
        cols.append("status")
    return [c for c in dict.fromkeys(cols) if c in df.columns] + [c for c in extra if c not in cols]


def table_cells(df, group_by: Sequence[str] | None = None, metrics: Sequence[str] | None = None,
                pm: str = " ± "):
    """Header and rows of strings for a report, per run or aggregated over seeds.

    Aggregated cells read "mean ± std"; a group with fewer values than runs gets
    "(k of n)" so a reader sees when a mean rests on fewer seeds. A score its metric
    warns about (:func:`score_flags`; in a group: of any of its runs) ends in
    :data:`FLAG_MARK`; :func:`flag_footnote` of :func:`run_flags` says why."""
    df = with_datasets(df)
    columns = metric_columns(df, metrics)
    flags = score_flags(df)

    def mark(text: str, column: str, flagged: set) -> str:
        return text + FLAG_MARK if text and column.split(".", 1)[0] in flagged else text
    if group_by:
        agg = aggregate(df, group_by, columns)
        # a group's score is flagged when any of its runs' is (same grouping as aggregate)
        keys = _report_keys(df, group_by)
        positions = {idx: pos for pos, idx in enumerate(df.index)}
        group_flags = [set().union(*(flags.get(positions[i], {}).keys() for i in sub.index))
                       for _, sub in _groups(df, keys)]
        settings = list(dict.fromkeys([*_shown_dataset(df), *(g for g in group_by if g != DATASET or _shown_dataset(df)),
                                       "data_label"])) + ["n"]
        header = settings + columns
        rows = []
        decimals = {c: decimals_for(agg[f"{c}.mean"]) for c in columns}
        for _, r in agg.iterrows():
            cells = [format_setting(r[c]) if c != "n" else str(int(r["n"])) for c in settings]
            for c in columns:
                mean, std, count = r[f"{c}.mean"], r[f"{c}.std"], int(r[f"{c}.count"])
                if count == 0:
                    cells.append("")
                    continue
                text = format_number(mean, decimals[c])
                if count > 1:
                    text += pm + format_number(std, decimals[c])
                if count < r["n"]:
                    text += f" ({count} of {int(r['n'])})"
                cells.append(mark(text, c, group_flags[len(rows)]))
            rows.append(cells)
        return header, rows
    from disentangle.config import method_reads
    settings = _display_setting_columns(df)
    header = settings + columns
    decimals = {c: decimals_for(df[c]) for c in columns}
    # a hyper-parameter the run's method ignores is left blank (its stored default means nothing)
    rows = [[format_setting(r[c]) if method_reads(r.get("method"), c) else "" for c in settings]
            + [mark(format_number(r[c], decimals[c]), c, set(flags.get(pos, {}))) for c in columns]
            for pos, (_, r) in enumerate(df.iterrows())]
    return header, rows


def to_csv(df, group_by: Sequence[str] | None = None, metrics: Sequence[str] | None = None) -> str:
    """Machine-readable: full precision; all score columns unless ``metrics`` narrows them;
    aggregated tables have C.mean, C.std, C.count per score column."""
    df = with_datasets(df)
    columns = metric_columns(df, metrics, headline_only=False)
    shown = {c.split(".", 1)[0] for c in columns}
    flags = score_flags(df)
    # one "warnings" column: "metric: warning" of every flagged score shown, "; "-joined
    per_run = ["; ".join(f"{m}: {w}" for m, found in flags.get(pos, {}).items() if m in shown for w in found)
               for pos in range(len(df))]
    if group_by:
        out = aggregate(df, group_by, columns)
        keys = _report_keys(df, group_by)
        positions = {idx: pos for pos, idx in enumerate(df.index)}
        flagged = ["; ".join(dict.fromkeys(w for i in sub.index for w in per_run[positions[i]].split("; ") if w))
                   for _, sub in _groups(df, keys)]
        # before the score columns: what describes the row, then its numbers
        out.insert(out.columns.get_loc("n"), "warnings", flagged)
    else:
        from disentangle.results import run_columns
        described = list(dict.fromkeys([*_dataset_lead(df), *(c for c in run_columns() if c in df.columns)]))
        out = df[described + columns].copy()
        out.insert(len(described), "warnings", per_run)
    return out.to_csv(index=False)


def caption_for(df, group_by: Sequence[str] | None, header: Sequence[str] = (), partial: bool = False) -> str:
    labels = data_names(df)
    what = (f"Mean ± standard deviation over seeds, grouped by {', '.join(group_by)}"
            if group_by else "One row per run")
    text = f"{what}; data: {'; '.join(labels) or 'unknown'}."
    if any(str(h).endswith("_nats") for h in header):
        text += " Information quantities in nats."
    if partial:
        text += " A superscript k/n: mean over the k of n runs that have the score."
    return text


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


def headline_columns(df) -> tuple[list[str], list[str]]:
    """(one column per disentanglement metric: its registry headline key; the information
    metrics' headline keys) present in ``df``, in the registry's display order."""
    from disentangle.evaluation.metrics import METRICS, display_order
    available = score_columns(df)
    present = display_order({c.split(".", 1)[0] for c in available if c.split(".", 1)[0] in METRICS})
    scores, information = [], []
    for metric in present:
        spec = METRICS[metric]
        keys = [f"{metric}.{k}" for k in spec.headline_keys if f"{metric}.{k}" in available]
        if spec.kind == "information":
            information += [c for c in keys if c not in information and
                            c.split(".", 1)[1] not in {x.split(".", 1)[1] for x in information}]
        elif keys:
            scores.append(keys[0])
    return scores, information


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
        df = df.sort_values(DATASET, kind="stable", key=_sort_key)
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


# --------------------------------------------------------------------------- the study's classic figures' numbers
# Locatello et al. 2019 (Fig. 3: rank correlation between the metrics over all models of a
# study, one matrix per dataset): with fewer models a rank correlation is noise.
MIN_RUNS_CORRELATION = 5      # runs with every score of the matrix, per dataset
MIN_RUNS_DISTRIBUTION = 2     # runs per method for a violin to show a spread


def study_metric_columns(df) -> list[str]:
    """The columns the study figures compare: each disentanglement metric's headline (one
    per metric, :func:`headline_columns`) that some run has."""
    scores, _ = headline_columns(df)
    return [c for c in scores if df[c].notna().any()]


def metric_rank_correlation(df, columns: Sequence[str] | None = None) -> dict[str, "object"]:
    """{dataset label: Spearman rank correlation matrix (DataFrame, columns × columns)}
    between the metrics over every run of that dataset with all of ``columns`` (default
    :func:`study_metric_columns`); a dataset with fewer than :data:`MIN_RUNS_CORRELATION`
    such runs is left out. A metric constant over a dataset's runs has no rank
    correlation: it is left out of that matrix and listed in ``attrs["constant"]``. The
    matrix's ``attrs["n"]`` is its number of runs. Faceted on a ``dataset`` column when
    the table has one, else on ``data_label``."""
    columns = list(columns or study_metric_columns(df))
    if len(columns) < 2:
        raise UserError("metric correlation: fewer than two metrics with scores in these runs")
    if DATASET in df.columns:
        groups = split_by_dataset(df)      # the registry's order
    else:
        labels = df["data_label"].fillna("unknown") if "data_label" in df.columns else None
        groups = [("all", df)] if labels is None else [(str(k), g) for k, g in df.groupby(labels, sort=True)]
    out = {}
    for label, group in groups:
        complete = group[columns].dropna()
        if len(complete) < MIN_RUNS_CORRELATION:
            continue
        constant = [c for c in columns if complete[c].nunique() < 2]
        varying = [c for c in columns if c not in constant]
        if len(varying) < 2:
            continue
        matrix = complete[varying].rank().corr(method="pearson")   # Spearman: Pearson of the ranks
        matrix.attrs["n"] = len(complete)
        matrix.attrs["constant"] = constant
        out[label] = matrix
    if not out:
        raise UserError(f"metric correlation: needs at least {MIN_RUNS_CORRELATION} runs with every metric "
                        f"({', '.join(c.split('.', 1)[0] for c in columns)}) on one dataset, and two "
                        f"metrics that vary over them")
    return out
