"""Device and thread resolution, in one place (training, evaluation, plots, sweeps).

``resolve_device`` turns "auto" / "cpu" / "cuda[:N]" into the device a run uses, and
refuses a GPU that is not there with one line. ``thread_limit`` sets torch's and the
BLAS/OpenMP pools' thread counts for a block and restores them; ``set_thread_env`` does
the same for a fresh process before numpy or torch are imported. ``tune_allocator`` keeps
glibc's malloc from returning and re-faulting torch's tensor memory at every step.
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


# glibc mallopt parameters (malloc.h) and the values set: tensors up to 32 MiB (the largest
# the fixed threshold allows on 64-bit) come from the heap, and up to 1 GiB of freed heap is
# kept instead of being trimmed back to the kernel
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD, _TRIM_THRESHOLD = 32 << 20, 1 << 30
_ALLOCATOR_ENV = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
_allocator_state: str | None = None


def tune_allocator() -> str:
    """Fix glibc malloc's mmap threshold (32 MiB) and trim threshold (1 GiB) for this
    process, once; returns what was done, for the run's records.

    With glibc's defaults (a dynamic mmap threshold and a trim threshold of twice it),
    the activations of a training step are freed back to the kernel and faulted in again
    at the next, and the kernel's page faults take a large share of the CPU time
    (docs/performance.md has the measurements). Left alone where the user set glibc's own MALLOC_*
    variables, and off glibc (macOS, musl), where the call does not exist."""
    global _allocator_state
    if _allocator_state is not None:
        return _allocator_state
    if any(v in os.environ for v in _ALLOCATOR_ENV):
        _allocator_state = "glibc defaults (MALLOC_* set in the environment)"
        return _allocator_state
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        ok = (libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError):
        ok = False
    _allocator_state = ("glibc mmap threshold 32 MiB, trim threshold 1 GiB" if ok
                        else "system defaults (no glibc mallopt)")
    return _allocator_state


def set_thread_env(threads: int | None) -> None:
    """For a new process, before numpy/torch are imported: their pools read these once."""
    if threads:
        for var in THREAD_ENV_VARS:
            os.environ[var] = str(threads)
