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

Each field says which group it is in through its dataclass metadata (:func:`identity`,
:func:`execution`), and identity fields say how they appear in run names and tables. Every
list of configuration columns is derived from these fields: the report's columns, the
settings a group must not mix, the sort order (:func:`identity_keys`, :func:`setting_keys`,
:func:`replicate_keys`, :func:`column_dtype`) and the run names (:func:`run_name`), so a
new field appears everywhere once it is declared here. A field without metadata counts as
identity (a new field changes the numbers unless it says otherwise).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from typing import Any

from disentangle.errors import UserError

# The methods of disentanglement_lib's unsupervised study (methods/unsupervised/vae.py),
# stored in the ``objective`` field; "beta-h" and "beta-b", the toolkit's first names,
# stay valid and compute exactly beta-vae and annealed-vae (old runs keep their names).
METHODS = ("beta-vae", "annealed-vae", "beta-tcvae", "factor-vae", "dip-vae-i", "dip-vae-ii")
METHOD_ALIASES = {"beta-h": "beta-vae", "beta-b": "annealed-vae"}
OBJECTIVES = METHODS + tuple(METHOD_ALIASES)
# The hyper-parameters (TrainConfig fields) each method reads; giving another one to it
# is an error (:func:`check_hyperparameters_given`).
HYPERPARAMETERS = ("beta", "gamma", "capacity_max", "capacity_steps", "lambda_od")
METHOD_HYPERPARAMETERS = {
    "beta-vae": ("beta",),
    "annealed-vae": ("gamma", "capacity_max", "capacity_steps"),
    "beta-tcvae": ("beta",),
    "factor-vae": ("gamma",),
    "dip-vae-i": ("lambda_od",),
    "dip-vae-ii": ("lambda_od",),
}
# Network names (disentangle.models.architectures.NETWORKS; kept here so reading a
# configuration needs no torch).
ARCHITECTURES = ("burgess", "dlib", "fc")


def _objectives_of(*methods: str) -> tuple[str, ...]:
    """The objective values naming any of ``methods`` (their old aliases included)."""
    return tuple(o for o in OBJECTIVES if METHOD_ALIASES.get(o, o) in methods)
LIKELIHOODS = ("bernoulli", "gaussian", "discretized-gaussian", "discretized-logistic")  # models/likelihoods.py
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




def identity(name_key: str | None = None, latex: str | None = None, always_shown: bool = False,
             always_in_name: bool = False, in_name_when: dict[str, tuple] | None = None,
             replicate: bool = False) -> dict[str, Any]:
    """Metadata of an identity field (one that changes the numbers a run produces).

    ``name_key``: the prefix of its part of a run name ("b" -> "b4"; "" -> the bare value;
    None: "" for a string field, else the field's name). ``always_in_name``: in every run
    name, swept or not (the objective, the seed); ``in_name_when``: in the name whenever
    other fields have one of the given values (β for beta-h runs). ``replicate``: the
    field repeats an experiment (the seed): tables average over it, it never splits
    groups, names end with it. ``always_shown``: a column of the per-run table even when
    constant. ``latex``: the LaTeX table header."""
    return {"role": "identity", "name_key": name_key, "latex": latex, "always_shown": always_shown,
            "always_in_name": always_in_name, "in_name_when": dict(in_name_when or {}),
            "replicate": replicate}


def execution() -> dict[str, Any]:
    """Metadata of an execution field: how a run is executed, not what it computes; it
    may change on resume and is no column, name part or grid axis."""
    return {"role": "execution"}

# Named settings. "dlib" is disentanglement_lib's unsupervised study (its conv network,
# Bernoulli loss, 10 latents, 300k steps of Adam 1e-4 with torch's (= TF's) β1 0.9, β2
# 0.999, ε 1e-8, batch 64; annealed-vae's capacity raised over 100k steps); "cpu-short" makes a run that
# ends in minutes on a laptop CPU and still learns the position and scale factors.
PRESETS: dict[str, dict[str, Any]] = {
    "dlib": {"architecture": "dlib", "likelihood": "bernoulli", "steps": 300_000, "batch_size": 64,
             "lr": 1e-4, "latent_dim": 10, "capacity_steps": 100_000, "checkpoint_every": 5_000, "log_every": 500},
    "cpu-short": {"steps": 10_000, "batch_size": 64, "lr": 1e-4, "latent_dim": 10,
                  "capacity_steps": 5_000, "checkpoint_every": 1_000, "log_every": 100},
}


