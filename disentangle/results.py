"""The results table: :func:`collect` turns every run directory under a results
directory into one row of a pandas DataFrame (configuration, data source, scores).

File names, atomic writes and JSON helpers live in :mod:`disentangle.io`; the files of a
run are read through :class:`disentangle.rundir.RunDir`.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from disentangle.errors import UserError
from disentangle.rundir import RunDir, find_runs

# --------------------------------------------------------------------------- collecting runs
# Columns describing where a run's numbers come from, before its configuration columns.
SOURCE_COLUMNS = ("run", "path", "status", "data_source", "data_label", "data_sha256",
                  "num_images", "package_version")


def config_columns() -> tuple[str, ...]:
    """The configuration fields that become table columns, in display order
    (config.json["config"]): every identity field of the configuration, the seed last."""
    from disentangle.config import identity_keys
    return identity_keys()


def derived_columns() -> tuple[str, ...]:
    """Columns derived from a run's configuration (config.method_columns): its method
    and regularisation strength, the same for every method whatever its fields."""
    from disentangle.config import METHOD_COLUMNS
    return METHOD_COLUMNS


def run_columns() -> tuple[str, ...]:
    """Columns describing the run itself rather than its scores."""
    return SOURCE_COLUMNS + derived_columns() + tuple(k for k in config_columns() if k not in derived_columns())


class ResultsWarning(UserWarning):
    """A run directory whose files could not be read completely; its row has NaN there."""


def data_label(provenance: dict | None) -> str:
    """Short name of a run's data source for tables and captions.

    Matches ``DSpritesData.source_label`` ('official' / 'rendered (<renderer version>)'),
    and appends the image count when the file holds a sub-grid, so that a table never
    shows two different datasets under one name."""
    if not provenance:
        return "unknown"
    source = provenance.get("source") or "unknown"
    if source == "official":
        label = "official"
    elif source == "rendered":
        label = f"rendered ({provenance.get('renderer_version')})"
    else:
        label = str(source)
    n = provenance.get("num_images")
    full = 737_280  # the complete dSprites grid; anything else is a sub-grid
    if isinstance(n, int) and n != full:
        label += f", {n:,} images"
    if provenance.get("content_check") == "unverified":   # accepted with --unverified-data
        label += ", unverified"
    return label


def _scalar_or_none(value: Any):
    # scores hold floats, ints, bools, short strings; lists/dicts (per-factor detail) are
    # not table cells
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return _NOT_SCALAR


_NOT_SCALAR = object()


def score_columns(scores: dict, problems: list[str] | None = None) -> dict:
    """Flatten a scores.json dict into {"<metric>.<key>": value} (scalars only). An entry
    that is not {"values": {...}, ...} is skipped and, when ``problems`` is given, named
    there (a damaged file must not look like a metric that was never run)."""
    flat = {}
    for metric, entry in scores.items():
        values = entry.get("values", {}) if isinstance(entry, dict) else None
        if not isinstance(values, dict):
            if problems is not None:
                what = "entry" if not isinstance(entry, dict) else "entry's values"
                problems.append(f"scores.json: {metric!r} {what} is a {type(entry if what == 'entry' else values).__name__},"
                                f" not an object (damaged file; the metric shows as missing)")
            continue
        for key, value in values.items():
            value = _scalar_or_none(value)
            if value is _NOT_SCALAR:
                continue
            flat[f"{metric}.{key}"] = float("nan") if value is None else value
    return flat


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _read_run(run_dir: Path, root: Path) -> tuple[dict, list[str]]:
    row: dict[str, Any] = {"run": run_dir.relative_to(root).as_posix() if run_dir != root else run_dir.name,
                           "path": str(run_dir)}
    run = RunDir(run_dir)
    problems = []
    try:
        cfg_file = run.saved()
    except UserError as exc:
        problems.append(str(exc))
        cfg_file = {}
    config = cfg_file.get("config") or {}
    provenance = cfg_file.get("data") or {}
    package = cfg_file.get("package") or {}
    from disentangle.config import fits_field
    bad = [key for key in config_columns() if key in config and not fits_field(key, config[key])]
    for key in bad:
        problems.append(f"config.json: {key} = {_short(config[key])} is not a valid value (shown as missing)")
    config = {k: v for k, v in config.items() if k not in bad}
    for key in config_columns():
        row[key] = config.get(key)
    from disentangle.config import method_columns
    row.update(method_columns(config))
    row["data_source"] = provenance.get("source")
    row["data_label"] = data_label(provenance)
    row["data_sha256"] = provenance.get("content_sha256")
    row["num_images"] = provenance.get("num_images")
    row["package_version"] = package.get("disentangle") if isinstance(package, dict) else None

    status = run.status() or {}
    row["status"] = status.get("state", "unknown")
    if status.get("unreadable"):
        problems.append(status["reason"])

    if not run.scores_path.is_file():
        problems.append(f"{run.scores_path}: missing (run not evaluated yet?)")
    else:
        try:
            row.update(score_columns(run.read_scores(), problems))
        except UserError as exc:
            problems.append(str(exc))
    return row, problems


def collect(results_dir: str | os.PathLike):
    """One row per run directory under ``results_dir`` (a directory with config.json).

    Columns: run (path relative to results_dir), path, status, data_source ('official' |
    'rendered'), data_label (for captions), data_sha256, num_images, package_version,
    the run's method, strength_name and strength (:func:`derived_columns`: "beta-h" ->
    beta-vae, beta; annealed-vae -> capacity_max; factor-vae -> gamma; dip-vae-* ->
    lambda_od), the configuration's identity fields (:func:`config_columns`: method, beta, ...,
    precision, seed; typed by the field's annotation) and one column per score, named
    "<metric>.<key>" as in scores.json. A run whose scores are missing or unreadable gets
    NaN there and ONE ResultsWarning naming the file; nothing raises for a bad run.
    """
    import warnings

    import numpy as np
    import pandas as pd

    root = Path(results_dir)
    if not root.is_dir():
        raise UserError(f"results directory not found: {root}")
    rows = []
    problems_by_run: dict[str, list[str]] = {}
    for run_dir in find_runs(root):
        row, problems = _read_run(run_dir, root)
        problems_by_run[row["run"]] = problems
        rows.append(row)
    from disentangle.config import column_dtype, replicate_keys, setting_keys, sort_key
    columns = list(run_columns())
    df = pd.DataFrame(rows, columns=columns)
    if rows:
        df = pd.DataFrame(rows)
    score_cols = sorted(c for c in df.columns if c not in columns)
    df = df.reindex(columns=columns + score_cols)
    for col in score_cols:
        # a key missing from some runs -> NaN, numeric columns stay float; flags
        # (info.is_bound) and labels (info.likelihood) keep their type
        present = df[col].dropna()
        if len(present) and all(isinstance(v, bool) for v in present):
            continue
        numbers = sum(_is_number(v) for v in present)
        if numbers * 2 > len(present):
            # a numeric score with a few values of another type: a damaged file, not a label
            for run, value in zip(df["run"], df[col]):
                if value is not None and value == value and not _is_number(value):
                    problems_by_run[run].append(f"scores.json: {col} = {_short(value)} is not a number (shown as missing)")
            df[col] = pd.to_numeric(df[col].map(lambda v: v if _is_number(v) else None)).astype(float)
            continue
        converted = pd.to_numeric(df[col], errors="coerce")
        if converted.notna().sum() == df[col].notna().sum():
            df[col] = converted.astype(float)
    for run, problems in problems_by_run.items():
        if problems:
            warnings.warn(f"run {run}: " + "; ".join(problems), ResultsWarning, stacklevel=2)
    # configuration columns typed by their fields (a run without a key -> NaN / <NA>)
    for col in config_columns():
        dtype = column_dtype(col)
        if dtype == "float":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
        elif dtype == "Int64":
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["num_images"] = pd.to_numeric(df["num_images"], errors="coerce").astype("Int64")
    df["strength"] = pd.to_numeric(df["strength"], errors="coerce").astype(float)
    # the order a reader expects: by dataset, then settings, seeds last (not "b16" < "b4")
    order = ["data_label", *setting_keys(), *replicate_keys(), "run"]
    df = df.sort_values(order, na_position="last", kind="stable", key=sort_key).reset_index(drop=True)
    df = df.replace({None: np.nan})
    df.attrs["results_dir"] = str(root)
    return df
