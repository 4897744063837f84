"""color-, noisy- and scream-dSprites (disentanglement_lib ``data/ground_truth/dsprites.py``:
ColorDSprites, NoisyDSprites, ScreamDSprites).

The dSprites factors, with a nuisance drawn afresh at every observation from the caller's
numpy Generator, in disentanglement_lib's order of draws (its RandomState calls mapped to
the Generator's: ``uniform`` -> ``uniform``, ``randint(a, b)`` -> ``integers(a, b)``, high
exclusive as there):

- color: the binary image repeated to 3 channels, times one colour per image,
  ``uniform(0.5, 1, (n, 3))``;
- noisy: ``min(image + uniform(0, 1, (n, 64, 64, 3)), 1)``;
- scream: per image, in turn, ``x = integers(0, H - 64)``, ``y = integers(0, W - 64)``,
  ``u = uniform(0, 1, 3)``; ``patch = (scream[x:x+64, y:y+64] + u) / 2`` and the sprite's
  pixels set to ``1 - patch``. ``scream`` is the user's JPEG of The Scream,
  ``thumbnail((350, 274))`` (aspect kept) / 255, kept in ``data/scream.h5`` with the
  JPEG's sha256 (no published checksum pins it).

Arithmetic in float64 as there, cast to float32 at the end. ``images(indices)`` is one
fixed realisation per index: the nuisance of image i drawn from
``default_rng([seed, i])`` (independent of the batch it is asked in), so that a codes
table, H(X) and figures have fixed images; ``observations(indices, rng)`` is the
protocol's fresh draw. All three build on the dSprites file the dSprites rule picks
(official or rendered, recorded in the provenance).
"""
from __future__ import annotations

import abc

import json
import os
from pathlib import Path

import numpy as np

from disentangle.data.datasets import (DATA_DIR_ENV_VAR, DEFAULT_DATA_DIR, DatasetError, DSprites,
                                       IMAGE_SIZE)
from disentangle.data.ground_truth import Nuisance
from disentangle.data.sources import SourceFile

SCREAM_FORMAT = "disentangle-scream-1"
SCREAM_ENV_VAR = "DISENTANGLE_SCREAM"


