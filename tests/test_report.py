"""collect() and the report tables, on a small results tree made by the toolkit itself:
tiny β-VAE runs trained on the 1,536-image dataset fixture and evaluated with small
metric parameters. test_plots.py reuses the same tree (built once per session)."""
from __future__ import annotations

import math
import re
import shutil
import statistics
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from disentangle.errors import UserError
from disentangle.report import (ReportWarning, aggregate, latex_escape, make_report, metric_columns,
                                write_report)
from disentangle.io import read_json, write_json_atomic
from disentangle.results import ResultsWarning, collect

# objective, beta, seed: two β values × two seeds of β-VAE, one capacity run
RUNS = [("beta-h", 1.0, 0), ("beta-h", 1.0, 1), ("beta-h", 4.0, 0), ("beta-h", 4.0, 1), ("beta-b", 1.0, 0)]
METRIC_PARAMS = {
    "mig": {"num_train": 300, "batch_size": 16},
    "beta_vae": {"num_train": 60, "num_eval": 30, "batch_size": 8},
    "info": {"iq_min_samples": 200, "iq_max_samples": 400, "distortion_images": 512},
}
_TREES: dict[str, Path] = {}


def run_name(objective: str, beta: float, seed: int) -> str:
    return f"{objective}_b{beta:g}_s{seed}"


def _evaluate(run_dir: Path, data) -> None:
    from disentangle.evaluation.evaluate import evaluate_run
    evaluate_run(run_dir, metrics=tuple(METRIC_PARAMS), seed=0, data=data, device="cpu",
                 params=METRIC_PARAMS, progress=False)


def results_tree(base: Path, data_path: Path) -> Path:
    """Train and evaluate RUNS under base/results once per session; return that directory."""
    key = str(data_path)
    if key in _TREES:
        return _TREES[key]
    import torch

    from disentangle.config import TrainConfig
    from disentangle.data.dsprites import DSpritesData
    from disentangle.train import train
    torch.set_num_threads(1)
    data = DSpritesData(data_path)
    root = base / "results"
    for objective, beta, seed in RUNS:
        config = TrainConfig(method=objective, beta=beta, seed=seed, steps=24, batch_size=16, latent_dim=3,
                             lr=1e-3, gamma=50.0, capacity_max=5.0, capacity_steps=12, data=str(data_path),
                             device="cpu", threads=1, log_every=4, checkpoint_every=1000).validate()
        run_dir = train(config, root / run_name(objective, beta, seed))
        _evaluate(run_dir, data)
    _TREES[key] = root
    return root


@pytest.fixture(scope="session")
def tree(tmp_path_factory, tiny_data_path) -> Path:
    return results_tree(tmp_path_factory.mktemp("tree"), tiny_data_path)


@pytest.fixture()
def df(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResultsWarning)  # the real tree is complete: no warning
        return collect(tree)


def _copy(tree: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tree, tmp_path / "copy", ignore=shutil.ignore_patterns("*.pt", "codes.h5")))


# --------------------------------------------------------------------------- collect
def test_collect_values_equal_scores_json(df, tree):
    import disentangle.config as cfg
    from disentangle import __version__
    assert sorted(df["run"]) == sorted(run_name(*r) for r in RUNS)
    checked = 0
    for _, row in df.iterrows():
        run_dir = tree / row["run"]
        saved = read_json(run_dir / "config.json")
        for key in ("method", "beta", "gamma", "capacity_max", "latent_dim", "steps", "seed", "likelihood"):
            want = saved["config"][key]
            # the method column names the method an old alias ("beta-h") selects
            assert row[key] == (cfg.method_of(want) if key == "method" else want), key
        assert row["data_source"] == "rendered"
        assert row["data_label"] == f"rendered ({saved['data']['renderer_version']}), 1,536 images"
        assert row["data_sha256"] == saved["data"]["content_sha256"]
        assert row["package_version"] == __version__
        assert row["status"] == "finished"
        scores = read_json(run_dir / "scores.json")
        assert set(METRIC_PARAMS) <= set(scores)
        for metric, entry in scores.items():
            for key, value in entry["values"].items():
                col = f"{metric}.{key}"
                if isinstance(value, bool) or isinstance(value, str):
                    assert row[col] == value
                elif value is None:
                    assert math.isnan(row[col])
                elif isinstance(value, (int, float)):
                    assert row[col] == value, col  # exact: the same JSON number
                    checked += 1
    assert checked > 5 * 20
    # the headline columns every report uses exist and are finite
    for col in ("mig.discrete_mig", "beta_vae.eval_accuracy", "info.rate_nats", "info.distortion_nats"):
        assert df[col].notna().all() and df[col].dtype == float


