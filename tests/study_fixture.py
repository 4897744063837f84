"""A fake multi-method study for the report and figure tests (issue 23): run directories
holding only config.json, status.json and scores.json, every registered per-run metric's
headline keys filled with numbers that depend on the method, strength and seed."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from disentangle.io import write_json_atomic

STUDY_RUNS = [(method, key, value, seed)
              for method, key, values in (("beta-vae", "beta", (1.0, 4.0, 16.0)), ("factor-vae", "gamma", (10.0, 40.0)))
              for value in values for seed in range(3)]


def fake_study(root: Path, runs=STUDY_RUNS, skip: tuple[str, ...] = ("info_posterior",)) -> Path:
    from disentangle.config import TrainConfig
    from disentangle.evaluation.metrics import METRICS
    data = {"source": "rendered", "renderer_version": "t", "content_sha256": "abc", "num_images": 737_280}
    rng = np.random.default_rng(0)
    for i, (method, key, value, seed) in enumerate(runs):
        config = {**TrainConfig().to_dict(), "objective": method, key: value, "seed": seed}
        entries = {}
        base = np.log(value) / 4 + (0.3 if method == "factor-vae" else 0.0)
        for name, spec in METRICS.items():
            if name in skip:
                continue
            values = {}
            for k in spec.headline_keys:
                scale = 300.0 if k.endswith("_nats") else 1.0
                values[k] = float(scale * np.clip(base + 0.1 * rng.standard_normal(), 0.01, 0.99))
            values["extra_detail_key"] = float(rng.random())
            entries[name] = {"values": values}
        run = root / f"{method}_{key}{value:g}_s{seed}"
        write_json_atomic(run / "config.json", {"config": config, "data": data})
        write_json_atomic(run / "status.json", {"state": "finished"})
        write_json_atomic(run / "scores.json", entries)
    return root
