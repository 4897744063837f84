"""A fake multi-method study for the report and figure tests (issue 23): run directories
holding only config.json, status.json and scores.json, every registered per-run metric's
headline keys filled with numbers that depend on the method, strength and seed (and, with
``datasets``, on the dataset: issue 20's studies of several datasets)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from disentangle.io import read_json, write_json_atomic

STUDY_RUNS = [(method, key, value, seed)
              for method, key, values in (("beta-vae", "beta", (1.0, 4.0, 16.0)), ("factor-vae", "gamma", (10.0, 40.0)))
              for value in values for seed in range(3)]

# each dataset's scores sit this far above dSprites', so a mean over two datasets is seen
DATASET_OFFSET = {"dsprites": 0.0, "shapes3d": 0.4, "mpi3d-toy": 0.2}
_DATA = {"dsprites": {"source": "rendered", "renderer_version": "t", "content_sha256": "abc", "num_images": 737_280},
         "shapes3d": {"dataset": "shapes3d", "source": "official", "content_sha256": "def", "num_images": 480_000},
         "mpi3d-toy": {"dataset": "mpi3d-toy", "source": "official", "content_sha256": "0a1",
                       "num_images": 1_036_800}}


def fake_study(root: Path, runs=STUDY_RUNS, skip: tuple[str, ...] = ("info_posterior",),
               datasets: tuple[str, ...] | None = None) -> Path:
    """``datasets``: every run once per dataset, its config.json naming it (the
    configuration's ``dataset`` field); None: no dataset key, as runs made before it."""
    from disentangle.config import TrainConfig
    from disentangle.evaluation.metrics import METRICS
    rng = np.random.default_rng(0)
    for dataset in datasets or (None,):
        for method, key, value, seed in runs:
            config = {**TrainConfig().to_dict(), "objective": method, key: value, "seed": seed}
            if dataset is not None:
                config["dataset"] = dataset
            entries = {}
            base = np.log(value) / 4 + (0.3 if method == "factor-vae" else 0.0) + DATASET_OFFSET.get(dataset, 0.0)
            for name, spec in METRICS.items():
                if name in skip:
                    continue
                values = {}
                for k in spec.headline_keys:
                    scale = 300.0 if k.endswith("_nats") else 1.0
                    values[k] = float(scale * np.clip(base + 0.1 * rng.standard_normal(), 0.01, 0.99))
                if "entropy_x_nats" in values:   # H(X) is the dataset's, the same for every run
                    values["entropy_x_nats"] = 250.0 + 20.0 * sorted(DATASET_OFFSET).index(dataset or "dsprites")
                values["extra_detail_key"] = float(rng.random())
                entries[name] = {"values": values}
            run = root / f"{dataset + '_' if dataset else ''}{method}_{key}{value:g}_s{seed}"
            write_json_atomic(run / "config.json", {"config": config, "data": _DATA[dataset or "dsprites"]})
            write_json_atomic(run / "status.json", {"state": "finished"})
            write_json_atomic(run / "scores.json", entries)
    return root


def collected(root: Path):
    """results.collect(root), with a ``dataset`` column read from each config.json where
    collect() gives none (before the configuration has its dataset field, collect() only
    knows the identity fields it declares)."""
    from disentangle.results import collect
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = collect(root)
    if "dataset" not in df.columns:
        names = [read_json(Path(p) / "config.json")["config"].get("dataset") for p in df["path"]]
        if any(n is not None for n in names):
            df.insert(df.columns.get_loc("method"), "dataset", names)
    return df