@dataclass
class TrainConfig:
    """Everything a training run depends on. Defaults are the "cpu-short" preset."""

    # the method (METHODS, or the old names "beta-h" = beta-vae, "beta-b" = annealed-vae);
    # see disentangle.models.methods
    objective: str = field(default="beta-h", metadata=identity(
        name_key="", latex="objective", always_shown=True, always_in_name=True))
    beta: float = field(default=1.0, metadata=identity(
        name_key="b", latex=r"$\beta$", always_shown=True, in_name_when={"objective": _objectives_of("beta-vae", "beta-tcvae")}))
    gamma: float = field(default=1000.0, metadata=identity(
        name_key="g", latex=r"$\gamma$", in_name_when={"objective": _objectives_of("annealed-vae", "factor-vae")}))
    capacity_max: float = field(default=25.0, metadata=identity(   # nats
        name_key="c", latex=r"$C_{\max}$", in_name_when={"objective": _objectives_of("annealed-vae")}))
    # C rises linearly from 0 to capacity_max over these steps
    capacity_steps: int = field(default=5_000, metadata=identity(name_key="cs", latex=r"$C$ steps"))
    # DIP-VAE off-diagonal weight (λ_d = 10·λ_od for -i, λ_od for -ii)
    lambda_od: float = field(default=1.0, metadata=identity(
        name_key="l", latex=r"$\lambda_{od}$", in_name_when={"objective": _objectives_of("dip-vae-i", "dip-vae-ii")}))
    # ARCHITECTURES; runs from before this field are burgess
    architecture: str = field(default="burgess", metadata=identity(name_key="", latex="network"))
    # "bernoulli" | "gaussian" (sum of squared errors)
    likelihood: str = field(default="bernoulli", metadata=identity(name_key=""))
    latent_dim: int = field(default=10, metadata=identity(name_key="z", latex=r"$d_z$"))
    batch_size: int = field(default=64, metadata=identity(name_key="bs"))
    lr: float = field(default=1e-4, metadata=identity(name_key="lr"))
    steps: int = field(default=10_000, metadata=identity(name_key="n", latex="steps"))
    seed: int = field(default=0, metadata=identity(name_key="s", latex="seed", always_in_name=True,
                                                   replicate=True))
    # dataset path; None = the dataset rule
    data: str | None = field(default=None, metadata=execution())
    device: str = field(default="auto", metadata=execution())
    # torch intra-op threads; None = torch's default
    threads: int | None = field(default=None, metadata=execution())
    checkpoint_every: int = field(default=1_000, metadata=execution())
    log_every: int = field(default=100, metadata=execution())
    # "bf16-mixed": convolutions and hidden layers in bfloat16 (posterior head, decoder
    # stem and output layer, loss and Adam in float32); ~1.7x faster on CPUs with native
    # bfloat16 (AVX512-BF16/AMX), same loss curve within seed noise (README, Training)
    precision: str = field(default="float32", metadata=identity(name_key=""))
    # only a label: its values are copied into the other fields
    preset: str | None = field(default=None, metadata=execution())

    def __post_init__(self) -> None:
        # 4 and 4.0 are the same β: store floats, so config.json compares and reads alike
        for name in (f.name for f in fields(self) if column_dtype(f.name, type(self)) == "float"):
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
        """The fields that decide the numbers (everything but the execution fields)."""
        execution_only = execution_keys(type(self))
        return {k: v for k, v in self.to_dict().items() if k not in execution_only}

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Raise UserError naming the option for any invalid value; return self."""
        def need(cond: bool, option: str, msg: str) -> None:
            if not cond:
                raise UserError(f"--{option.replace('_', '-')}: {msg}")

        need(self.objective in OBJECTIVES, "method",
             f"unknown method {self.objective!r} (choose from {', '.join(OBJECTIVES)})")
        need(self.architecture in ARCHITECTURES, "architecture",
             f"unknown architecture {self.architecture!r} (choose from {', '.join(ARCHITECTURES)})")
        need(self.likelihood in LIKELIHOODS, "likelihood",
             f"unknown likelihood {self.likelihood!r} (choose from {', '.join(LIKELIHOODS)})")
        need(self.device in DEVICES, "device", f"unknown device {self.device!r} (choose from {', '.join(DEVICES)})")
        for name in ("beta", "gamma", "capacity_max", "lambda_od", "lr"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
                 and abs(value) != float("inf"), name, f"must be a finite number, got {value!r}")
        need(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")
        need(self.gamma >= 0, "gamma", f"must be >= 0, got {self.gamma}")
        need(self.lambda_od >= 0, "lambda_od", f"must be >= 0, got {self.lambda_od}")
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


# --------------------------------------------------------------------------- derived lists
# Every function takes the configuration class (default: TrainConfig, looked up when
# called), so a subclass with more fields gets its columns and names without edits here.
def _meta(f: dataclasses.Field) -> dict[str, Any]:
    meta = dict(f.metadata) if f.metadata else {}
    if meta.get("role") == "execution":
        return meta
    return {**identity(), **meta, "role": "identity"}


def _fields(cls=None) -> list[dataclasses.Field]:
    return list(fields(cls or TrainConfig))


def execution_keys(cls=None) -> frozenset[str]:
    return frozenset(f.name for f in _fields(cls) if _meta(f)["role"] == "execution")


def identity_keys(cls=None) -> tuple[str, ...]:
    """The identity fields as table columns: declaration order, replicate fields last."""
    return setting_keys(cls) + replicate_keys(cls)


def setting_keys(cls=None) -> tuple[str, ...]:
    """The identity fields that tell experiments apart (all but the replicates): a group
    of a report must not mix runs that differ in one it is not grouped by."""
    return tuple(f.name for f in _fields(cls) if _meta(f)["role"] == "identity" and not _meta(f)["replicate"])


def replicate_keys(cls=None) -> tuple[str, ...]:
    return tuple(f.name for f in _fields(cls) if _meta(f)["role"] == "identity" and _meta(f)["replicate"])


def always_shown_keys(cls=None) -> tuple[str, ...]:
    return tuple(f.name for f in _fields(cls) if _meta(f)["role"] == "identity" and _meta(f)["always_shown"])


def latex_names(cls=None) -> dict[str, str]:
    """Identity field -> LaTeX header, for the fields that declare one."""
    return {f.name: _meta(f)["latex"] for f in _fields(cls)
            if _meta(f)["role"] == "identity" and _meta(f)["latex"]}


def column_dtype(key: str, cls=None) -> str | None:
    """How a table column of the field is typed: "float", "Int64" (nullable int) or None
    (kept as is), from the field's annotation."""
    for f in _fields(cls):
        if f.name == key:
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            kind = kind.split("|")[0].strip()
            return {"float": "float", "int": "Int64"}.get(kind)
    return None


