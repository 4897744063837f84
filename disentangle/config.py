"""Run configuration of one β-VAE training run: a typed dataclass, its JSON round trip,
validation and the named presets.

The configuration is saved as ``config.json["config"]`` in the run directory; reports
read their columns from there. Two groups of fields:

- *identity* fields decide the numbers a run produces (method, β, steps, seed, ...).
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
from dataclasses import field, fields
from typing import Any

from disentangle import methods as method_registry
from disentangle.errors import ParameterError, UserError

# Network names (disentangle.models.architectures.NETWORKS; kept here so reading a
# configuration needs no torch).
ARCHITECTURES = ("burgess", "dlib", "fc")
LIKELIHOODS = ("bernoulli", "gaussian", "discretized-gaussian", "discretized-logistic")  # models/likelihoods.py
DEVICES = ("auto", "cpu", "cuda")
# The dataset registry's names (disentangle.data.datasets.REGISTRY; kept here so reading a
# configuration imports no data layer; tests/test_datasets_e2e.py checks they agree). A run
# may also name an image set imported with `data import-folder`: train validates the name
# against the registry (datasets.dataset_class), so the field has no fixed choice list.
DEFAULT_DATASET = "dsprites"
DATASETS = ("dsprites", "color-dsprites", "noisy-dsprites", "scream-dsprites", "shapes3d", "mpi3d-toy",
            "mpi3d-realistic", "mpi3d-real", "smallnorb", "cars3d", "celeba")
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
             always_in_name: bool = False, replicate: bool = False, choices: tuple | None = None,
             help: str | None = None, named_unless: Any = None) -> dict[str, Any]:
    """Metadata of an identity field (one that changes the numbers a run produces).

    ``name_key``: the prefix of its part of a run name ("b" -> "b4"; "" -> the bare value;
    None: "" for a string field, else the field's name). ``always_in_name``: in every run
    name, swept or not (the method, the seed); a hyper-parameter is in the name of the
    methods that name it (:attr:`disentangle.methods.Method.named`). ``replicate``: the
    field repeats an experiment (the seed): tables average over it, it never splits
    groups, names end with it. ``always_shown``: a column of the per-run table even when
    constant. ``latex``: the LaTeX table header. ``choices``: its valid values (the
    CLI's choices); ``help``: what it is (the CLI's help text). ``named_unless``: in every
    run name, leading, except when it has this value (the dataset: "shapes3d_beta-vae_b4_s0",
    while dSprites runs keep the names they had before the dataset was a field)."""
    return {"role": "identity", "name_key": name_key, "latex": latex, "always_shown": always_shown,
            "always_in_name": always_in_name, "replicate": replicate, "choices": choices, "help": help,
            "named_unless": named_unless}


def execution(choices: tuple | None = None, help: str | None = None) -> dict[str, Any]:
    """Metadata of an execution field: how a run is executed, not what it computes; it
    may change on resume and is no column, name part or grid axis."""
    return {"role": "execution", "choices": choices, "help": help}


# Named settings. "dlib" is disentanglement_lib's unsupervised study (docs/training.md:
# its conv network, Bernoulli loss, 10 latents, 300k steps of Adam 1e-4, batch 64,
# annealed-vae's capacity raised over 100k steps); "cpu-short" makes a run that ends in
# minutes on a laptop CPU and still learns the position and scale factors.
PRESETS: dict[str, dict[str, Any]] = {
    "dlib": {"architecture": "dlib", "likelihood": "bernoulli", "steps": 300_000, "batch_size": 64,
             "lr": 1e-4, "latent_dim": 10, "capacity_steps": 100_000, "checkpoint_every": 5_000, "log_every": 500},
    "cpu-short": {"steps": 10_000, "batch_size": 64, "lr": 1e-4, "latent_dim": 10,
                  "capacity_steps": 5_000, "checkpoint_every": 1_000, "log_every": 100},
    # Higgins et al. 2017 (ICLR), CelebA: Appendix A.1 Table 1 (conv 32, 32, 64, 64 4x4
    # stride 2, FC 256, ReLU; 32 latents; Gaussian decoder; Adam 1e-4) and Figure 1's β = 250.
    # The paper gives no batch size or step count: batch 64 and 1.5M steps are the
    # reproductions' (1Konny/Beta-VAE run_celeba_H_beta10_z32.sh, armaank/bVAE run_celeb.sh).
    # Network "dlib" (conv 32, 32 k4 and 64, 64 k2, fc 256) is the toolkit's closest; every
    # deviation is in docs/training.md ("The β-VAE paper's CelebA preset").
    "beta-vae-celeba": {"method": "beta-vae", "beta": 250.0, "architecture": "dlib", "likelihood": "gaussian",
                        "latent_dim": 32, "lr": 1e-4, "batch_size": 64, "steps": 1_500_000,
                        "checkpoint_every": 10_000, "log_every": 1_000},
}

# The configuration's fields around the hyper-parameters (which come from the method
# registry, in its order): (name, type, field).
_LEADING_FIELDS = [
    ("dataset", "str", field(default=DEFAULT_DATASET, metadata=identity(
        name_key="", latex="dataset", always_shown=True, named_unless=DEFAULT_DATASET,
        help=f"The dataset (disentangle.data.datasets.REGISTRY): {', '.join(DATASETS)}, or the name of an "
             f"image set imported with `data import-folder`; --data overrides its file."))),
    ("method", "str", field(default=method_registry.DEFAULT_METHOD, metadata=identity(
        name_key="", latex="method", always_shown=True, always_in_name=True,
        help="The training method (disentangle.methods); old names: beta-h = beta-vae, beta-b = annealed-vae."))),
]
_TRAILING_FIELDS = [
    ("architecture", "str", field(default="burgess", metadata=identity(
        name_key="", latex="network", choices=ARCHITECTURES,
        help="Network: burgess, dlib (disentanglement_lib's conv net) or fc (its MLP)."))),
    ("likelihood", "str", field(default="bernoulli", metadata=identity(
        name_key="", choices=LIKELIHOODS, help="Decoder: bernoulli (binary pixels), gaussian (sum of squared errors), or discretized-gaussian/-logistic over 256 levels (8-bit pixels; learned scale)."))),
    ("latent_dim", "int", field(default=10, metadata=identity(name_key="z", latex=r"$d_z$", help="Latent dimensions."))),
    ("batch_size", "int", field(default=64, metadata=identity(name_key="bs", help="Batch size."))),
    ("lr", "float", field(default=1e-4, metadata=identity(name_key="lr", help="Adam learning rate."))),
    ("steps", "int", field(default=10_000, metadata=identity(name_key="n", latex="steps", help="Training steps."))),
    ("seed", "int", field(default=0, metadata=identity(name_key="s", latex="seed", always_in_name=True, replicate=True,
                                                       help="Seed of weights, batches and noise."))),
    ("data", "str | None", field(default=None, metadata=execution(help="Dataset file (default: the dataset rule)."))),
    ("device", "str", field(default="auto", metadata=execution(choices=DEVICES, help="auto picks a GPU when present."))),
    ("threads", "int | None", field(default=None, metadata=execution(help="torch CPU threads (default: torch's choice)."))),
    ("checkpoint_every", "int", field(default=1_000, metadata=execution(help="Steps between checkpoints."))),
    ("log_every", "int", field(default=100, metadata=execution(help="Steps between train_log.csv rows."))),
    # bf16-mixed: convolutions and hidden layers in bfloat16 (posterior head, decoder stem
    # and output layer, loss and Adam in float32); docs/performance.md has its speed
    ("precision", "str", field(default="float32", metadata=identity(
        name_key="", choices=PRECISIONS, help="float32, or bf16-mixed (faster on CPUs with bfloat16 units)."))),
    # only a label: its values are copied into the other fields
    ("preset", "str | None", field(default=None, metadata=execution(
        choices=tuple(PRESETS), help="cpu-short: 10k steps (the defaults); dlib: the disentanglement_lib study, 300k steps; "
             "beta-vae-celeba: Higgins et al. 2017's CelebA setting (32 latents, β 250, Gaussian)."))),
]


def _hyperparameter_fields() -> list:
    return [(h.name, h.kind.__name__, field(default=h.default, metadata=identity(
        name_key=h.name_key, latex=h.latex, always_shown=h.always_shown, help=h.help)))
        for h in method_registry.HYPERPARAMETERS.values()]


class _Configuration:
    """Everything a training run depends on (the fields: :data:`_LEADING_FIELDS`, the
    registered methods' hyper-parameters, :data:`_TRAILING_FIELDS`). Defaults are the
    "cpu-short" preset."""

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
        d = upgraded(d)
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
                raise ParameterError("preset", f"unknown preset {name!r} (choose from {', '.join(PRESETS)})")
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
        """Raise ParameterError naming the parameter of any invalid value; return self."""
        def need(cond: bool, name: str, msg: str) -> None:
            if not cond:
                raise ParameterError(name, msg)

        method_registry.get(self.method)
        need(isinstance(self.dataset, str) and bool(self.dataset), "dataset",
             f"must be a dataset name ({', '.join(DATASETS)}), got {self.dataset!r}")
        for f in fields(self):
            choices = _meta(f).get("choices")
            value = getattr(self, f.name)
            if choices and not (f.name == "preset" and value is None):
                need(value in choices, f.name, f"unknown {f.name} {value!r} (choose from {', '.join(choices)})")
        need(isinstance(self.lr, (int, float)) and not isinstance(self.lr, bool) and self.lr == self.lr
             and abs(self.lr) != float("inf"), "lr", f"must be a finite number, got {self.lr!r}")
        for h in method_registry.HYPERPARAMETERS.values():
            h.check(getattr(self, h.name))
        need(self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        for name, low in (("steps", 1), ("latent_dim", 1), ("batch_size", 1),
                          ("checkpoint_every", 1), ("log_every", 1), ("seed", 0)):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool), name, f"must be an integer, got {value!r}")
            need(value >= low, name, f"must be >= {low}, got {value}")
        need(self.latent_dim <= MAX_LATENT_DIM, "latent_dim", f"must be <= {MAX_LATENT_DIM}, got {self.latent_dim}")
        need(self.batch_size <= MAX_BATCH_SIZE, "batch_size", f"must be <= {MAX_BATCH_SIZE}, got {self.batch_size}")
        need(self.threads is None or (isinstance(self.threads, int) and not isinstance(self.threads, bool)
                                      and 1 <= self.threads <= max_threads()),
             "threads", f"must be an integer from 1 to {max_threads()} (4 per core here), got {self.threads!r}")
        return self


def _build_configuration_class() -> type:
    return dataclasses.make_dataclass(
        "TrainConfig", _LEADING_FIELDS + _hyperparameter_fields() + _TRAILING_FIELDS,
        bases=(_Configuration,), namespace={"__module__": __name__, "__doc__": _Configuration.__doc__})


TrainConfig = _build_configuration_class()


def refresh() -> None:
    """Rebuild :class:`TrainConfig` after the method registry gained or lost a
    hyper-parameter (:func:`disentangle.methods.register`); modules look the class up here
    when they use it, so they see the new fields."""
    global TrainConfig, EXECUTION_KEYS
    TrainConfig = _build_configuration_class()
    EXECUTION_KEYS = execution_keys(TrainConfig)


# Configuration keys renamed since they were first written (config.json, checkpoints,
# study.json): old name -> new name. Old run directories keep loading and resuming.
RENAMED_KEYS = {"objective": "method"}


def upgraded(config: dict[str, Any]) -> dict[str, Any]:
    """A configuration dict in today's key names (an old config.json's "objective" is
    "method"); its values, run names included, stay as they were."""
    if not any(old in config for old in RENAMED_KEYS):
        return config
    return {RENAMED_KEYS.get(k, k): v for k, v in config.items()}


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


def fits_field(key: str, value: Any, cls=None) -> bool:
    """Whether ``value`` has the type of the configuration field ``key`` (an int for an
    int field, a number for a float field, a string for a string field; None where the
    field allows it). Unknown keys fit: a reader of old files judges only what it knows."""
    for f in _fields(cls):
        if f.name == key:
            kinds = [k.strip() for k in (f.type if isinstance(f.type, str) else str(f.type)).split("|")]
            if value is None:
                return "None" in kinds
            if isinstance(value, bool):
                return "bool" in kinds
            if isinstance(value, int):
                return "int" in kinds or "float" in kinds
            if isinstance(value, float):
                return "float" in kinds
            return isinstance(value, str) and "str" in kinds
    return True


def grid_axis_order(cls=None) -> tuple[str, ...]:
    """The order in which a sweep nests its axes, outermost first: replicates (a study
    that stops early has covered its other axes for the first seeds), the settings, the
    always-named ones (the method) innermost."""
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
    """The one run-name scheme ('beta-vae_b4_s0', 'annealed-vae_g1000_c25_s1',
    'beta-vae_b4_lr0.0003_s0'; runs made with an old method name keep it: 'beta-h_b4_s0'):
    the always-named fields (the method), the hyper-parameters the method names, every
    other ``swept`` setting in declaration order, the seed. Used by ``train`` for its
    default directory and by sweeps for every grid point. (Runs are found by their
    config.json, so older directories stay readable whatever their names.)"""
    swept = set(swept)
    method = method_registry.METHODS.get(method_of(config.get("method")))
    by_method = set(method.names_in_run) if method is not None else set()
    lead, parts, tail = [], [], []
    for f in _fields(cls):
        meta = _meta(f)
        if meta["role"] != "identity" or f.name not in config:
            continue
        if meta.get("named_unless") is not None:
            if config[f.name] != meta["named_unless"]:
                lead.append(format_value(config[f.name]))
            continue
        if not (meta["always_in_name"] or f.name in swept or f.name in by_method):
            continue
        key = meta["name_key"]
        if key is None:
            key = "" if column_dtype(f.name, cls) is None and isinstance(config[f.name], str) else f.name
        part = key + format_value(config[f.name])
        (tail if meta["replicate"] else lead if meta["always_in_name"] else parts).append(part)
    return "_".join(lead + parts + tail)


def method_of(name: Any) -> Any:
    """The method a ``method`` value names ("beta-h" -> "beta-vae", "beta-b" -> "annealed-vae")."""
    return method_registry.resolve(name) if isinstance(name, str) else name


def method_reads(method: Any, key: str) -> bool:
    """Whether a run of ``method`` reads setting ``key`` (False only for a
    hyper-parameter its method ignores, e.g. gamma of a beta-vae run)."""
    entry = method_registry.METHODS.get(method_of(method)) if isinstance(method, str) else None
    return key not in method_registry.HYPERPARAMETERS or entry is None or key in entry.reads


def sort_key(column):
    """A ``pandas.sort_values`` key: the method column in the registry's order (dlib's
    table order, not alphabetical), other columns as they are."""
    if column.name == "method":
        rank = {m: i for i, m in enumerate(method_registry.METHODS)}
        last = len(rank)
        return column.map(lambda v: rank.get(method_of(v), last) if isinstance(v, str) else last)
    return column


# --------------------------------------------------------------------------- regularisation strength
# Each method's strength is the hyper-parameter its grid sweeps in disentanglement_lib's
# unsupervised_study_v1 (Method.strength). Reports group by it and figures put it on the
# x axis (:func:`strength_key`, :func:`method_columns`, :func:`strength_label`).
# The columns results.collect derives from a run's configuration (:func:`method_columns`)
METHOD_COLUMNS = ("method", "strength_name", "strength")


def method_label(method: Any) -> str:
    """How papers name a method ("β-VAE", "FactorVAE"); other values as they are."""
    entry = method_registry.METHODS.get(method_of(method)) if isinstance(method, str) else None
    return entry.label if entry is not None else str(method)


def strength_key(method: Any) -> str | None:
    """The field holding the regularisation strength of ``method`` ("beta-h" -> "beta",
    "annealed-vae" -> "capacity_max"); None for an unknown method."""
    entry = method_registry.METHODS.get(method_of(method)) if isinstance(method, str) else None
    return entry.strength if entry is not None else None


def method_columns(config: dict[str, Any]) -> dict[str, Any]:
    """A run's derived table columns, from its configuration dict: ``method`` (its method,
    old names resolved), ``strength_name`` (the field of its main hyper-parameter) and
    ``strength`` (that field's value; a field the run's config.json lacks counts as its
    default). None where the method is missing or unknown."""
    config = upgraded(config)
    method = config.get("method")
    key = strength_key(method)
    if key is None:
        return {"method": method_of(method), "strength_name": None, "strength": None}
    return {"method": method_of(method), "strength_name": key, "strength": config.get(key, _defaults().get(key))}


def strength_label(key: str, cls=None) -> str:
    """Axis label of a strength hyper-parameter: the field's LaTeX name (matplotlib
    mathtext) and its unit, e.g. "$\\beta$", "$C_{\\max}$ (nats)"."""
    label = latex_names(cls).get(key, key)
    hyper = method_registry.HYPERPARAMETERS.get(key)
    unit = hyper.unit if hyper is not None else None
    return f"{label} ({unit})" if unit else label


def check_hyperparameters_given(method: str, given) -> None:
    """ParameterError naming the first hyper-parameter in ``given`` (field names the user
    set explicitly) that ``method`` does not read."""
    # an unknown method reads everything here: validate() names it
    for name in given:
        if not method_reads(method, name):
            used = method_registry.get(method).reads
            raise ParameterError(name, f"not a hyper-parameter of method {method} (it uses {', '.join(used)})",
                                 mentions=used)


def differing_keys(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Identity keys whose values differ between two ``to_dict()`` outputs (old key names
    read as today's). A field that a dict lacks (a run written before the field existed)
    counts as its default value."""
    saved, wanted = upgraded(saved), upgraded(wanted)
    defaults = _defaults()
    keys = (set(saved) | set(wanted)) - execution_keys()
    return sorted(k for k in keys
                  if saved.get(k, defaults.get(k, _MISSING)) != wanted.get(k, defaults.get(k, _MISSING)))


_MISSING = object()


def _defaults(cls=None) -> dict[str, Any]:
    return {f.name: f.default for f in _fields(cls) if f.default is not dataclasses.MISSING}


def field_help(key: str, cls=None) -> str | None:
    """A field's help text (the CLI's), from its metadata."""
    for f in _fields(cls):
        if f.name == key:
            return _meta(f).get("help")
    return None


def field_choices(key: str, cls=None) -> tuple | None:
    """A field's valid values where it has a fixed set (the method's: the registry's names)."""
    if key == "method":
        return method_registry.names()
    for f in _fields(cls):
        if f.name == key:
            return _meta(f).get("choices")
    return None


def field_default(key: str, cls=None) -> Any:
    return _defaults(cls).get(key)


# How a run is executed, not what it computes: these may change on resume.
EXECUTION_KEYS = execution_keys(TrainConfig)
