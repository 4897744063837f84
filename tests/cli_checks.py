"""What the hostile-input tests check of a CLI call: it failed in one line (no traceback), and
it left every file as it was (sha256 before and after)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

from click.testing import CliRunner

from disentangle.cli import main as cli


def invoke(*args):
    """``disentangle ARGS`` in this process (click's runner), arguments as strings."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def one_line(result) -> str:
    """A CLI failure: exit 1, one "Error:" line, no traceback; returns that line."""
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def file_hashes(root: Path, directories: bool = True) -> dict[str, str]:
    """sha256 of every regular file under ``root``, links by their target text and, with
    ``directories``, directories and special files by their kind (a refusal that makes
    an empty folder or a FIFO shows too)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_symlink():
            out[str(p)] = "link:" + os.readlink(p)
        elif p.is_file():
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
        elif directories:
            out[str(p)] = "dir" if p.is_dir() else "special"
    return out
