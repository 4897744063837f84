"""Issue 22, the last by-hand items: a deleted working directory, a directory that cannot
take files (/proc), and the CLI's start-up (no torch before a command needs it, which is
also what made a deleted working directory end in MKL's fatal error)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "disentangle", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=120)


def test_a_deleted_working_directory_is_one_line(tmp_path):
    gone = tmp_path / "gone"
    gone.mkdir()
    # the child starts inside the directory, which is removed before the command runs
    script = ("import os, sys, runpy; os.rmdir(os.getcwd()); sys.argv = ['disentangle', 'report', 'x'];"
              "runpy.run_module('disentangle', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], cwd=gone, env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip() == ("Error: the working directory no longer exists (deleted?); "
                                   "cd to an existing directory and run again")
    assert not gone.exists()


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc on this system")
def test_a_directory_that_takes_no_files_is_one_line(tmp_path):
    proc = _cli("data", "render", "--out", "/proc/disentangle-x.h5", "--keep", "scale=0", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "Error: /proc/disentangle-x.h5: cannot write: cannot create files in /proc"


def test_the_cli_starts_without_torch():
    # `disentangle --help` and every refusal made before work stay fast: torch (5 s to import
    # on these machines) loads only inside the commands that use it
    code = "import sys, disentangle.cli; print(sorted(m for m in ('torch', 'sklearn', 'seaborn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_run_without_its_configuration_is_named(tmp_path):
    import torch
    run = tmp_path / "run"
    run.mkdir()
    torch.save({}, run / "model.pt")
    proc = _cli("evaluate", "run", "--metric", "mig", cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "Error: run/config.json: no run configuration (is run a run directory?)"
    assert sorted(p.name for p in run.iterdir()) == ["model.pt"]
