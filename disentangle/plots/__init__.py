"""Figures for papers: rate–distortion plane, metric against regularisation strength,
latent traversals, reconstructions, training curves.

Every figure function returns a :class:`matplotlib.figure.Figure` built without pyplot (so no
global figure registry, no interactive backend, nothing to close), styled with seaborn,
and :func:`save_figure` writes it as PNG (raster, for slides and the README) and PDF
(vector, for the paper) through the Agg/PDF canvases. matplotlib and seaborn are
imported inside the functions: ``import disentangle.plots`` is cheap.

Titles name the data source of the runs shown; axes carry units (nats). Figures draw the
arrays and DataFrames they are given: what a run's figures need computed (traversal grids,
reconstructions, KL per dimension) comes from :mod:`disentangle.evaluation.figure_data`.

The package's modules, one job each: :mod:`~disentangle.plots.figure` (style, saving, where
figures go), :mod:`~disentangle.plots.study` (figures of a study's table),
:mod:`~disentangle.plots.images` (traversals, reconstructions) and
:mod:`~disentangle.plots.training` (training curves). Their public functions are named here.
"""
from __future__ import annotations

from disentangle.plots.figure import (FIGURE_CREATOR, PNG_DPI, default_out, default_training_out, metric_label,
                                      output_paths, save_figure)
from disentangle.plots.images import (GIF_FRAME_MS, GIF_SCALE, reconstructions, save_traversal_gif, traversal,
                                      traversal_frames)
from disentangle.plots.study import (FACET_COLUMNS, left_out_metrics, method_label, metric_correlation,
                                     metric_distribution, metric_vs_beta, metric_vs_strength, rate_distortion)
from disentangle.plots.training import training

__all__ = ["FACET_COLUMNS", "FIGURE_CREATOR", "GIF_FRAME_MS", "GIF_SCALE", "PNG_DPI", "default_out",
           "default_training_out", "left_out_metrics", "method_label", "metric_correlation", "metric_distribution",
           "metric_label", "metric_vs_beta", "metric_vs_strength", "output_paths", "rate_distortion",
           "reconstructions", "save_figure", "save_traversal_gif", "training", "traversal", "traversal_frames"]
