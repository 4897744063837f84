"""Factor-grid arithmetic and sampling for grid datasets such as dSprites.

Knows no pixels: a :class:`GroundTruth` maps between factor classes and image indices
and samples factor classes with an explicit ``numpy.random.Generator``. Every metric
consumes this object, so metrics never see storage formats.

Image index = mixed-radix number of the factor classes, last factor fastest (the
official dSprites row order: posY fastest). A dataset file may hold a *sub-grid* of
dSprites (a subset of the class values of each factor, e.g. for fast tests); the
GroundTruth of such a file has the smaller factor sizes and the matching values, and
its classes are 0..size-1 within the sub-grid.

Nuisance factors (:class:`Nuisance`) are part of how an observation is made but are
never scored: smallNORB's instance (a discrete factor of the stored image grid) and the
colour, noise and Scream patch of the dSprites variants (continuous draws made when an
observation is produced, see ``disentangle.data.variants``). Discrete nuisance factors
are the LAST, fastest digits of the image index: image index = cell index x (product of
the nuisance sizes) + nuisance index, where the cell index is the mixed-radix number of
the scored factor classes. So ``classes_of`` still returns the scored classes only, and
``index_of`` of scored classes needs the nuisance drawn (a Generator) or given.
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


@dataclass(frozen=True)
class Nuisance:
    """A factor of the observation that is sampled, never scored.

    ``size``: number of classes of a discrete nuisance stored in the image grid (smallNORB's
    instance: 10), or None for a continuous draw made per observation (``distribution``
    says which, e.g. ``"uniform(0.5, 1, 3) per image"``)."""

    name: str
    distribution: str
    size: int | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "distribution": self.distribution, "size": self.size}

    @classmethod
    def from_json(cls, d: dict) -> "Nuisance":
        return cls(str(d["name"]), str(d["distribution"]), None if d.get("size") is None else int(d["size"]))


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """A full factorial grid of ground-truth factors.

    ``official_classes[k]`` gives, for each class of factor k in this grid, the class
    index in the full dSprites grid (identity for the full grid).
    """

    factor_names: tuple[str, ...]
    factor_values: tuple[np.ndarray, ...]
    official_classes: tuple[np.ndarray, ...] = field(default=None)  # type: ignore[assignment]
    nuisance: tuple[Nuisance, ...] = ()

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
        nuisance = tuple(self.nuisance)
        if any(not isinstance(n, Nuisance) for n in nuisance):
            raise ParameterError("nuisance", "must be Nuisance entries")
        if any(n.size is not None and n.size < 1 for n in nuisance):
            raise ParameterError("nuisance", "a discrete nuisance needs at least one class")
        if {n.name for n in nuisance} & set(self.factor_names) or len({n.name for n in nuisance}) != len(nuisance):
            raise ParameterError("nuisance", "nuisance names must be distinct and not factor names")
        object.__setattr__(self, "nuisance", nuisance)
        nsizes = np.array([n.size for n in nuisance if n.size is not None], dtype=np.int64)
        nbases = np.ones(len(nsizes), dtype=np.int64)
        for k in range(len(nsizes) - 2, -1, -1):
            nbases[k] = nbases[k + 1] * nsizes[k + 1]
        object.__setattr__(self, "_nuisance_sizes", nsizes)
        object.__setattr__(self, "_nuisance_bases", nbases)
        object.__setattr__(self, "_nuisance_cells", int(np.prod(nsizes)) if len(nsizes) else 1)

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
        return GroundTruth(self.factor_names, tuple(values), tuple(official), self.nuisance)

    # ----------------------------------------------------------------- properties
    @property
    def factor_sizes(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._sizes)

    @property
    def num_factors(self) -> int:
        return len(self.factor_names)

    @property
    def num_cells(self) -> int:
        """Number of scored factor combinations (= num_images without discrete nuisance)."""
        return int(np.prod(self._sizes))

    @property
    def num_images(self) -> int:
        return self.num_cells * self._nuisance_cells

    @property
    def discrete_nuisance(self) -> tuple[Nuisance, ...]:
        """The nuisance factors stored in the image grid, in index order (last fastest)."""
        return tuple(n for n in self.nuisance if n.size is not None)

    @property
    def is_full_dsprites(self) -> bool:
        return self.factor_names == DSPRITES_FACTOR_NAMES and self.factor_sizes == DSPRITES_FACTOR_SIZES

    def __eq__(self, other) -> bool:
        if not isinstance(other, GroundTruth):
            return NotImplemented
        return (self.factor_names == other.factor_names
                and self.factor_sizes == other.factor_sizes
                and all(np.allclose(a, b) for a, b in zip(self.factor_values, other.factor_values))
                and all(np.array_equal(a, b) for a, b in zip(self.official_classes, other.official_classes))
                and self.nuisance == other.nuisance)

    def __hash__(self):
        return hash((self.factor_names, self.factor_sizes))

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}={s}" for n, s in zip(self.factor_names, self.factor_sizes))
        extra = "".join(f"; nuisance {n.name}" + (f"={n.size}" if n.size else "") for n in self.nuisance)
        return f"GroundTruth({sizes}{extra}; {self.num_images} images)"

    # ----------------------------------------------------------------- arithmetic
    def index_of(self, classes, rng: np.random.Generator | None = None, nuisance_classes=None) -> np.ndarray:
        """Image indices of factor classes, shape (..., K) -> (...).

        With discrete nuisance factors the image also depends on them: pass their classes
        (``nuisance_classes``, shape (..., M)) or a Generator that draws each uniformly,
        one nuisance factor after another (disentanglement_lib's ``sample_all_factors``)."""
        classes = np.asarray(classes, dtype=np.int64)
        if classes.shape[-1] != self.num_factors:
            raise ParameterError("classes", f"expected {self.num_factors} factor classes per row, "
                                 f"got {classes.shape[-1]}")
        if np.any(classes < 0) or np.any(classes >= self._sizes):
            raise ParameterError("classes", "factor class out of range")
        cell = classes @ self._bases
        if self._nuisance_cells == 1:
            return cell
        if nuisance_classes is None:
            if rng is None:
                names = [n.name for n in self.discrete_nuisance]
                raise ParameterError("rng", f"the images also depend on the nuisance factor(s) {names}: "
                                     f"pass a numpy Generator to draw them (or their classes)")
            nuisance_classes = self.sample_nuisance_classes(cell.shape, rng)
        nuisance_classes = np.asarray(nuisance_classes, dtype=np.int64)
        if nuisance_classes.shape != cell.shape + (len(self._nuisance_sizes),):
            raise ParameterError("nuisance_classes", f"expected shape {cell.shape + (len(self._nuisance_sizes),)}")
        if np.any(nuisance_classes < 0) or np.any(nuisance_classes >= self._nuisance_sizes):
            raise ParameterError("nuisance_classes", "nuisance class out of range")
        return cell * self._nuisance_cells + nuisance_classes @ self._nuisance_bases

    def sample_nuisance_classes(self, shape, rng: np.random.Generator) -> np.ndarray:
        """Uniform classes of the discrete nuisance factors: shape + (M,) int64."""
        shape = tuple(np.atleast_1d(shape)) if not isinstance(shape, tuple) else shape
        if not len(self._nuisance_sizes):
            return np.zeros(shape + (0,), dtype=np.int64)
        return np.stack([rng.integers(0, s, size=shape) for s in self._nuisance_sizes], axis=-1).astype(np.int64)

    def _check_indices(self, indices) -> np.ndarray:
        indices = np.asarray(indices, dtype=np.int64)
        if np.any(indices < 0) or np.any(indices >= self.num_images):
            raise ParameterError("indices", f"image index out of range 0..{self.num_images - 1}")
        return indices

    def classes_of(self, indices) -> np.ndarray:
        """Scored factor classes of image indices, shape (...) -> (..., K)."""
        indices = self._check_indices(indices) // self._nuisance_cells
        return (indices[..., None] // self._bases) % self._sizes

    def nuisance_classes_of(self, indices) -> np.ndarray:
        """Classes of the discrete nuisance factors of image indices, shape (...) -> (..., M)."""
        indices = self._check_indices(indices) % self._nuisance_cells
        return (indices[..., None] // self._nuisance_bases) % self._nuisance_sizes

    def values_of(self, classes) -> np.ndarray:
        """Latent values of factor classes, shape (..., K) -> (..., K) float64."""
        classes = np.asarray(classes, dtype=np.int64)
        return np.stack([self.factor_values[k][classes[..., k]] for k in range(self.num_factors)], axis=-1)

    def all_classes(self) -> np.ndarray:
        """Scored classes of every image, in index order: (num_images, K) int64."""
        return self.classes_of(np.arange(self.num_images))

    # ----------------------------------------------------------------- sampling
    def sample_classes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n factor-class vectors, each factor uniform and independent (with replacement),
        drawn one factor after another as disentanglement_lib does: (n, K) int64."""
        return np.stack([rng.integers(0, s, size=n) for s in self.factor_sizes], axis=1).astype(np.int64)

    # ----------------------------------------------------------------- serialisation
    def to_json(self) -> dict:
        """Names, values, official classes and nuisance as JSON-able lists (file attributes)."""
        return {"factor_names": list(self.factor_names),
                "factor_values": [v.tolist() for v in self.factor_values],
                "official_classes": [c.tolist() for c in self.official_classes],
                "nuisance": [n.to_json() for n in self.nuisance]}

    @classmethod
    def from_json(cls, d: dict) -> "GroundTruth":
        return cls(tuple(d["factor_names"]), tuple(np.array(v) for v in d["factor_values"]),
                   tuple(np.array(c) for c in d["official_classes"]) if d.get("official_classes") else None,
                   tuple(Nuisance.from_json(n) for n in d.get("nuisance", ())))

    def with_nuisance(self, *nuisance: Nuisance) -> "GroundTruth":
        """The same grid with further (continuous) nuisance factors attached."""
        return GroundTruth(self.factor_names, self.factor_values, self.official_classes,
                           self.nuisance + tuple(nuisance))
