"""Device and thread resolution, in one place (training, evaluation, plots, sweeps).

``resolve_device`` turns "auto" / "cpu" / "cuda[:N]" into the device a run uses, and
refuses a GPU that is not there with one line. ``thread_limit`` sets torch's and the
BLAS/OpenMP pools' thread counts for a block and restores them; ``set_thread_env`` does
the same for a fresh process before numpy or torch are imported.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from disentangle.errors import ParameterError

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def resolve_device(device: str | None = "cpu") -> str:
    """'auto' -> 'cuda' when a GPU is visible, else 'cpu'; 'cpu' and 'cuda[:N]' as given.
    A GPU asked for without one, or an unknown name, is a ParameterError('device')."""
    import torch
    device = (device or "cpu").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" or device.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ParameterError("device", f"no CUDA GPU (no CUDA device is visible to this torch, "
                                 f"{torch.__version__}); use cpu or auto", value=device)
        return device
    if device != "cpu":
        raise ParameterError("device", "expected cpu, cuda or auto", value=repr(device))
    return device


def check_threads(threads: int | None) -> None:
    from disentangle.config import max_threads
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ParameterError("threads", f"must be an integer >= 1, got {threads!r}")
    if threads is not None and threads > max_threads():
        raise ParameterError("threads", f"must be between 1 and {max_threads()} (4 per core here), got {threads}")


@contextlib.contextmanager
def thread_limit(threads: int | None) -> Iterator[int]:
    """Limit torch and the BLAS/OpenMP pools (numpy, scikit-learn) to ``threads`` for the
    block (None: leave them as they are); yields torch's thread count inside."""
    check_threads(threads)
    import torch
    if threads is None:
        yield torch.get_num_threads()
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        limiter = threadpool_limits(limits=threads)
    except ImportError:  # threadpoolctl ships with scikit-learn; without it only torch is limited
        limiter = contextlib.nullcontext()
    try:
        with limiter:
            yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def set_thread_env(threads: int | None) -> None:
    """For a new process, before numpy/torch are imported: their pools read these once."""
    if threads:
        for var in THREAD_ENV_VARS:
            os.environ[var] = str(threads)