def test_collect_missing_and_unreadable_scores_give_nan_and_one_warning_each(tree, tmp_path):
    copy = _copy(tree, tmp_path)
    missing, corrupt = run_name(*RUNS[0]), run_name(*RUNS[2])
    (copy / missing / "scores.json").unlink()
    (copy / corrupt / "scores.json").write_text('{"mig": {"values": {"discrete_mig": 0.')  # truncated
    with pytest.warns(ResultsWarning) as record:
        df = collect(copy)
    messages = [str(w.message) for w in record if issubclass(w.category, ResultsWarning)]
    assert len(messages) == 2
    assert any(str(copy / missing / "scores.json") in m and "missing" in m for m in messages)
    assert any(str(copy / corrupt / "scores.json") in m and "unreadable" in m for m in messages)
    bad = df["run"].isin([missing, corrupt])
    assert len(df) == len(RUNS)
    assert df.loc[bad, "mig.discrete_mig"].isna().all()
    assert df.loc[~bad, "mig.discrete_mig"].notna().all()
    assert (df.loc[bad, "method"] == "beta-vae").all()  # the configuration is still there
    # reports still work and show the gaps
    text = make_report(df, group_by="method,beta")
    assert "(1 of 2)" in text


def test_collect_skips_nothing_and_raises_only_for_a_missing_directory(tmp_path):
    with pytest.raises(UserError, match="not found"):
        collect(tmp_path / "nope")
    empty = collect(tmp_path)
    assert empty.empty and "mig.discrete_mig" not in empty.columns
    with pytest.raises(UserError, match="no runs found"):
        make_report(empty)


# --------------------------------------------------------------------------- aggregation
def test_aggregate_mean_std_count_match_hand_computation(df):
    cols = ["mig.discrete_mig", "info.rate_nats"]
    agg = aggregate(df, ["method", "beta"], cols)
    assert len(agg) == 3  # beta-h β=1, beta-h β=4, beta-b
    for _, g in agg.iterrows():
        runs = df[(df["method"] == g["method"]) & (df["beta"] == g["beta"])]
        assert g["n"] == len(runs)
        for col in cols:
            values = runs[col].tolist()
            assert g[f"{col}.mean"] == pytest.approx(statistics.fmean(values), rel=1e-12)
            assert g[f"{col}.count"] == len(values)
            if len(values) > 1:
                assert g[f"{col}.std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
            else:
                assert math.isnan(g[f"{col}.std"])


def test_aggregation_never_mixes_data_sources(tree, tmp_path):
    copy = _copy(tree, tmp_path)
    moved = copy / run_name("beta-h", 4.0, 1)
    cfg = read_json(moved / "config.json")
    cfg["data"] = {**cfg["data"], "source": "official", "source_checksum": "md5:x",
                   "content_sha256": "f" * 64, "num_images": 737_280}
    cfg["data"].pop("renderer_version")
    write_json_atomic(moved / "config.json", cfg)
    df = collect(copy)
    agg = aggregate(df, ["method", "beta"], ["mig.discrete_mig"])
    b4 = agg[(agg["method"] == "beta-vae") & (agg["beta"] == 4.0)]
    assert sorted(b4["n"]) == [1, 1]
    assert set(b4["data_label"]) == {"official", "rendered (dsprites-render-1), 1,536 images"}
    official = b4[b4["data_label"] == "official"].iloc[0]
    assert official["mig.discrete_mig.mean"] == df.loc[df["run"] == moved.name, "mig.discrete_mig"].item()
    text = make_report(df, "markdown", group_by="method,beta", metrics=["mig"])
    assert "| official" in text.replace("  ", " ") or " official " in text


def test_grouping_that_hides_a_setting_warns(df):
    with pytest.warns(ReportWarning, match="beta"):
        aggregate(df[df["method"] == "beta-vae"], ["method"], ["mig.discrete_mig"])


# --------------------------------------------------------------------------- formats
def test_markdown_per_run_and_aggregated(df):
    text = make_report(df, "markdown", metrics=["mig.discrete_mig", "info.rate_nats"])
    lines = text.strip().splitlines()
    assert len(lines) == 2 + len(RUNS)
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[-2:] == ["mig.discrete_mig", "info.rate_nats"]
    assert "data_label" in header
    # the numbers are the table's, rounded to the column's precision
    for line in lines[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split("|"))))
        row = df[df["run"] == cells["run"]].iloc[0]
        assert float(cells["mig.discrete_mig"]) == pytest.approx(row["mig.discrete_mig"], abs=5e-4)
        assert float(cells["info.rate_nats"]) == pytest.approx(row["info.rate_nats"], abs=0.051)
    agg_text = make_report(df, "markdown", group_by=["method", "beta"], metrics=["mig"])
    agg = aggregate(df, ["method", "beta"], ["mig.discrete_mig"])
    b1 = agg[(agg["method"] == "beta-vae") & (agg["beta"] == 1.0)].iloc[0]
    want = f"{b1['mig.discrete_mig.mean']:.3f} ± {b1['mig.discrete_mig.std']:.3f}"
    assert want in agg_text
    assert agg_text.count("\n") == 2 + 3


