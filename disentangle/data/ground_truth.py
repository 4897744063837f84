"""Factor-grid arithmetic and sampling for grid datasets such as dSprites.

Knows no pixels: a :class:`GroundTruth` maps between factor classes and image indices
and samples factor classes with an explicit ``numpy.random.Generator``. Every metric
consumes this object, so metrics never see storage formats.

Image index = mixed-radix number of the factor classes, last factor fastest (the
official dSprites row order: posY fastest). A dataset file may hold a *sub-grid* of
dSprites (a subset of the class values of each factor, e.g. for fast tests); the
GroundTruth of such a file has the smaller factor sizes and the matching values, and
its classes are 0..size-1 within the sub-grid.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from disentangle.errors import ParameterError

DSPRITES_FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
DSPRITES_FACTOR_SIZES = (3, 6, 40, 32, 32)


def dsprites_factor_values() -> tuple[np.ndarray, ...]:
    """The official latent values of the five dSprites factors (DSPRITES.md section 2)."""
    return (
        np.array([1.0, 2.0, 3.0]),                 # shape: square, ellipse, heart
        np.linspace(0.5, 1.0, 6),                  # scale
        np.linspace(0.0, 2.0 * np.pi, 40),         # orientation: 0 and 2*pi both included
        np.linspace(0.0, 1.0, 32),                 # pos_x
        np.linspace(0.0, 1.0, 32),                 # pos_y
    )


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """A full factorial grid of ground-truth factors.

    ``official_classes[k]`` gives, for each class of factor k in this grid, the class
    index in the full dSprites grid (identity for the full grid).
    """

    factor_names: tuple[str, ...]
    factor_values: tuple[np.ndarray, ...]
    official_classes: tuple[np.ndarray, ...] = field(default=None)  # type: ignore[assignment]

    def __post_init__(self):
        if len(self.factor_names) != len(self.factor_values):
            raise ParameterError("factor_values", "factor_names and factor_values differ in length")
        values = tuple(np.asarray(v, dtype=np.float64).reshape(-1) for v in self.factor_values)
        if any(len(v) == 0 for v in values):
            raise ParameterError("factor_values", "every factor needs at least one value")
        object.__setattr__(self, "factor_names", tuple(self.factor_names))
        object.__setattr__(self, "factor_values", values)
        official = self.official_classes
        if official is None:
            official = tuple(np.arange(len(v)) for v in values)
        official = tuple(np.asarray(c, dtype=np.int64).reshape(-1) for c in official)
        if [len(c) for c in official] != [len(v) for v in values]:
            raise ParameterError("official_classes", "must match factor_values in length")
        object.__setattr__(self, "official_classes", official)
        sizes = np.array([len(v) for v in values], dtype=np.int64)
        # bases[k] = product of the sizes of the factors after k (last factor fastest)
        bases = np.ones(len(sizes), dtype=np.int64)
        for k in range(len(sizes) - 2, -1, -1):
            bases[k] = bases[k + 1] * sizes[k + 1]
        object.__setattr__(self, "_sizes", sizes)
        object.__setattr__(self, "_bases", bases)

    # ----------------------------------------------------------------- construction
    @classmethod
    def dsprites(cls) -> "GroundTruth":
        """The full dSprites grid: 3 x 6 x 40 x 32 x 32 = 737,280 images."""
        return cls(DSPRITES_FACTOR_NAMES, dsprites_factor_values())

    def subgrid(self, keep: dict[str, Sequence[int]]) -> "GroundTruth":
        """A grid keeping, for each named factor, the listed classes (others kept whole).

        >>> GroundTruth.dsprites().subgrid({"orientation": [0, 10], "pos_x": range(0, 32, 4)})
        """
        unknown = set(keep) - set(self.factor_names)
        if unknown:
            raise ParameterError("keep", f"unknown factor(s) {sorted(unknown)}; known: {list(self.factor_names)}")
        values, official = [], []
        for name, vals, off in zip(self.factor_names, self.factor_values, self.official_classes):
            idx = np.arange(len(vals)) if name not in keep else np.asarray(list(keep[name]), dtype=np.int64)
            if idx.size == 0 or idx.min() < 0 or idx.max() >= len(vals) or len(np.unique(idx)) != idx.size:
                raise ParameterError("keep", f"factor {name!r}: classes must be distinct and within "
                                     f"0..{len(vals) - 1}")
            values.append(vals[idx])
            official.append(off[idx])
        return GroundTruth(self.factor_names, tuple(values), tuple(official))

    # ----------------------------------------------------------------- properties
    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._sizes)

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

    @property
    def num_images(self) -> int:
        return int(np.prod(self._sizes))

    @property
    def is_full_dsprites(self) -> bool:
        return self.factor_names == DSPRITES_FACTOR_NAMES and self.factor_sizes == DSPRITES_FACTOR_SIZES

    def __eq__(self, other) -> bool:
        if not isinstance(other, GroundTruth):
            return NotImplemented
        return (self.factor_names == other.factor_names
                and self.factor_sizes == other.factor_sizes
                and all(np.allclose(a, b) for a, b in zip(self.factor_values, other.factor_values))
                and all(np.array_equal(a, b) for a, b in zip(self.official_classes, other.official_classes)))

    def __hash__(self):
        return hash((self.factor_names, self.factor_sizes))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        return f"GroundTruth({sizes}; {self.num_images} images)"

    # ----------------------------------------------------------------- arithmetic
    def index_of(self, classes) -> np.ndarray:
        """Image indices of factor classes, shape (..., K) -> (...)."""
        classes = np.asarray(classes, dtype=np.int64)
        if classes.shape[-1] != self.num_factors:
            raise ParameterError("classes", f"expected {self.num_factors} factor classes per row, "
                                 f"got {classes.shape[-1]}")
        if np.any(classes < 0) or np.any(classes >= self._sizes):
            raise ParameterError("classes", "factor class out of range")
        return classes @ self._bases

    def classes_of(self, indices) -> np.ndarray:
        """Factor classes of image indices, shape (...) -> (..., K)."""
        indices = np.asarray(indices, dtype=np.int64)
        if np.any(indices < 0) or np.any(indices >= self.num_images):
            raise ParameterError("indices", f"image index out of range 0..{self.num_images - 1}")
        return (indices[..., None] // self._bases) % self._sizes

    def values_of(self, classes) -> np.ndarray:
        """Latent values of factor classes, shape (..., K) -> (..., K) float64."""
        classes = np.asarray(classes, dtype=np.int64)
        return np.stack([self.factor_values[k][classes[..., k]] for k in range(self.num_factors)], axis=-1)

    def all_classes(self) -> np.ndarray:
        """Classes of every image, in index order: (num_images, K) int64."""
        return self.classes_of(np.arange(self.num_images))

    # ----------------------------------------------------------------- sampling
    def sample_classes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor-class vectors, each factor uniform and independent (with replacement),
        drawn one factor after another as disentanglement_lib does: (n, K) int64."""
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=1).astype(np.int64)
