"""What a long step is doing, for whoever watches a run from outside its process.

Long loops (training steps, encoding the dataset, the metrics in turn, I_q's samples,
info's decoder pass) call :func:`report` with their phase and position. Nothing happens
unless a sink is installed (:func:`reporting`): the sweep installs a :class:`RunProgress`
for each run, which keeps the run's progress.json current (through
:meth:`disentangle.rundir.RunDir.write_progress`, the file's owner) (phase, done, total, unit,
pid, host, time; read by ``sweep status`` and the sweep's progress lines, locally and on
Slurm, from any host that sees the run directory) and writes a line to the run's log at
each phase change and every ``log_every`` seconds within one.

The sink is process-wide, like :mod:`logging`'s root logger, not passed through every
call: the loops that report sit several calls below the code that knows where the
output goes, and I_q's row blocks run in a thread pool (threads do not inherit context
variables). One run per process is how both executors run, so one sink per process is
enough.
"""
from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from typing import Callable, Iterator, Protocol

Sink = Callable[[str, int, "int | None", str], None]

_sink: Sink | None = None


def report(phase: str, done: int, total: int | None = None, unit: str = "") -> None:
    """Tell the installed sink (if any) that ``phase`` is at ``done`` of ``total`` ``unit``.
    Cheap when called per batch: the sink throttles its writes."""
    sink = _sink
    if sink is not None:
        sink(phase, int(done), None if total is None else int(total), unit)


@contextlib.contextmanager
def reporting(sink: Sink) -> Iterator[Sink]:
    """Install ``sink`` for the duration of the block (the previous one afterwards)."""
    global _sink
    previous, _sink = _sink, sink
    try:
        yield sink
    finally:
        _sink = previous


def describe(entry: dict | None) -> str:
    """One short phrase for a progress record: 'training 450/1,500 steps',
    'encoding 12,288/73,728 images (17%)', 'metric dci (4/10)'."""
    if not entry or not entry.get("phase"):
        return ""
    phase, done, total, unit = entry["phase"], entry.get("done", 0), entry.get("total"), entry.get("unit", "")
    if unit == "metrics" and total:
        return f"{phase} ({done + 1}/{total})"
    if total:
        text = f"{phase} {done:,}/{total:,}"
        if total >= 10_000:
            text += f" {unit} ({100 * done / total:.0f}%)" if unit else f" ({100 * done / total:.0f}%)"
        elif unit:
            text += f" {unit}"
        return text
    return f"{phase} {done:,} {unit}".rstrip() if done else phase


class ProgressFile(Protocol):
    """Where a run's progress record goes: :class:`disentangle.rundir.RunDir` (which owns
    progress.json; this layer sits below it and does not import it)."""

    def write_progress(self, entry: dict) -> None: ...


class RunProgress:
    """The sink of one run (``run``: its RunDir): ``progress.json`` at most every ``write_every`` seconds (and
    at each phase change), a log line through ``echo`` at each phase change and at most
    every ``log_every`` seconds within a phase. Thread-safe (I_q reports from a pool)."""

    def __init__(self, run: ProgressFile, echo: Callable[[str], None] = print,
                 log_every: float = 30.0, write_every: float = 2.0):
        self.run = run
        self.echo = echo
        self.log_every, self.write_every = float(log_every), float(write_every)
        self._lock = threading.Lock()
        self._phase: str | None = None
        self._written = self._logged = float("-inf")

    def __call__(self, phase: str, done: int, total: int | None, unit: str) -> None:
        with self._lock:
            now = time.monotonic()
            changed = phase != self._phase
            write = changed or now - self._written >= self.write_every or (total is not None and done >= total)
            log = changed or now - self._logged >= self.log_every
            if not (write or log):
                return
            self._phase = phase
            entry = {"phase": phase, "done": done, "total": total, "unit": unit, "pid": os.getpid(),
                     "host": socket.gethostname(), "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            if write:
                self._written = now
                self.run.write_progress(entry)   # never raises: progress must never fail a run
            if log:
                self._logged = now
                self.echo(f"progress {time.strftime('%H:%M:%S')} {describe(entry)}")


# --------------------------------------------------------------------------- terminal progress bars
def on_terminal(stream=None) -> bool:
    """Whether ``stream`` (default: stderr) is an interactive terminal."""
    import sys
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):   # no isatty, or a closed stream
        return False


def bar(total: int | None, desc: str, unit: str = "img", initial: int = 0, stream=None,
        mininterval: float = 0.5, unit_scale: bool = True):
    """A tqdm progress bar on stderr, shown only when stderr is a terminal (issue 23): in a
    redirected log a bar is a run of carriage returns (one 10 kB line per encoding); there
    the sweep's progress lines (:class:`RunProgress`) say what a run is doing. Disabled, it
    is a no-op with the same interface (update, close, context manager)."""
    import sys

    from tqdm import tqdm
    stream = sys.stderr if stream is None else stream
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, initial=initial, file=stream,
                dynamic_ncols=True, mininterval=mininterval, disable=not on_terminal(stream))
