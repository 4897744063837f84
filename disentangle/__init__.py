"""disentangle: a disentanglement benchmarking toolkit (beta-VAE on dSprites, the
published metrics, rate/distortion estimates, reports and figures).

Heavy modules (torch, sklearn, seaborn) are imported lazily by the functions that need
them, so ``import disentangle`` is cheap and works without them.
"""
from disentangle._version import __version__

__all__ = ["__version__", "collect"]


def collect(results_dir):
    """One row per run under ``results_dir``: configuration and every score (pandas)."""
    from disentangle.results import collect as _collect
    return _collect(results_dir)