def grid_axis_order(cls=None) -> tuple[str, ...]:
    """The order in which a sweep nests its axes, outermost first: replicates (a study
    that stops early has covered its other axes for the first seeds), the settings, the
    always-named ones (the objective) innermost."""
    named = [f.name for f in _fields(cls) if _meta(f)["role"] == "identity" and _meta(f)["always_in_name"]]
    return replicate_keys(cls) + tuple(k for k in setting_keys(cls) if k not in named) + \
        tuple(k for k in setting_keys(cls) if k in named)


def format_value(value: Any) -> str:
    """A setting's value as it appears in a run name: integral numbers without '.0',
    other floats in their shortest exact form (4 -> '4', 0.5 -> '0.5', 1e-4 -> '0.0001')."""
    import re
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        value = int(value) if value.is_integer() and abs(value) < 1e15 else repr(value)
    text = str(value)
    return re.sub(r"[^A-Za-z0-9.+-]", "-", text)


def run_name(config: dict[str, Any], swept: Any = (), cls=None) -> str:
    """The one run-name scheme ('beta-h_b4_s0', 'beta-b_g1000_c25_s1',
    'beta-h_b4_lr0.0003_s0'): the always-named fields (the objective), the fields the
    objective is about, every other ``swept`` setting in declaration order, the seed.
    Used by ``train`` for its default directory and by sweeps for every grid point.
    (Runs are found by their config.json, so older directories stay readable whatever
    their names.)"""
    swept = set(swept)
    lead, parts, tail = [], [], []
    for f in _fields(cls):
        meta = _meta(f)
        if meta["role"] != "identity" or f.name not in config:
            continue
        when = meta["in_name_when"]
        named = (meta["always_in_name"] or f.name in swept
                 or any(config.get(k) in values for k, values in when.items()))
        if not named:
            continue
        key = meta["name_key"]
        if key is None:
            key = "" if column_dtype(f.name, cls) is None and isinstance(config[f.name], str) else f.name
        part = key + format_value(config[f.name])
        (tail if meta["replicate"] else lead if meta["always_in_name"] else parts).append(part)
    return "_".join(lead + parts + tail)


def method_of(objective: str) -> str:
    """The method an ``objective`` value names ("beta-h" -> "beta-vae", "beta-b" -> "annealed-vae")."""
    return METHOD_ALIASES.get(objective, objective)


def method_reads(objective: Any, key: str) -> bool:
    """Whether a run of ``objective`` reads setting ``key`` (False only for a
    hyper-parameter its method ignores, e.g. gamma of a beta-vae run)."""
    used = METHOD_HYPERPARAMETERS.get(method_of(objective)) if isinstance(objective, str) else None
    return key not in HYPERPARAMETERS or used is None or key in used