class DSpritesVariant(DSprites):
    """A dSprites variant: 3 channels, continuous intensities, nuisance per observation."""

    channels = 3
    pixel_levels = None
    nuisance: Nuisance
    # no bit-packed fast path: the observation is not the binary mask
    packed = None

    def __init__(self, path, seed: int = 0, data=None):
        super().__init__(path, data=data)
        self.seed = int(seed)
        self.ground_truth = self.ground_truth.with_nuisance(self.nuisance)

    @property
    def has_random_nuisance(self) -> bool:
        return True

    def binary_hwc(self, indices) -> np.ndarray:
        """The dSprites masks as float64 (n, 64, 64, 3), disentanglement_lib's layout."""
        m = self.data.images(self.check_indices(indices)).astype(np.float64)[..., None]
        return np.repeat(m, 3, axis=3)

    @abc.abstractmethod
    def transform(self, masks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """(n, 64, 64, 3) float64 {0,1} -> observations (n, 64, 64, 3) float64."""

    def observations(self, indices, rng: np.random.Generator) -> np.ndarray:
        if rng is None:
            raise DatasetError(f"{self.name}: observations need a numpy Generator for the nuisance")
        x = self.transform(self.binary_hwc(indices), rng)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)

    def images(self, indices) -> np.ndarray:
        idx = self.check_indices(indices)
        masks = self.binary_hwc(idx)
        out = np.empty((len(idx), 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
        for j, i in enumerate(idx):
            x = self.transform(masks[j:j + 1], np.random.default_rng([self.seed, int(i)]))
            out[j] = x[0].transpose(2, 0, 1)
        return out

    def torch_batch(self, indices, device, rng=None):
        """Observations drawn on the CPU from ``rng`` (so a run is bit-identical on any
        device and on resume), sent as float32."""
        import torch
        return torch.from_numpy(self.observations(indices, rng)).to(device)

    @property
    def provenance(self) -> dict:
        base = self.data.provenance
        return {"dataset": self.name, "variant_of": "dsprites", "images_seed": self.seed,
                "source": base["source"], "path": base["path"], "content_sha256": base.get("content_sha256"),
                "source_checksum": base.get("source_checksum"), "renderer_version": base.get("renderer_version"),
                "num_images": base["num_images"], "factor_sizes": base["factor_sizes"],
                **({"content_check": base["content_check"]} if base.get("content_check") else {})}

    @property
    def source_label(self) -> str:
        return f"{self.data.source_label}"


class ColorDSprites(DSpritesVariant):
    name = "color-dsprites"
    nuisance = Nuisance("color", "uniform(0.5, 1, 3) per image")

    def transform(self, masks, rng):
        color = rng.uniform(0.5, 1, (len(masks), 1, 1, 3))
        return masks * color


class NoisyDSprites(DSpritesVariant):
    name = "noisy-dsprites"
    nuisance = Nuisance("noise", "uniform(0, 1, (64, 64, 3)) per image")

    def transform(self, masks, rng):
        noise = rng.uniform(0, 1, (len(masks), IMAGE_SIZE, IMAGE_SIZE, 3))
        return np.minimum(masks + noise, 1.0)


class ScreamDSprites(DSpritesVariant):
    name = "scream-dsprites"
    nuisance = Nuisance("scream_patch", "crop integers(0, H-64), integers(0, W-64); colour uniform(0, 1, 3)")
    default_file = "scream.h5"       # what `data fetch scream-dsprites` writes
    sources = (SourceFile("The_Scream.jpg", "https://upload.wikimedia.org/wikipedia/commons/f/f4/The_Scream.jpg"),)

    def __init__(self, path, seed: int = 0, scream=None, data=None):
        import h5py
        super().__init__(path, seed=seed, data=data)
        self.scream_path = resolve_scream_path(scream)
        try:
            with h5py.File(self.scream_path, "r") as f:
                if f.attrs.get("format") != SCREAM_FORMAT:
                    raise DatasetError(f"{self.scream_path}: not a disentangle Scream file")
                self.scream = np.asarray(f["scream"][...], dtype=np.float64) / 255.0
                self.scream_attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
        except DatasetError:
            raise
        except (OSError, KeyError) as exc:
            raise DatasetError(f"{self.scream_path}: unreadable Scream file ({exc})") from None

    def transform(self, masks, rng):
        out = np.empty_like(masks)
        h, w = self.scream.shape[:2]
        for i in range(len(masks)):
            x = rng.integers(0, h - 64)
            y = rng.integers(0, w - 64)
            background = (self.scream[x:x + 64, y:y + 64] + rng.uniform(0, 1, size=3)) / 2.0
            mask = masks[i] == 1
            background[mask] = 1 - background[mask]
            out[i] = background
        return out

    @property
    def provenance(self) -> dict:
        return {**super().provenance, "scream_path": str(self.scream_path),
                "scream_sha256": json.loads(self.scream_attrs["source_files"])[0]["sha256"]}

    @classmethod
    def convert(cls, paths, out, attrs, progress=None):
        """The JPEG -> ``thumbnail((350, 274))`` uint8 array in an HDF5 file with its sha256."""
        import PIL
        from PIL import Image, UnidentifiedImageError

        from disentangle.io import atomic_h5
        (path,) = paths
        try:
            with Image.open(path) as img:
                img = img.convert("RGB") if img.mode != "RGB" else img
                img.thumbnail((350, 274))
                arr = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise DatasetError(f"{path}: not an image Pillow can read ({exc}); nothing was written") from None
        if arr.shape[0] <= 64 or arr.shape[1] <= 64:
            raise DatasetError(f"{path}: the thumbnail is {arr.shape[0]}x{arr.shape[1]}, needs more than 64x64; "
                               f"nothing was written")
        with atomic_h5(out) as f:
            f.create_dataset("scream", data=arr)
            f.attrs.update({"format": SCREAM_FORMAT, "pillow_version": PIL.__version__, **attrs})
        return Path(out)


def resolve_scream_path(explicit=None) -> Path:
    """Explicit, else $DISENTANGLE_SCREAM, else <data dir>/scream.h5."""
    path = Path(explicit or os.environ.get(SCREAM_ENV_VAR)
                or Path(os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_DIR) / "scream.h5")
    if not path.is_file():
        raise DatasetError(f"{path}: no Scream file (run `disentangle data fetch scream-dsprites "
                           f"[--file The_Scream.jpg]`)")
    return path
