"""The `disentangle` command line. Thin: parse options, call the library, print.

The work is done by library functions, so that everything the CLI does is also a Python
API call. One module per group of commands: base (the group, errors, shared helpers),
data, runs (train, sweep, evaluate, score, evaluate-study, import), figures (report, plot).
"""
from __future__ import annotations

from disentangle.cli import data, figures, runs  # noqa: F401  (each registers its commands on main)
from disentangle.cli.base import flag_of, main, user_message

__all__ = ["flag_of", "main", "user_message"]