def sort_key(column):
    """A ``pandas.sort_values`` key: the method and objective columns in :data:`METHODS`
    order (dlib's table order, not alphabetical), other columns as they are."""
    if column.name in ("method", "objective"):
        rank = {m: i for i, m in enumerate(METHODS)}
        return column.map(lambda v: rank.get(method_of(v), len(METHODS)) if isinstance(v, str) else len(METHODS))
    return column


# --------------------------------------------------------------------------- regularisation strength
# The hyper-parameter that sets how strongly each method regularises: the one its grid
# sweeps in disentanglement_lib's unsupervised_study_v1 (config/unsupervised_study_v1/
# sweep.py: beta_vae.beta, annealed_vae.c_max, factor_vae.gamma, dip_vae.lambda_od,
# beta_tc_vae.beta). Reports group by it and figures put it on the x axis
# (:func:`strength_key`, :func:`method_columns`, :func:`strength_label`).
METHOD_STRENGTH = {
    "beta-vae": "beta",
    "annealed-vae": "capacity_max",
    "beta-tcvae": "beta",
    "factor-vae": "gamma",
    "dip-vae-i": "lambda_od",
    "dip-vae-ii": "lambda_od",
}
# How papers name the methods (legends, panel titles)
METHOD_LABELS = {"beta-vae": "β-VAE", "annealed-vae": "AnnealedVAE", "beta-tcvae": "β-TCVAE",
                 "factor-vae": "FactorVAE", "dip-vae-i": "DIP-VAE-I", "dip-vae-ii": "DIP-VAE-II"}
# Units of the strength hyper-parameters that have one
HYPERPARAMETER_UNITS = {"capacity_max": "nats"}
# The columns results.collect derives from a run's configuration (:func:`method_columns`)
METHOD_COLUMNS = ("method", "strength_name", "strength")


def strength_key(objective: Any) -> str | None:
    """The field holding the regularisation strength of ``objective``'s method ("beta-h"
    -> "beta", "annealed-vae" -> "capacity_max"); None for an unknown objective."""
    return METHOD_STRENGTH.get(method_of(objective)) if isinstance(objective, str) else None


def method_columns(config: dict[str, Any]) -> dict[str, Any]:
    """A run's derived table columns, from its configuration dict: ``method`` (the
    objective's method, old names resolved), ``strength_name`` (the field of its main
    hyper-parameter) and ``strength`` (that field's value; a field the run's config.json
    lacks counts as its default). None where the objective is missing or unknown."""
    objective = config.get("objective")
    key = strength_key(objective)
    if key is None:
        return {"method": method_of(objective) if isinstance(objective, str) else None,
                "strength_name": None, "strength": None}
    return {"method": method_of(objective), "strength_name": key,
            "strength": config.get(key, _DEFAULTS.get(key))}


def strength_label(key: str, cls=None) -> str:
    """Axis label of a strength hyper-parameter: the field's LaTeX name (matplotlib
    mathtext) and its unit, e.g. "$\\beta$", "$C_{\\max}$ (nats)"."""
    label = latex_names(cls).get(key, key)
    unit = HYPERPARAMETER_UNITS.get(key)
    return f"{label} ({unit})" if unit else label


def check_hyperparameters_given(objective: str, given) -> None:
    """UserError naming both when a hyper-parameter in ``given`` (field names the user set
    explicitly) is not one ``objective``'s method reads."""
    # an unknown method reads everything here: validate() names it
    for name in given:
        if not method_reads(objective, name):
            opt = lambda n: "--" + n.replace("_", "-")   # noqa: E731
            used = METHOD_HYPERPARAMETERS[method_of(objective)]
            raise UserError(f"{opt(name)}: not a hyper-parameter of method {objective} "
                            f"(it uses {', '.join(map(opt, used))})")


def differing_keys(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Identity keys whose values differ between two ``to_dict()`` outputs. A field that a
    dict lacks (a run written before the field existed) counts as its default value."""
    keys = (set(saved) | set(wanted)) - EXECUTION_KEYS
    return sorted(k for k in keys
                  if saved.get(k, _DEFAULTS.get(k, _MISSING)) != wanted.get(k, _DEFAULTS.get(k, _MISSING)))


_MISSING = object()
_DEFAULTS = {f.name: f.default for f in fields(TrainConfig) if f.default is not dataclasses.MISSING}

# How a run is executed, not what it computes: these may change on resume.
EXECUTION_KEYS = execution_keys(TrainConfig)