def test_latex_is_balanced_escaped_and_pm_in_math(df):
    text = make_report(df, "latex", group_by="method,beta")
    begins = re.findall(r"\\begin\{(\w+)\}", text)
    ends = re.findall(r"\\end\{(\w+)\}", text)
    assert begins == ["table", "tabular"] and ends == ["tabular", "table"]
    for rule in (r"\toprule", r"\midrule", r"\bottomrule"):
        assert text.count(rule) == 1
    assert "±" not in text
    outside_math = re.sub(r"\$[^$]*\$", "", text.split("\n", 1)[1])  # after the "% requires" comment
    assert not re.search(r"(?<!\\)[_%#^~]", outside_math)
    assert text.count("$") % 2 == 0
    assert r"\caption{" in text and "data: dSprites: rendered (dsprites-render-1), 1,536 images" in text
    body = text.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 3
    ncols = len(re.search(r"\\begin\{tabular\}\{(\w+)\}", text).group(1))
    for line in body:
        assert line.endswith(r"\\") and line.count("&") == ncols - 1
    # a group of two seeds has mean \pm std in math mode
    assert re.search(r"\$\d+\.\d+ \\pm \d+\.\d+\$", text)
    # run names (with underscores) are escaped in the per-run table
    per_run = make_report(df, "latex", metrics=["mig"])
    assert r"beta-h\_b1\_s0" in per_run
    assert latex_escape("a_b & 50% #1") == r"a\_b \& 50\% \#1"


def test_csv_round_trip_full_precision(df, tmp_path):
    out = tmp_path / "table.csv"
    write_report(Path(df["path"].iloc[0]).parent, "csv", out)
    back = pd.read_csv(out)
    for col in metric_columns(df, headline_only=False):
        assert np.array_equal(back[col].to_numpy(float), df[col].to_numpy(float), equal_nan=True), col
    agg = pd.read_csv(pd.io.common.StringIO(make_report(df, "csv", group_by="method,beta",
                                                                   metrics=["mig.discrete_mig"])))
    assert list(agg.columns)[-4:] == ["n", "mig.discrete_mig.mean", "mig.discrete_mig.std",
                                      "mig.discrete_mig.count"]


