"""Issue 22, damaged results: a scores entry or a configuration field of the wrong type is
shown as missing AND named in a warning (run and key), never a silent blank cell; the CLI
prints it as one 'warning:' line."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from disentangle.io import read_json, write_json_atomic
from disentangle.results import ResultsWarning, collect
from study_fixture import fake_study

RUNS = [("beta-vae", "beta", v, s) for v in (1.0, 4.0) for s in range(2)]


def _study(tmp_path):
    return fake_study(tmp_path / "study", runs=RUNS)


def _edit(path, change):
    data = read_json(path)
    change(data)
    write_json_atomic(path, data)


def _messages(root):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        df = collect(root)
    return df, [str(w.message) for w in record if issubclass(w.category, ResultsWarning)]


def test_an_intact_study_gives_no_warning(tmp_path):
    df, messages = _messages(_study(tmp_path))
    assert messages == [] and df["mig.discrete_mig"].notna().all()


@pytest.mark.parametrize("damage, expect", [
    (lambda s: s.__setitem__("mig", {"values": "0.5"}), "'mig' entry's values is a str"),
    (lambda s: s.__setitem__("mig", {"values": [0.5]}), "'mig' entry's values is a list"),
    (lambda s: s.__setitem__("mig", 7), "'mig' entry is a int"),
])
def test_a_damaged_scores_entry_is_named(tmp_path, damage, expect):
    root = _study(tmp_path)
    bad = "beta-vae_beta4_s1"
    _edit(root / bad / "scores.json", damage)
    df, messages = _messages(root)
    assert len(messages) == 1 and messages[0].startswith(f"run {bad}:") and expect in messages[0], messages
    row = df.set_index("run").loc[bad]
    assert row["mig.discrete_mig"] != row["mig.discrete_mig"]          # NaN, not a stale value
    assert df.set_index("run").drop(bad)["mig.discrete_mig"].notna().all()


@pytest.mark.parametrize("value", ["0.31", True, [0.3]])
def test_a_score_of_the_wrong_type_is_named_and_the_column_stays_numeric(tmp_path, value):
    root = _study(tmp_path)
    bad = "beta-vae_beta1_s0"
    _edit(root / bad / "scores.json", lambda s: s["mig"]["values"].__setitem__("discrete_mig", value))
    df, messages = _messages(root)
    if isinstance(value, list):            # a list is per-factor detail, never a table cell
        assert messages == [] or all("discrete_mig" not in m for m in messages)
    else:
        assert len(messages) == 1 and f"run {bad}: scores.json: mig.discrete_mig = {value!r}" in messages[0]
    assert df["mig.discrete_mig"].dtype == float
    assert df["mig.discrete_mig"].isna().sum() == 1


@pytest.mark.parametrize("key, value", [("beta", "four"), ("latent_dim", 2.5), ("seed", "0"), ("method", 3),
                                        ("architecture", ["burgess"])])
def test_a_config_field_of_the_wrong_type_is_named(tmp_path, key, value):
    root = _study(tmp_path)
    bad = "beta-vae_beta4_s0"
    def damage(saved):
        if key == "method":                # the fixture writes the old key, which upgraded() maps
            saved["config"].pop("objective")
        saved["config"][key] = value
    _edit(root / bad / "config.json", damage)
    df, messages = _messages(root)
    assert len(messages) == 1 and f"run {bad}: config.json: {key} = {value!r}" in messages[0], messages
    cell = df.set_index("run").loc[bad, key]
    assert __import__("pandas").isna(cell)                 # missing, not the bad value


def test_the_report_command_prints_one_warning_line(tmp_path):
    root = _study(tmp_path)
    _edit(root / "beta-vae_beta4_s0" / "config.json", lambda c: c["config"].__setitem__("beta", "four"))
    proc = subprocess.run([sys.executable, "-m", "disentangle", "report", str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert lines == ["warning: run beta-vae_beta4_s0: config.json: beta = 'four' is not a valid value (shown as missing)"]
