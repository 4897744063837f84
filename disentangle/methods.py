"""THE method registry: one entry per training method, torch-free.

An entry (:class:`Method`) is everything the toolkit knows about a method: its name and
old aliases, the hyper-parameters it reads (:class:`Hyperparameter`: default, valid
range, symbol, LaTeX, unit, whether run names show it), which of them is its strength
(the one disentanglement_lib's unsupervised_study_v1 sweeps), its display label, the
extra columns it adds to train_log.csv, its loss function and any extra trained state.
The configuration (fields, validation, run names, table columns), the training loop, the
CLI (options, choices, help), reports and figures all read it; adding a method is its
loss function and one :func:`register` call.

The registry sits beside :mod:`disentangle.config` (below the models), so reading a
configuration or building the CLI never imports torch: the loss function and the extra
trained state are named as ``"module:attribute"`` and imported only when a run trains
(:meth:`Method.loss_function`, :meth:`Method.state_class`); a test may give a callable.

Hyper-parameters are shared by name: beta-vae and beta-tcvae both read ``beta``. Each
one is a field of :class:`disentangle.config.TrainConfig` (a top-level key of
config.json); a method that brings a new one declares it in its entry, and the
configuration grows the field when the method is registered.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from disentangle.errors import ParameterError


@dataclass(frozen=True)
class Hyperparameter:
    """One hyper-parameter: a configuration field that some methods read."""

    name: str                        # the TrainConfig field and config.json key
    default: float | int
    help: str                        # what it does, for --help (no default: click shows it)
    kind: type = float               # float or int
    minimum: float = 0.0             # valid values: >= minimum (> when exclusive)
    exclusive: bool = False
    name_key: str | None = None      # its part of a run name ("b" -> "b4")
    latex: str | None = None         # table header and axis label
    unit: str | None = None          # axis-label unit, e.g. "nats"
    always_shown: bool = False       # a column of the per-run table even when constant

    def check(self, value: Any) -> None:
        """ParameterError naming the hyper-parameter when ``value`` is not valid."""
        if self.kind is int:
            if not isinstance(value, int) or isinstance(value, bool):
                raise ParameterError(self.name, f"must be an integer, got {value!r}")
        elif not (isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
                  and abs(value) != float("inf")):
            raise ParameterError(self.name, f"must be a finite number, got {value!r}")
        low = self.minimum if self.kind is float else int(self.minimum)
        if value < low or (self.exclusive and value == low):
            raise ParameterError(self.name, f"must be {'>' if self.exclusive else '>='} {low:g}, got {value}")


def _reference(target: str | Callable | type | None):
    if target is None or not isinstance(target, str):
        return target
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


@dataclass(frozen=True)
class Method:
    """One training method: its registry entry."""

    name: str
    label: str                              # how papers name it (legends, LaTeX tables)
    hyperparameters: tuple                  # names of shared ones, or new Hyperparameter entries
    strength: str                           # the hyper-parameter that sets its regularisation strength
    loss: str | Callable                    # "module:function" (or the function): the loss terms
    aliases: tuple[str, ...] = ()           # old names that still select it
    named: tuple[str, ...] | None = None    # hyper-parameters in its run names (None: all of them)
    log_terms: tuple[str, ...] = ()         # extra train_log.csv columns (loss-term names), in order
    loss_settings: dict = field(default_factory=dict)   # fixed keyword arguments of its loss
    state: str | type | None = None         # "module:Class" of extra trained state (FactorVAE's discriminator)
    reference: str = ""                     # what it follows

    @property
    def reads(self) -> tuple[str, ...]:
        """The hyper-parameter names it reads."""
        return tuple(h.name if isinstance(h, Hyperparameter) else h for h in self.hyperparameters)

    @property
    def names_in_run(self) -> tuple[str, ...]:
        return self.reads if self.named is None else self.named

    def loss_function(self) -> Callable:
        return _reference(self.loss)

    def state_class(self):
        return _reference(self.state)


# --------------------------------------------------------------------------- the registry
HYPERPARAMETERS: dict[str, Hyperparameter] = {}
METHODS: dict[str, Method] = {}
ALIASES: dict[str, str] = {}


def register(method: Method) -> Method:
    """Add ``method`` (and the new hyper-parameters it declares); the configuration class
    grows their fields (:func:`disentangle.config.refresh`)."""
    taken = set(METHODS) | set(ALIASES)
    for name in (method.name, *method.aliases):
        if name in taken:
            raise ValueError(f"method name {name!r} is registered already")
    new = [h for h in method.hyperparameters if isinstance(h, Hyperparameter)]
    for h in new:
        if h.name in HYPERPARAMETERS:
            raise ValueError(f"hyper-parameter {h.name!r} is registered already; name it by its name")
    missing = [n for n in method.reads if n not in HYPERPARAMETERS and n not in {h.name for h in new}]
    if missing or method.strength not in method.reads:
        raise ValueError(f"method {method.name!r}: unknown hyper-parameter(s) {missing or [method.strength]}")
    HYPERPARAMETERS.update({h.name: h for h in new})
    METHODS[method.name] = method
    ALIASES.update({a: method.name for a in method.aliases})
    if new:
        _refresh_config()
    return method


def unregister(name: str) -> None:
    """Remove method ``name`` and the hyper-parameters no other method reads (tests)."""
    method = METHODS.pop(name)
    for alias in method.aliases:
        ALIASES.pop(alias, None)
    still_read = {n for m in METHODS.values() for n in m.reads}
    dropped = [h.name for h in method.hyperparameters if isinstance(h, Hyperparameter) and h.name not in still_read]
    for key in dropped:
        HYPERPARAMETERS.pop(key)
    if dropped:
        _refresh_config()


def _refresh_config() -> None:
    # a configuration module still being imported builds its class from the registry as it is
    import sys
    config = sys.modules.get("disentangle.config")
    if config is not None and hasattr(config, "refresh"):
        config.refresh()


def names() -> tuple[str, ...]:
    """Every value the ``method`` setting accepts: the methods, then their old aliases."""
    return tuple(METHODS) + tuple(ALIASES)


def resolve(name: str) -> str:
    """The method a name selects ("beta-h" -> "beta-vae"); unknown names unchanged."""
    return ALIASES.get(name, name)


def get(name: str) -> Method:
    """The entry of method ``name`` (an alias allowed); ParameterError naming ``method``."""
    method = METHODS.get(resolve(name)) if isinstance(name, str) else None
    if method is None:
        raise ParameterError("method", f"unknown method {name!r} (choose from {', '.join(names())})")
    return method


def readers(hyperparameter: str) -> tuple[str, ...]:
    """The methods that read ``hyperparameter``."""
    return tuple(m.name for m in METHODS.values() if hyperparameter in m.reads)


# --------------------------------------------------------------------------- the entries
# The hyper-parameters of disentanglement_lib's unsupervised study
# (methods/unsupervised/vae.py; config/unsupervised_study_v1/sweep.py).
for _h in (
    Hyperparameter("beta", 1.0, "beta-vae: KL weight; beta-tcvae: TC weight.", name_key="b",
                   latex=r"$\beta$", always_shown=True),
    Hyperparameter("gamma", 1000.0, "annealed-vae: weight of |KL - C|; factor-vae: TC weight.",
                   name_key="g", latex=r"$\gamma$"),
    Hyperparameter("capacity_max", 25.0, "annealed-vae: final capacity C (nats).", name_key="c",
                   latex=r"$C_{\max}$", unit="nats"),
    Hyperparameter("capacity_steps", 5_000, "annealed-vae: steps over which C rises linearly from 0 "
                   "(dlib's iteration threshold).", kind=int, minimum=1, name_key="cs", latex=r"$C$ steps"),
    Hyperparameter("lambda_od", 1.0, "dip-vae-i/-ii: off-diagonal weight (the diagonal's is 10x it for -i, "
                   "1x for -ii).", name_key="l", latex=r"$\lambda_{od}$"),
):
    HYPERPARAMETERS[_h.name] = _h

_LOSSES = "disentangle.models.methods"
for _m in (
    Method("beta-vae", "β-VAE", ("beta",), "beta", f"{_LOSSES}:beta_vae", aliases=("beta-h",),
           reference="Higgins et al. 2017"),
    Method("annealed-vae", "AnnealedVAE", ("gamma", "capacity_max", "capacity_steps"), "capacity_max",
           f"{_LOSSES}:annealed_vae", aliases=("beta-b",), named=("gamma", "capacity_max"),
           reference="Burgess et al. 2018"),
    Method("beta-tcvae", "β-TCVAE", ("beta",), "beta", f"{_LOSSES}:beta_tcvae", log_terms=("tc",),
           reference="Chen et al. 2018"),
    # tc: the discriminator's estimate mean(d0 − d1); discriminator_loss: what its optimizer
    # minimises (log 2 at chance); discriminator_accuracy: the fraction of z and z̃ it classifies right
    Method("factor-vae", "FactorVAE", ("gamma",), "gamma", f"{_LOSSES}:factor_vae",
           log_terms=("tc", "discriminator_loss", "discriminator_accuracy"),
           state=f"{_LOSSES}:FactorVAEDiscriminator", reference="Kim & Mnih 2018"),
    # the unweighted penalties Σ_{i≠j} C_ij² and Σ_i (C_ii − 1)²
    Method("dip-vae-i", "DIP-VAE-I", ("lambda_od",), "lambda_od", f"{_LOSSES}:dip_vae",
           log_terms=("dip_off_diagonal", "dip_diagonal"), loss_settings={"dip_type": "i"},
           reference="Kumar et al. 2018"),
    Method("dip-vae-ii", "DIP-VAE-II", ("lambda_od",), "lambda_od", f"{_LOSSES}:dip_vae",
           log_terms=("dip_off_diagonal", "dip_diagonal"), loss_settings={"dip_type": "ii"},
           reference="Kumar et al. 2018"),
):
    METHODS[_m.name] = _m
    ALIASES.update({a: _m.name for a in _m.aliases})
del _h, _m

DEFAULT_METHOD = "beta-vae"


def load_plugins() -> None:
    """Import the modules named in $DISENTANGLE_PLUGINS (comma-separated), each
    registering its methods: so a method defined outside the package is known to every
    process of a run, the spawned sweep workers and Slurm jobs included."""
    import os
    for module in filter(None, (m.strip() for m in os.environ.get("DISENTANGLE_PLUGINS", "").split(","))):
        importlib.import_module(module)


load_plugins()

