"""What a report's tables hold: the score columns chosen (a metric's headline keys, or
every key), the runs grouped (always by dataset and data file) and averaged over seeds,
the warning flags of scores, and the result as cells of text (per run, or mean ± std) or
as the full machine-readable table (CSV).

The input is the DataFrame of :func:`disentangle.results.collect` (one row per run).
Scores measured on different datasets, or on different files of one dataset, are never
averaged together."""
from __future__ import annotations

import math
import re
import warnings
from typing import Sequence

from disentangle.errors import ParameterError
from disentangle.evaluation.metrics import FLAG_MARK
from disentangle.report.datasets import DATASET, with_datasets
from disentangle.report.formats import decimals_for, format_number, format_setting

# Which score columns a table shows by default, in which order, and their LaTeX headers
# come from the metric registry (disentangle.evaluation.metrics); the configuration
# columns' names and LaTeX headers from the configuration's fields (disentangle.config).

_DATA_KEYS = ("data_label", "data_sha256")


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

# --------------------------------------------------------------------------- grouping
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


def table_sort_key(column):
    """A sort key for a table's rows (DataFrame.sort_values(key=...)): datasets in the
    registry's order, the rest as the configuration sorts them."""
    from disentangle.config import sort_key
    if column.name == DATASET:
        from disentangle.data.datasets import REGISTRY
        rank = {d: i for i, d in enumerate(REGISTRY)}
        return column.map(lambda v: (rank.get(v, len(rank)), str(v)))
    return sort_key(column)


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
    ordered = df.sort_values(list(keys), na_position="last", kind="stable", key=table_sort_key)
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

# --------------------------------------------------------------------------- cells
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
