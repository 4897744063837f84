"""The numbers behind a study's classic figures (Locatello et al. 2019): the metrics they
compare, the Spearman rank correlation between those metrics per dataset (Fig. 3), and
the fewest runs each figure needs to mean something."""
from __future__ import annotations

from typing import Sequence

from disentangle.errors import UserError
from disentangle.report.datasets import DATASET, split_by_dataset
from disentangle.report.tables import headline_columns

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