# --------------------------------------------------------------------------- CLI
def test_cli_report(tree, tmp_path):
    from click.testing import CliRunner

    from disentangle.cli import main
    runner = CliRunner()
    out = tmp_path / "t.tex"
    res = runner.invoke(main, ["report", str(tree), "--format", "latex", "--group-by", "method,beta",
                               "--metric", "mig", "--metric", "info.rate_nats", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text().startswith("% requires") and "MIG" in out.read_text()
    res = runner.invoke(main, ["report", str(tree)])
    # the readable report: a headline table and an information table, one row per run each
    assert res.exit_code == 0
    tables = [b for b in res.output.split("\n\n") if b.startswith("|")]
    assert len(tables) == 2 and all(t.strip().count("\n") == 1 + len(RUNS) for t in tables)
    assert "| MIG" in res.output.replace("  ", " ") or " MIG " in res.output
    for args, needle in ((["--group-by", "colour"], "--group-by"), (["--metric", "nope"], "--metric nope"),
                         (["--format", "html"], "html")):
        res = runner.invoke(main, ["report", str(tree), *args])
        assert res.exit_code != 0 and needle in res.output and "Traceback" not in res.output
    res = runner.invoke(main, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 1 and "not found" in res.output


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex not installed")
def test_latex_compiles_with_booktabs(df, tmp_path):
    import subprocess
    (tmp_path / "grouped.tex").write_text(make_report(df, "latex", group_by="method,beta",
                                                      metrics=["mig", "info.rate_nats"]))
    (tmp_path / "runs.tex").write_text(make_report(df, "latex", metrics=["beta_vae"]))
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage{booktabs}\n"
                                      "\\begin{document}\n\\input{grouped}\n\\input{runs}\n\\end{document}\n")
    res = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "doc.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-2000:]
    assert (tmp_path / "doc.pdf").read_bytes()[:5] == b"%PDF-"


# --------------------------------------------------------------------------- configuration columns (issue 10)
def _fake_tree(root: Path, configs: list[dict], mig: list[float], scores: list[dict] | None = None,
               drop: tuple[str, ...] = ()) -> Path:
    """Run directories holding only config.json and scores.json (collect reads no more).
    ``scores``: more metric entries per run ({"info": {"rate_nats": ...}}); ``drop``:
    configuration keys left out of config.json (a run written before they existed)."""
    from disentangle.config import TrainConfig
    data = {"source": "rendered", "renderer_version": "t", "content_sha256": "abc", "num_images": 737_280}
    for i, (overrides, value) in enumerate(zip(configs, mig)):
        config = {**TrainConfig().to_dict(), **overrides}
        config = {k: v for k, v in config.items() if k not in drop}
        run = root / f"run{i}"
        entries = {"mig": {"values": {"discrete_mig": value}}}
        for metric, values in (scores[i] if scores else {}).items():
            entries[metric] = {"values": values}
        write_json_atomic(run / "config.json", {"config": config, "data": data})
        write_json_atomic(run / "status.json", {"state": "finished"})
        write_json_atomic(run / "scores.json", entries)
    return root


def test_precision_is_a_column_and_mixing_it_warns(tmp_path):
    # used to average float32 and bf16-mixed runs together without a word
    tree = _fake_tree(tmp_path / "r", [{"seed": 0}, {"seed": 1}, {"seed": 0, "precision": "bf16-mixed"}],
                      [0.1, 0.2, 0.6])
    df = collect(tree)
    assert list(df["precision"]) == ["bf16-mixed", "float32", "float32"]   # sorted by setting, then seed
    with pytest.warns(ReportWarning, match="precision"):
        aggregate(df, ["method"], ["mig.discrete_mig"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ReportWarning)
        agg = aggregate(df, ["precision"], ["mig.discrete_mig"])
    assert dict(zip(agg["precision"], agg["mig.discrete_mig.mean"])) == pytest.approx(
        {"float32": 0.15, "bf16-mixed": 0.6})
    # the per-run table shows it because it varies
    from disentangle.report import table_cells
    header, _ = table_cells(df)
    assert "precision" in header


def test_cli_report_groups_by_precision(tmp_path):
    # `disentangle report --group-by precision` used to fail: no such column
    from click.testing import CliRunner

    from disentangle.cli import main
    tree = _fake_tree(tmp_path / "r", [{"seed": 0}, {"seed": 1}, {"precision": "bf16-mixed"}], [0.1, 0.2, 0.6])
    res = CliRunner().invoke(main, ["report", str(tree), "--group-by", "precision"])
    assert res.exit_code == 0, res.output
    table = [ln for ln in res.output.split("\n\n")[1].splitlines() if ln.startswith("|")]   # the headline table
    assert table[0].split("|")[1].strip() == "precision"
    rows = {line.split("|")[1].strip(): line for line in table[2:]}
    assert set(rows) == {"float32", "bf16-mixed"} and "0.150" in rows["float32"]


def test_a_new_identity_field_gets_columns_names_and_groups(tmp_path, monkeypatch):
    # what the coming `architecture` and method hyper-parameters rely on: declaring the
    # field is all it takes
    import dataclasses

    from disentangle import config as cfg
    from disentangle import sweep as sw

    @dataclasses.dataclass
    class Extended(cfg.TrainConfig):
        normalisation: str = "batch"                    # no metadata: an identity field
        kl_weight: float = dataclasses.field(default=1.0, metadata=cfg.identity(name_key="kw", latex=r"$w$"))
        probe_every: int = dataclasses.field(default=10, metadata=cfg.execution())

    assert cfg.identity_keys(Extended)[-4:] == ("precision", "normalisation", "kl_weight", "seed")
    assert "probe_every" in cfg.execution_keys(Extended) and "probe_every" not in Extended().identity()
    assert cfg.column_dtype("kl_weight", Extended) == "float"
    base = Extended(beta=4).to_dict()
    assert cfg.run_name(base, ["normalisation", "kl_weight"], Extended) == "beta-vae_b4_batch_kw1_s0"
    monkeypatch.setattr(cfg, "TrainConfig", Extended)
    assert Extended(kl_weight=2).kl_weight == 2.0 and isinstance(Extended(kl_weight=2).kl_weight, float)
    runs = sw.expand(sw.Study(grid={"normalisation": ["batch", "layer"], "kl_weight": [1, 2]}))
    assert [r.name for r in runs] == ["beta-vae_b1_batch_kw1_s0", "beta-vae_b1_batch_kw2_s0",
                                      "beta-vae_b1_layer_kw1_s0", "beta-vae_b1_layer_kw2_s0"]
    tree = _fake_tree(tmp_path / "r", [{"normalisation": "batch", "kl_weight": 1.0},
                                       {"normalisation": "layer", "kl_weight": 1.0}], [0.1, 0.5])
    df = collect(tree)
    assert list(df["normalisation"]) == ["batch", "layer"] and df["kl_weight"].dtype == float
    with pytest.warns(ReportWarning, match="normalisation"):
        aggregate(df, ["method"], ["mig.discrete_mig"])
    text = make_report(df, "markdown", group_by="normalisation")
    assert "layer" in text and "0.500" in text
    from disentangle.report import latex_name
    assert latex_name("kl_weight") == r"$w$" and latex_name("normalisation") == "normalisation"


# --------------------------------------------------------------------------- methods and their strength (issue 11)
# (objective as stored, its method, the strength's field, that field's value): every method,
# the old names included, each with its hyper-parameters set apart so a wrong field shows
STRENGTH_CASES = [
    ({"method": "beta-vae", "beta": 6.0}, "beta-vae", "beta", 6.0),
    ({"method": "beta-h", "beta": 4.0}, "beta-vae", "beta", 4.0),
    ({"method": "annealed-vae", "capacity_max": 50.0, "gamma": 1000.0}, "annealed-vae", "capacity_max", 50.0),
    ({"method": "beta-b", "capacity_max": 15.0, "gamma": 100.0}, "annealed-vae", "capacity_max", 15.0),
    ({"method": "beta-tcvae", "beta": 8.0, "gamma": 3.0}, "beta-tcvae", "beta", 8.0),
    ({"method": "factor-vae", "gamma": 30.0, "beta": 2.0}, "factor-vae", "gamma", 30.0),
    ({"method": "dip-vae-i", "lambda_od": 5.0, "beta": 3.0}, "dip-vae-i", "lambda_od", 5.0),
    ({"method": "dip-vae-ii", "lambda_od": 20.0, "gamma": 7.0}, "dip-vae-ii", "lambda_od", 20.0),
]


def test_method_and_strength_columns_for_every_method(tmp_path):
    from disentangle import methods as method_registry
    assert all(m.strength in m.reads for m in method_registry.METHODS.values())   # every method has its strength
    tree = _fake_tree(tmp_path / "r", [c for c, *_ in STRENGTH_CASES], [0.1] * len(STRENGTH_CASES))
    df = collect(tree)
    # the method column names the method an old name selects ("beta-h" -> "beta-vae")
    got = sorted((r["method"], r["strength_name"], r["strength"]) for _, r in df.iterrows())
    assert got == sorted((m, k, v) for c, m, k, v in STRENGTH_CASES)
    assert df["strength"].dtype == float
    cols = list(df.columns)
    assert cols.index("method") < cols.index("strength_name") < cols.index("strength")


def test_old_runs_without_the_new_fields_get_method_and_strength(tmp_path):
    # config.json of a run from before lambda_od and architecture existed: the default
    # counts (a dip-vae run cannot be that old, a beta-h or beta-b one can)
    tree = _fake_tree(tmp_path / "r", [{"method": "beta-h", "beta": 16.0},
                                       {"method": "beta-b", "capacity_max": 5.0}], [0.3, 0.4],
                      drop=("lambda_od", "architecture"))
    assert "lambda_od" not in read_json(tree / "run0" / "config.json")["config"]
    df = collect(tree).set_index("run")
    assert (df.loc["run0", "method"], df.loc["run0", "strength_name"], df.loc["run0", "strength"]) == \
        ("beta-vae", "beta", 16.0)
    assert (df.loc["run1", "method"], df.loc["run1", "strength"]) == ("annealed-vae", 5.0)
    # a strength field missing from config.json counts as its default
    from disentangle.config import TrainConfig, method_columns
    assert method_columns({"method": "dip-vae-i"})["strength"] == TrainConfig().lambda_od
    assert method_columns({"method": "nope"}) == {"method": "nope", "strength_name": None, "strength": None}


# the CPU study's shape: every method, two strengths, two seeds
SIX_METHODS = {"beta-vae": ("beta", [1.0, 16.0]), "annealed-vae": ("capacity_max", [5.0, 25.0]),
               "beta-tcvae": ("beta", [1.0, 10.0]), "factor-vae": ("gamma", [10.0, 100.0]),
               "dip-vae-i": ("lambda_od", [1.0, 10.0]), "dip-vae-ii": ("lambda_od", [1.0, 10.0])}


def six_method_tree(root: Path, seeds=(0, 1), old_names: bool = True):
    """A fake study of the six methods; MIG and rate of each run from its position, so a
    test knows every mean. With ``old_names`` the β-VAE seed-1 runs say beta-h (a study
    resumed across the renaming) and AnnealedVAE's say beta-b."""
    configs, mig, scores = [], [], []
    for m, (method, (key, values)) in enumerate(SIX_METHODS.items()):
        for j, value in enumerate(values):
            for seed in seeds:
                objective = method
                if old_names and seed == 1:
                    objective = {"beta-vae": "beta-h", "annealed-vae": "beta-b"}.get(method, method)
                configs.append({"method": objective, key: value, "seed": seed, "architecture": "dlib",
                                **({"gamma": 1000.0} if method == "annealed-vae" else {})})
                mig.append(0.1 * m + 0.05 * j + 0.01 * seed)
                rate = 2.0 + 3.0 * m + 2.0 * j + 0.5 * seed
                scores.append({"info": {"rate_nats": rate, "distortion_nats": 300.0 - 2 * rate,
                                        "entropy_x_nats": 280.0, "is_bound": True}})
    return _fake_tree(root, configs, mig, scores)


def test_a_six_method_study_groups_by_method_and_strength(tmp_path):
    from disentangle.report import parse_group_by, study_group_by, table_cells
    df = collect(six_method_tree(tmp_path / "r"))
    assert len(df) == 24
    keys = study_group_by(df, swept=["method", "beta", "capacity_max", "gamma", "lambda_od", "seed"])
    assert keys == ["method", "strength_name", "strength"]
    with warnings.catch_warnings():
        # beta-h and beta-vae (beta-b and annealed-vae) are one method: no mixing warning
        warnings.simplefilter("error", ReportWarning)
        agg = aggregate(df, keys, ["mig.discrete_mig"])
    assert len(agg) == 12 and (agg["n"] == 2).all()
    for m, (method, (key, values)) in enumerate(SIX_METHODS.items()):
        for j, value in enumerate(values):
            row = agg[(agg["method"] == method) & (agg["strength"] == value)]
            assert len(row) == 1 and row["strength_name"].item() == key
            assert row["mig.discrete_mig.mean"].item() == pytest.approx(0.1 * m + 0.05 * j + 0.005)
            assert row["mig.discrete_mig.std"].item() == pytest.approx(statistics.stdev([0.0, 0.01]))
    header, rows = table_cells(df, keys, ["mig"])
    assert header[:3] == ["method", "strength_name", "strength"] and len(rows) == 12
    # rows in the methods' order (dlib's table), not alphabetical; strengths ascending
    assert [(r[0], float(r[2])) for r in rows] == [(m, v) for m, (_, vs) in SIX_METHODS.items() for v in vs]
    # a paper's table names methods and strengths as papers do, in that order
    latex = make_report(df, "latex", keys, ["mig"])
    body = [line for line in latex.splitlines() if line.endswith(r"\\") and "&" in line][1:]
    assert [line.split(" & ")[:2] for line in body[::2]] == [
        [r"$\beta$-VAE", r"$\beta$"], ["AnnealedVAE", r"$C_{\max}$"], [r"$\beta$-TCVAE", r"$\beta$"],
        ["FactorVAE", r"$\gamma$"], ["DIP-VAE-I", r"$\lambda_{od}$"], ["DIP-VAE-II", r"$\lambda_{od}$"]]
    # "strength" alone is always grouped with its name: β = 1 is not λ_od = 1
    assert parse_group_by("method,strength") == ["method", "strength_name", "strength"]
    # another setting varying inside a method's groups joins the keys (never averaged away)
    extra = collect(_fake_tree(tmp_path / "a", [{"method": "beta-vae", "beta": 1.0, "architecture": a, "seed": s}
                                                for a in ("dlib", "fc") for s in (0, 1)]
                               + [{"method": "factor-vae", "gamma": 10.0}], [0.1, 0.2, 0.3, 0.4, 0.5]))
    assert study_group_by(extra) == ["method", "strength_name", "strength", "architecture"]
    # a single-method study keeps today's grouping: its objective and swept settings
    single = collect(_fake_tree(tmp_path / "s", [{"beta": b, "seed": s} for b in (1.0, 4.0) for s in (0, 1)],
                                [0.1, 0.2, 0.3, 0.4]))
    assert study_group_by(single, swept=["beta", "seed"]) == ["method", "beta"]
    # the per-run table of a multi-method study names each run's strength
    header, _ = table_cells(df, None, ["mig"])
    assert header[2:5] == ["method", "strength_name", "strength"]
    assert table_cells(single, None, ["mig"])[0].count("method") == 1   # once, not as a derived twin


def test_cli_report_groups_by_method_and_strength(tmp_path):
    from click.testing import CliRunner

    from disentangle.cli import main
    tree = six_method_tree(tmp_path / "r")
    res = CliRunner().invoke(main, ["report", str(tree), "--group-by", "method,strength", "--metric", "mig"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 2 + 12 and "warning" not in res.output
    cells = {tuple(c.strip() for c in line.strip("|").split("|")[:3]): line for line in lines[2:]}
    assert ("factor-vae", "gamma", "100") in cells and ("annealed-vae", "capacity_max", "25") in cells
    assert "0.355 ± 0.007" in cells[("factor-vae", "gamma", "100")]   # 0.1·3 + 0.05 + 0.005


def test_per_run_tables_blank_what_a_method_ignores(tmp_path):
    """gamma of a β-VAE run is a stored default, not a setting: the per-run table leaves it
    blank (it showed 1000 beside β) while the CSV keeps the stored configuration."""
    from disentangle.report import table_cells, to_csv
    df = collect(_fake_tree(tmp_path / "r", [{"method": "beta-vae", "beta": 4.0},
                                              {"method": "factor-vae", "gamma": 20.0}], [0.1, 0.2]))
    header, rows = table_cells(df, None, ["mig"])
    by_method = {r[header.index("method")]: dict(zip(header, r)) for r in rows}
    assert by_method["beta-vae"]["beta"] == "4" and by_method["beta-vae"]["gamma"] == ""
    assert by_method["factor-vae"]["gamma"] == "20" and by_method["factor-vae"]["beta"] == ""
    assert "1000" not in " ".join(rows[0])
    assert list(pd_read_csv(to_csv(df))["gamma"]) == [1000.0, 20.0]


def pd_read_csv(text: str):
    import io

    import pandas as pd
    return pd.read_csv(io.StringIO(text))


def test_the_study_report_draws_every_method_at_its_ends(tmp_path):
    from disentangle.study_report import _traversal_runs
    df = collect(six_method_tree(tmp_path / "r"))
    df["status"] = "finished"
    picked = _traversal_runs(df)
    rows = df.set_index("path").loc[[str(p) for p in picked]]
    # every method, weakest and strongest, first seed, in the methods' order
    assert [(m, s) for m, s in zip(rows["method"], rows["strength"])] == [
        (m, v) for m, (_, vs) in SIX_METHODS.items() for v in vs]
    assert set(rows["seed"]) == {0}
    # one method: up to eight strengths, evenly spread, ends included
    single = collect(_fake_tree(tmp_path / "s", [{"beta": float(b)} for b in range(1, 13)], [0.1] * 12))
    single["status"] = "finished"
    betas = list(single.set_index("path").loc[[str(p) for p in _traversal_runs(single)], "beta"])
    assert len(betas) == 8 and betas[0] == 1.0 and betas[-1] == 12.0 and betas == sorted(betas)
