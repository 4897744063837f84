"""The dataset column of a results table: datasets as papers write them, the column
completed for runs made before the configuration had it, a table's runs split by dataset
in the registry's order, and the data (dataset and source) as a caption names it."""
from __future__ import annotations

from disentangle.report.formats import format_setting

DATASET = "dataset"   # the configuration's dataset field: collect()'s column of that name

# How papers write the registry's datasets (disentangle.data.datasets.REGISTRY); an image
# folder imported under a name of the user's keeps that name.
DATASET_NAMES = {"dsprites": "dSprites", "color-dsprites": "Color-dSprites", "noisy-dsprites": "Noisy-dSprites",
                 "scream-dsprites": "Scream-dSprites", "shapes3d": "Shapes3D", "mpi3d-toy": "MPI3D-toy",
                 "mpi3d-realistic": "MPI3D-realistic", "mpi3d-real": "MPI3D-real", "smallnorb": "SmallNORB",
                 "cars3d": "Cars3D", "celeba": "CelebA"}


def dataset_name(name) -> str:
    """A dataset as papers write it ("shapes3d" -> "Shapes3D"); other names as they are."""
    return DATASET_NAMES.get(name, format_setting(name)) if isinstance(name, str) else format_setting(name)


def with_datasets(df):
    """``df`` with its dataset column complete: a run written before the configuration had
    a dataset field trained on dSprites (the field's default). Unchanged without the column."""
    if DATASET not in df.columns or not df[DATASET].isna().any():
        return df
    from disentangle.config import field_default
    return df.assign(**{DATASET: df[DATASET].fillna(field_default(DATASET) or "dsprites")})


def datasets_of(df) -> list[str]:
    """The datasets of a collect() table in the registry's order (others after, by
    name); [] for a table without a dataset column (today's dSprites-only runs)."""
    if DATASET not in df.columns:
        return []
    from disentangle.data.datasets import REGISTRY
    present = set(with_datasets(df)[DATASET].dropna())
    return [d for d in REGISTRY if d in present] + sorted(d for d in present if d not in REGISTRY)


def split_by_dataset(df) -> list[tuple[str | None, "object"]]:
    """[(dataset, its runs)] in :func:`datasets_of`'s order; [(None, df)] for a table
    without a dataset column. Each part keeps the rows' order."""
    names = datasets_of(df)
    if not names:
        return [(None, df)]
    filled = with_datasets(df)
    return [(name, filled[filled[DATASET] == name]) for name in names]


def data_names(df, with_dataset: bool = True) -> list[str]:
    """Each dataset and data source of the runs, as a caption names them ("Shapes3D:
    official, 480,000 images"; without a dataset column, or ``with_dataset`` False, just
    the source: "official")."""
    if "data_label" not in df.columns:
        return [dataset_name(d) for d in datasets_of(df)]
    names = []
    for dataset, sub in split_by_dataset(df):
        for label in sorted(sub["data_label"].dropna().unique()):
            names.append(f"{dataset_name(dataset)}: {label}" if dataset and with_dataset else str(label))
    return names


def one_source_per_dataset(df) -> bool:
    """Each dataset's runs all on one data file: a data column would repeat the dataset's."""
    return "data_label" in df.columns and all(sub["data_label"].nunique(dropna=False) <= 1
                                              for _, sub in split_by_dataset(df))

