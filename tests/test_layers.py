"""The layers contract of pyproject.toml ([tool.importlinter]): modules import only from
their own layer and the layers below (imports inside functions count). The check runs
import-linter on the package as it is, and on a copy with one upward import added, which
must break it: a contract that nothing can break would prove nothing."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter")

ROOT = Path(__file__).resolve().parents[1]

_LINT = ("import sys; from importlinter.cli import lint_imports; "
         "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))")


def _lint(project: Path) -> subprocess.CompletedProcess:
    """lint-imports on ``project`` (a directory holding pyproject.toml and disentangle/),
    in a fresh interpreter whose path finds that project's package first."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run([sys.executable, "-c", _LINT], cwd=project, env=env, capture_output=True,
                          text=True, timeout=120)


def _copy_project(dest: Path) -> Path:
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    shutil.copytree(ROOT / "disentangle", dest / "disentangle", ignore=shutil.ignore_patterns("__pycache__"))
    return dest


def test_the_package_keeps_its_layers():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Layers look only down KEPT" in result.stdout
    assert "Figure modules share only the figure plumbing KEPT" in result.stdout


@pytest.mark.parametrize("module, upward, contract", [
    # the bottom layer reaching for the results table (the old results <-> rundir cycle)
    ("io.py", "disentangle.results", "Layers look only down"),
    # a library module reaching for the executor, inside a function (train -> sweep)
    ("train.py", "disentangle.sweep", "Layers look only down"),
    # figure modules: the plumbing reaching up, and one kind of figure reaching for another
    ("plots/figure.py", "disentangle.plots.training", "Figure modules share only the figure plumbing"),
    ("plots/images.py", "disentangle.plots.study", "Figure modules share only the figure plumbing"),
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, upward, contract):
    project = _copy_project(tmp_path)
    path = project / "disentangle" / module
    path.write_text(path.read_text() + f"\n\ndef _upward():\n    import {upward}  # noqa: F401\n")
    result = _lint(project)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout
    importer = "disentangle." + module.removesuffix(".py").replace("/", ".")
    assert f"{importer} -> {upward}" in result.stdout
