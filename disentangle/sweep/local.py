"""The local executor: each run in its own spawned process (fresh thread pools), at most
``n_jobs`` at once; workers die with their sweep (Linux's parent-death signal); one
line per run as it starts and ends and a progress line while they run."""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
import time
from typing import Callable

from disentangle.devices import set_thread_env
from disentangle.rundir import RunDir
from disentangle.sweep.execute import execute_run, outcome_line, record_death
from disentangle.sweep.state import running_progress, utc_now


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker die when its sweep does (even by SIGKILL): Linux's parent-death
    signal. A worker left running would finish its run unobserved, holding the lock."""
    if sys.platform.startswith("linux"):
        import ctypes
        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the sweep died before the signal was armed
        os._exit(1)


def _worker_main(job: dict, conn, parent_pid: int | None = None) -> None:
    """Body of one local worker process: its output goes to <run>/sweep.log; the outcome
    goes back through ``conn``."""
    if parent_pid is not None:
        _die_with_parent(parent_pid)
    log_fd = RunDir(job["run_dir"]).open_log_fd()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    # Ctrl-C reaches the whole process group; the parent decides what an interrupt means
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print(f"--- {utc_now()} pid {os.getpid()} on {socket.gethostname()}: {job['name']} "
          f"({job['config'].get('threads')} thread(s))", flush=True)
    set_thread_env(job["config"].get("threads"))
    outcome = execute_run(job)
    print(f"--- {utc_now()} {outcome['result']}: {outcome['action']}"
          + (f" ({outcome['reason']})" if outcome["reason"] else ""), flush=True)
    try:
        conn.send(outcome)
        conn.close()
    except OSError:  # BrokenPipeError: the sweep is gone; the run's files say what happened
        print("--- the sweep that started this worker is gone; outcome not reported", flush=True)


def _signal_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            sig = signal.Signals(-exitcode).name
        except ValueError:
            sig = f"signal {-exitcode}"
        return f"worker process killed by {sig}"
    return f"worker process exited with status {exitcode} without reporting"


def run_local(jobs: list[dict], n_jobs: int, echo: Callable[[str], None],
              progress_every: float = 30.0) -> list[dict]:
    """Run ``jobs`` in at most ``n_jobs`` separate processes at once (spawned, so each
    starts with fresh thread pools); one line per run as it starts and ends, and a
    summary line every ``progress_every`` seconds."""
    import multiprocessing
    from multiprocessing.connection import wait

    ctx = multiprocessing.get_context("spawn")
    pending = list(jobs)
    running: dict[int, tuple] = {}
    outcomes: list[dict] = []
    total = len(jobs)
    last_progress, last_line = time.monotonic(), ""
    # a SIGTERM (kill, scancel of a job running the sweep) stops the workers too, as Ctrl-C does
    previous = _raise_on_sigterm()
    try:
        while pending or running:
            while pending and len(running) < n_jobs:
                job = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker_main, args=(job, send, os.getpid()), name=f"sweep {job['name']}",
                                   daemon=False)
                proc.start()
                send.close()
                running[proc.sentinel] = (proc, recv, job)
                echo(f"  start   {job['name']} (pid {proc.pid}, {job['config'].get('threads')} thread(s), "
                     f"log {RunDir(job['run_dir']).log_path})")
            ready = wait(list(running), timeout=max(1.0, progress_every))
            for sentinel in ready:
                proc, recv, job = running.pop(sentinel)
                proc.join()
                outcome = None
                with contextlib.suppress(EOFError, OSError):
                    if recv.poll():
                        outcome = recv.recv()
                recv.close()
                if outcome is None:
                    outcome = record_death(job, _signal_reason(proc.exitcode))
                outcomes.append(outcome)
                echo(outcome_line(outcome, len(outcomes), total))
            if running and time.monotonic() - last_progress >= progress_every:
                # repeat an unchanged line only every 10 minutes
                line = f"  [{len(outcomes)}/{total}] running: {running_progress(j for _, _, j in running.values())}"
                if line != last_line or time.monotonic() - last_progress >= 600:
                    echo(line)
                    last_line, last_progress = line, time.monotonic()
    except KeyboardInterrupt:
        echo("  interrupted: stopping the workers; run the same command again to resume")
        for proc, _, _ in running.values():
            proc.terminate()
        for proc, _, _ in running.values():
            proc.join(timeout=30)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return outcomes


def _raise_on_sigterm():
    import threading
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    return signal.signal(signal.SIGTERM, handler)
