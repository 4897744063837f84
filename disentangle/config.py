"""Run configuration of one β-VAE training run: a typed dataclass, its JSON round trip,
validation and the named presets.

The configuration is saved as ``config.json["config"]`` in the run directory; reports
read their columns from there. Two groups of fields:

- *identity* fields decide the numbers a run produces (objective, β, steps, seed, ...).
  A run directory holding a different identity is refused, naming the keys that differ.
- *execution* fields (:data:`EXECUTION_KEYS`) say how the run is executed (device,
  threads, checkpoint and log cadence, dataset path, compilation); changing them between
  an interrupted run and its resumption is allowed. The dataset itself is pinned by its
  content checksum, recorded in ``config.json["data"]``, not by its path.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any

from disentangle.errors import UserError

OBJECTIVES = ("beta-h", "beta-b")
LIKELIHOODS = ("bernoulli", "gaussian")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("float32", "bf16-mixed")

# Upper bounds on sizes: beyond them a run cannot fit in memory or makes no sense for
# 64x64 images, so they are refused up front rather than failing out of memory later.
MAX_LATENT_DIM = 4096
MAX_BATCH_SIZE = 65_536


def max_threads() -> int:
    """Most threads a run may ask for: 4 per core here (at least 64, for submit hosts
    smaller than the nodes they submit to)."""
    return max(64, 4 * (os.cpu_count() or 1))


# How a run is executed, not what it computes: these may change on resume. ("preset" is
# only a label: its values are copied into the other fields.)
EXECUTION_KEYS = frozenset({"data", "device", "threads", "checkpoint_every", "log_every", "preset"})

# Named settings. "dlib" is the disentanglement_lib β-VAE / annealed-VAE study (300k steps
# of Adam 1e-4, batch 64; capacity raised over 100k steps); "cpu-short" makes a run that
# ends in minutes on a laptop CPU and still learns the position and scale factors.
PRESETS: dict[str, dict[str, Any]] = {
    "dlib": {"steps": 300_000, "batch_size": 64, "lr": 1e-4, "latent_dim": 10,
             "capacity_steps": 100_000, "checkpoint_every": 5_000, "log_every": 500},
    "cpu-short": {"steps": 10_000, "batch_size": 64, "lr": 1e-4, "latent_dim": 10,
                  "capacity_steps": 5_000, "checkpoint_every": 1_000, "log_every": 100},
}


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are the "cpu-short" preset."""

    objective: str = "beta-h"          # "beta-h": recon + β·KL;  "beta-b": recon + γ·|KL − C|
    beta: float = 1.0
    gamma: float = 1000.0
    capacity_max: float = 25.0         # nats
    capacity_steps: int = 5_000        # C rises linearly from 0 to capacity_max over these steps
    likelihood: str = "bernoulli"      # "bernoulli" | "gaussian" (sum of squared errors)
    latent_dim: int = 10
    batch_size: int = 64
    lr: float = 1e-4
    steps: int = 10_000
    seed: int = 0
    data: str | None = None            # dataset path; None = the dataset rule
    device: str = "auto"
    threads: int | None = None         # torch intra-op threads; None = torch's default
    checkpoint_every: int = 1_000
    log_every: int = 100
    # "bf16-mixed": convolutions and hidden layers in bfloat16 (posterior head, decoder
    # stem and output layer, loss and Adam in float32); ~1.7x faster on CPUs with native
    # bfloat16 (AVX512-BF16/AMX), same loss curve within seed noise (README, Training)
    precision: str = "float32"
    preset: str | None = field(default=None)

    def __post_init__(self) -> None:
        # 4 and 4.0 are the same β: store floats, so config.json compares and reads alike
        for name in ("beta", "gamma", "capacity_max", "lr"):
            value = getattr(self, name)
            if isinstance(value, int) and not isinstance(value, bool):
                setattr(self, name, float(value))

    # ------------------------------------------------------------------ JSON round trip
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown training configuration key(s): {', '.join(unknown)}")
        return cls(**d)

    @classmethod
    def from_preset(cls, name: str | None, **overrides: Any) -> "TrainConfig":
        """The preset's values, then every override that is not None."""
        values: dict[str, Any] = {}
        if name is not None:
            if name not in PRESETS:
                raise UserError(f"--preset: unknown preset {name!r} (choose from {', '.join(PRESETS)})")
            values.update(PRESETS[name])
            values["preset"] = name
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the numbers (everything but :data:`EXECUTION_KEYS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in EXECUTION_KEYS}

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Raise UserError naming the option for any invalid value; return self."""
        def need(cond: bool, option: str, msg: str) -> None:
            if not cond:
                raise UserError(f"--{option.replace('_', '-')}: {msg}")

        need(self.objective in OBJECTIVES, "objective",
             f"unknown objective {self.objective!r} (choose from {', '.join(OBJECTIVES)})")
        need(self.likelihood in LIKELIHOODS, "likelihood",
             f"unknown likelihood {self.likelihood!r} (choose from {', '.join(LIKELIHOODS)})")
        need(self.device in DEVICES, "device", f"unknown device {self.device!r} (choose from {', '.join(DEVICES)})")
        for name in ("beta", "gamma", "capacity_max", "lr"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
                 and abs(value) != float("inf"), name, f"must be a finite number, got {value!r}")
        need(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        need(self.gamma >= 0, "gamma", f"must be >= 0, got {self.gamma}")
        need(self.capacity_max >= 0, "capacity_max", f"must be >= 0, got {self.capacity_max}")
        need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        for name, low in (("steps", 1), ("latent_dim", 1), ("batch_size", 1), ("capacity_steps", 1),
                          ("checkpoint_every", 1), ("log_every", 1), ("seed", 0)):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), name, f"must be an integer, got {value!r}")
            need(value >= low, name, f"must be >= {low}, got {value}")
        need(self.latent_dim <= MAX_LATENT_DIM, "latent_dim", f"must be <= {MAX_LATENT_DIM}, got {self.latent_dim}")
        need(self.batch_size <= MAX_BATCH_SIZE, "batch_size", f"must be <= {MAX_BATCH_SIZE}, got {self.batch_size}")
        need(self.threads is None or (isinstance(self.threads, int) and not isinstance(self.threads, bool)
                                      and 1 <= self.threads <= max_threads()),
             "threads", f"must be an integer from 1 to {max_threads()} (4 per core here), got {self.threads!r}")
        need(self.precision in PRECISIONS, "precision",
             f"unknown precision {self.precision!r} (choose from {', '.join(PRECISIONS)})")
        need(self.preset is None or self.preset in PRESETS, "preset", f"unknown preset {self.preset!r}")
        return self


def differing_keys(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Identity keys whose values differ between two ``to_dict()`` outputs."""
    keys = (set(saved) | set(wanted)) - EXECUTION_KEYS
    return sorted(k for k in keys if saved.get(k, _MISSING) != wanted.get(k, _MISSING))


_MISSING = object()
