"""Figures of one model's images: latent traversals (PNG/PDF grid, GIF) and reconstructions,
drawn from the arrays :mod:`disentangle.evaluation.figure_data` computes; grey images inverted
(the object dark on white, as papers print dSprites), colour as is.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from disentangle.errors import UserError
from disentangle.plots.figure import figure_style, new_figure


# --------------------------------------------------------------------------- runs: model, data
def _run_title(run_name: str, data_label: str) -> str:
    return f"{run_name} · data: {data_label}"


# --------------------------------------------------------------------------- traversal
# In display space (what imshow is given): grey images are drawn inverted (the object dark
# on white, as papers print dSprites), colour images as they are; white gaps and blanks,
# light grey separators between cells.
_WHITE, _SEPARATOR = 1.0, 0.88


def _display(image) -> np.ndarray:
    """One (C, 64, 64) image in [0, 1] (or a grey (64, 64) one) as (64, 64, C) display
    values: grey inverted, colour unchanged."""
    image = np.asarray(image, dtype=np.float64)
    if image.ndim == 2:
        image = image[None]
    if image.shape[0] == 1:
        return 1.0 - image.transpose(1, 2, 0)
    return np.clip(image.transpose(1, 2, 0), 0.0, 1.0)


def _show(ax, montage):
    """imshow of a (H, W, C) display montage: grey (C = 1) with the grey colour map (the
    array drawn is 2-D), colour as RGB."""
    if montage.shape[-1] == 1:
        return ax.imshow(montage[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    return ax.imshow(montage, interpolation="nearest")


def traversal(t):
    """Latent traversals as computed by :func:`disentangle.evaluation.figure_data.traversals`
    (``t``): rows are dimensions sorted by their KL (most informative first) and labelled
    with it; one panel per base image, the base image and its reconstruction at the left.
    Colour images (C = 3) are drawn in colour, grey ones (C = 1) in grey.
    ``fig.traversal_info`` holds what was drawn: dimension order, KL per dimension, image
    indices, sweep values."""
    order, kl, values, n_images, steps = t.order, t.kl.kl, t.values, len(t.indices), len(t.values)
    channels = _display(t.originals[0]).shape[-1]
    with figure_style():
        cell = 0.34  # inches per 64x64 image: small multiples stay legible, 3 panels fit a page width
        fig = new_figure(1.1 + n_images * (steps + 2.3) * cell, 0.9 + len(order) * cell * 1.05)
        axes = fig.subplots(1, n_images, squeeze=False)[0]
        gap = 6
        blank = np.full((64, 64, channels), _WHITE)
        for b, ax in enumerate(axes):
            # base image and its reconstruction in the first two columns, a gap, then the sweep
            rows = []
            for r in range(len(order)):
                left = ([_display(t.originals[b]), _display(t.reconstructions[b])] if r == 0 else [blank, blank])
                cells = []
                for image in t.grids[b][r]:
                    cells += [_display(image), np.full((64, 1, channels), _SEPARATOR)]
                row = np.concatenate(left + [np.full((64, gap, channels), _WHITE)] + cells[:-1], axis=1)
                rows.append(np.pad(row, ((0, gap // 2), (0, 0), (0, 0)), constant_values=_SEPARATOR))
            im = _show(ax, np.concatenate(rows, axis=0))
            im.set_gid(f"traversal:{b}")
            row_h = 64 + gap // 2
            ax.set_yticks([r * row_h + 32 for r in range(len(order))])
            ax.set_yticklabels([f"z{int(d)}  KL {kl[d]:.2f}" for d in order] if b == 0 else [])
            x0 = 2 * 64 + gap
            ax.set_xticks([32, 96] + [x0 + 32 + 65 * k for k in range(steps)])
            ax.set_xticklabels(["input", "recon."] + [f"{v:+.1f}".replace("-", "\u2212") for v in values], fontsize=6)
            ax.tick_params(length=0)
            ax.grid(False)
            for spine in ax.spines.values():
                spine.set_visible(False)
            ax.set_title(f"image {int(t.indices[b])}", fontsize=8)
        fig.suptitle(f"Latent traversals, z_d ∈ [−{t.span:g}, {t.span:g}] prior std; rows sorted by KL (nats, "
                     f"mean over {t.kl.description})\n{_run_title(t.run_name, t.data_label)}", fontsize=9)
    fig.traversal_info = {"order": order, "kl": kl, "indices": t.indices, "values": values}
    return fig


GIF_FRAME_MS = 250   # per traversal value: a ±3 sweep of 9 values loops in about 2 s
GIF_SCALE = 2        # pixels per image pixel (64x64 cells are small on a screen)


def traversal_frames(t, scale: int = GIF_SCALE) -> list[np.ndarray]:
    """The animated traversal's frames, one per sweep value: uint8 (H, W, C) images, each
    the grid of latents (rows, sorted by KL as in :func:`traversal`) × base images
    (columns) at that value, grey inverted as in the figure, 2-pixel separators."""
    rows, n_images, steps = len(t.order), len(t.indices), len(t.values)
    channels = _display(t.originals[0]).shape[-1]
    sep = 2
    height, width = rows * 64 + (rows - 1) * sep, n_images * 64 + (n_images - 1) * sep
    frames = []
    for k in range(steps):
        frame = np.full((height, width, channels), _SEPARATOR)
        for r in range(rows):
            for b in range(n_images):
                y, x = r * (64 + sep), b * (64 + sep)
                frame[y:y + 64, x:x + 64] = _display(t.grids[b][r][k])
        frame = np.rint(frame * 255.0).astype(np.uint8)
        frames.append(frame.repeat(scale, axis=0).repeat(scale, axis=1) if scale > 1 else frame)
    return frames


def save_traversal_gif(t, out: str | os.PathLike, duration_ms: int = GIF_FRAME_MS,
                       scale: int = GIF_SCALE) -> Path:
    """Write :func:`traversal_frames` as an animated GIF that loops forever (Pillow),
    atomically; ``duration_ms`` per frame. Colour frames get an adaptive 256-colour
    palette each; the GIF writer merges consecutive identical frames (summing their
    durations), so a traversal that changes nothing has fewer frames."""
    from PIL import Image

    from disentangle.io import atomic_path
    out = Path(out)
    if out.suffix.lower() != ".gif":
        raise UserError(f"{out}: a traversal GIF's name must end in .gif")
    if isinstance(duration_ms, bool) or not isinstance(duration_ms, int) or duration_ms < 20:
        raise UserError(f"GIF frame duration must be an integer of at least 20 ms, got {duration_ms!r}")
    images = []
    for frame in traversal_frames(t, scale):
        if frame.shape[-1] == 1:
            images.append(Image.fromarray(frame[..., 0], mode="L"))
        else:
            images.append(Image.fromarray(frame, mode="RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256))
    with atomic_path(out) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return out


# --------------------------------------------------------------------------- reconstructions
def reconstructions(r):
    """Originals (top row) over reconstructions from the posterior mean (bottom row), as
    computed by :func:`disentangle.evaluation.figure_data.reconstructions` (``r``); each
    reconstruction is labelled with its distortion −log p(x|z) (nats; for a Gaussian
    decoder a density). Colour images are drawn in colour, grey ones in grey (inverted).
    ``fig.reconstruction_info`` holds the image indices and their distortions."""
    n_images = len(r.indices)
    with figure_style():
        fig = new_figure(0.95 * n_images + 0.9, 2.6)
        axes = fig.subplots(2, n_images, squeeze=False)
        for k in range(n_images):
            for row, img in enumerate((r.originals[k], r.reconstructions[k])):
                ax = axes[row][k]
                im = _show(ax, _display(img))
                im.set_gid(f"{'original' if row == 0 else 'reconstruction'}:{k}")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.grid(False)
                for spine in ax.spines.values():
                    spine.set_edgecolor("0.7")
            axes[1][k].set_xlabel(f"{r.distortion[k]:.1f}", fontsize=7)
        axes[0][0].set_ylabel("input", fontsize=8)
        axes[1][0].set_ylabel("recon.", fontsize=8)
        fig.suptitle("Reconstructions from the posterior mean; below: −log p(x|z) (nats)"
                     + (f", {r.likelihood} decoder: a density" if r.likelihood == "gaussian" else ""),
                     fontsize=9)
        fig.supxlabel(_run_title(r.run_name, r.data_label), fontsize=8)
    fig.reconstruction_info = {"indices": r.indices, "distortion": r.distortion}
    return fig
