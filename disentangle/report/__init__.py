"""Result tables and the study report: pick score columns, aggregate runs over seeds,
write Markdown, CSV or LaTeX. One module per job, from the bottom up:

- :mod:`~disentangle.report.formats`: table text (number and setting cells, the
  Markdown and LaTeX writers, LaTeX escaping);
- :mod:`~disentangle.report.datasets`: the dataset column (names as papers write them,
  runs split by dataset, the data named for captions);
- :mod:`~disentangle.report.tables`: what a table holds (score columns, warning flags,
  grouping and aggregation over seeds, cells, the full CSV);
- :mod:`~disentangle.report.readable`: the report a reader takes in (readable names,
  headline tables, captions, :func:`make_report`, :func:`write_report`);
- :mod:`~disentangle.report.study_statistics`: the study figures' numbers (metric rank
  correlation, the fewest runs a figure needs).

This module re-exports the names the rest of the toolkit and its tests use.
"""
from disentangle.report.datasets import DATASET, data_names, dataset_name, datasets_of, split_by_dataset, with_datasets
from disentangle.report.formats import latex_escape, latex_name
from disentangle.report.readable import make_report, score_heading, write_report
from disentangle.report.study_statistics import (MIN_RUNS_CORRELATION, MIN_RUNS_DISTRIBUTION, metric_rank_correlation,
                                                 study_metric_columns)
from disentangle.report.tables import (ReportWarning, aggregate, headline_column, metric_columns, parse_group_by,
                                       settings_varying_within, study_group_by, table_cells, to_csv)

__all__ = [
    "DATASET", "MIN_RUNS_CORRELATION", "MIN_RUNS_DISTRIBUTION", "ReportWarning", "aggregate", "data_names",
    "dataset_name", "datasets_of", "headline_column", "latex_escape", "latex_name", "make_report", "metric_columns",
    "metric_rank_correlation", "parse_group_by", "score_heading", "settings_varying_within", "split_by_dataset",
    "study_group_by", "study_metric_columns", "table_cells", "to_csv", "with_datasets", "write_report",
]
