"""A study's grid: the :class:`Study` (shared axes, fixed settings, optional blocks, how
runs are evaluated), the spec file it is read from, and its expansion into named,
validated run configurations (:class:`RunSpec`). Names come from
:func:`disentangle.config.run_name`; which settings may be axes and how they nest from
the configuration's identity fields."""
from __future__ import annotations

import dataclasses
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from disentangle.config import grid_axis_order, run_name
from disentangle.errors import ParameterError, UserError

# A grid larger than this is a typo (0-100000000), not a study: refused before expanding.
MAX_RUNS = 100_000


@dataclasses.dataclass
class Study:
    """A grid of runs: ``grid`` maps settings to lists of values (one run per combination),
    ``fixed`` holds the settings every run shares (TrainConfig fields, "preset" included).
    ``blocks`` (optional) chains method-specific grids instead of crossing them: each
    block maps settings to a list (an axis of that block) or a single value (a setting of
    that block); the runs are the union over blocks of ``grid`` × the block's own grid,
    each block with ``fixed`` and its own settings. Without blocks, the runs are ``grid``.
    ``metrics``, ``eval_seed`` and ``eval_params`` (per-metric protocol parameters, as
    ``evaluate --param``) say how each run is evaluated."""

    grid: dict[str, list] = dataclasses.field(default_factory=dict)
    fixed: dict[str, Any] = dataclasses.field(default_factory=dict)
    metrics: tuple[str, ...] = ("all",)
    eval_seed: int = 0
    eval_params: dict[str, dict] = dataclasses.field(default_factory=dict)
    name: str | None = None
    source: str = "command line"   # where the study came from, for error messages
    blocks: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def with_overrides(self, grid: dict[str, list] | None = None, fixed: dict[str, Any] | None = None,
                       metrics: Sequence[str] | None = None, eval_seed: int | None = None) -> "Study":
        """A copy with the given axes/settings replaced (command-line options over a spec
        file); None values are ignored. A setting moves between grid and fixed as given.
        A setting some blocks hold is replaced in those blocks (and only there)."""
        new_grid = dict(self.grid)
        new_fixed = dict(self.fixed)
        new_blocks = [dict(block) for block in self.blocks]
        for key, value, is_axis in ([(k, v, True) for k, v in (grid or {}).items()]
                                    + [(k, v, False) for k, v in (fixed or {}).items()]):
            if value is None:
                continue
            value = list(value) if is_axis else value
            holders = [block for block in new_blocks if key in block]
            for block in holders:
                block[key] = value
            if not holders:
                (new_grid if is_axis else new_fixed)[key] = value
                (new_fixed if is_axis else new_grid).pop(key, None)
        return dataclasses.replace(
            self, grid=new_grid, fixed=new_fixed, blocks=new_blocks,
            metrics=tuple(metrics) if metrics else self.metrics,
            eval_seed=self.eval_seed if eval_seed is None else check_eval_seed(eval_seed))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One grid point: its directory name and its full training configuration."""

    name: str
    config: dict[str, Any]          # TrainConfig.to_dict()


def parse_values(text: str, parameter: str, kind: type = float) -> list:
    """'1,2,4' -> [1.0, 2.0, 4.0]; with kind=int also ranges: '0-4' -> [0, 1, 2, 3, 4],
    '0,3-5' -> [0, 3, 4, 5]. Kind str splits on commas only. Errors are ParameterErrors
    naming ``parameter`` (a flag given here is read as its parameter)."""
    parameter = parameter.lstrip("-").replace("-", "_")
    values: list = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        try:
            if kind is int and re.fullmatch(r"\d+\s*-\s*\d+", part):
                lo, hi = (int(x) for x in part.split("-"))
                if hi < lo:
                    raise ValueError
                if hi - lo + 1 + len(values) > MAX_RUNS:
                    raise ParameterError(parameter, f"{hi - lo + 1:,} values; a study has at most "
                                         f"{MAX_RUNS:,} runs", value=text)
                values.extend(range(lo, hi + 1))
            elif kind is int:
                values.append(int(part))
            elif kind is float:
                values.append(float(part))
            else:
                values.append(part)
        except ParameterError:
            raise
        except ValueError:   # (after ParameterError, which is a ValueError too)
            expected = {int: "integers or ranges like 0-4", float: "numbers"}.get(kind, "values")
            raise ParameterError(parameter, f"expected comma-separated {expected}, got {part!r}",
                                 value=text) from None
    if not values:
        raise ParameterError(parameter, "no values given")
    if len(set(values)) != len(values):
        raise ParameterError(parameter, "a value is repeated", value=text)
    return values


MAX_SPEC_BYTES = 1 << 20   # a study spec is a few lines; more is not one


def _first_datetime(value, where: str = "") -> str | None:
    """The dotted key of the first TOML date/time in ``value`` (None when there is none)."""
    import datetime
    if isinstance(value, (datetime.date, datetime.time)):
        return where or "(top level)"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = ((f"[{k}]", v) for k, v in enumerate(value))
    else:
        return None
    for key, item in items:
        sub = f"{where}{key}" if str(key).startswith("[") else f"{where}.{key}" if where else str(key)
        found = _first_datetime(item, sub)
        if found:
            return found
    return None


def load_spec(path: str | os.PathLike) -> Study:
    """Read a study spec (TOML)::

        name = "beta_study"               # optional
        [fixed]                           # settings every run shares (TrainConfig fields)
        method = "beta-vae"
        steps = 20000
        [grid]                            # one run per combination
        beta = [1, 2, 4, 8, 16]
        seed = [0, 1, 2, 3, 4]
        [[blocks]]                        # optional, repeatable: chained, not crossed
        method = "beta-vae"               #   a value: a setting of this block
        beta = [1, 2, 4]                  #   a list: an axis of this block (× [grid])
        [[blocks]]
        method = "annealed-vae"
        capacity_max = [5, 25]
        [evaluate]                        # optional
        metrics = ["all"]
        seed = 0
        [evaluate.params.mig]             # optional: protocol parameters (as --param mig.num_train=1000)
        num_train = 1000
    """
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        # O_NONBLOCK: a FIFO in the spec's place must not hang the open; /dev/zero is refused
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:
            import stat
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise ParameterError("spec", "not a regular file", value=path)
            text = fh.read(MAX_SPEC_BYTES + 1)
        if len(text) > MAX_SPEC_BYTES:
            raise ParameterError("spec", f"larger than {MAX_SPEC_BYTES // 1024} KiB; a study spec is a few lines",
                                 value=path)
        spec = tomllib.loads(text.decode("utf-8"))
    except RecursionError:
        raise ParameterError("spec", "not a readable TOML file (nested too deeply)", value=path) from None
    except FileNotFoundError:
        raise ParameterError("spec", "no such file", value=path) from None
    except UnicodeDecodeError as exc:
        raise ParameterError("spec", f"not UTF-8 text (byte {exc.start}: {exc.reason}); TOML files are UTF-8",
                             value=path) from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ParameterError("spec", f"not a readable TOML file ({exc})", value=path) from None
    where = _first_datetime(spec)
    if where:
        raise UserError(f"{path}: {where}: a TOML date/time is not a setting value (quote it if it is a name)")
    unknown = sorted(set(spec) - {"name", "description", "fixed", "grid", "blocks", "evaluate"})
    if unknown:
        raise UserError(f"{path}: unknown top-level key(s) {', '.join(unknown)} "
                        f"(expected name, description, [fixed], [grid], [[blocks]], [evaluate])")
    blocks = spec.get("blocks", [])
    if not (isinstance(blocks, list) and all(isinstance(b, dict) for b in blocks)):
        raise UserError(f"{path}: blocks must be an array of tables, one [[blocks]] per block")
    for number, block in enumerate(blocks, 1):
        for key, value in block.items():
            if isinstance(value, dict):
                raise UserError(f"{path}: block {number}: {key}: expected a value or a list of values, "
                                f"got a table")
    for table in ("fixed", "grid", "evaluate"):
        if not isinstance(spec.get(table, {}), dict):
            raise UserError(f"{path}: [{table}] must be a table")
    grid = {k: (v if isinstance(v, list) else [v]) for k, v in spec.get("grid", {}).items()}
    evaluate = spec.get("evaluate", {})
    unknown = sorted(set(evaluate) - {"metrics", "seed", "params"})
    if unknown:
        raise UserError(f"{path}: unknown key(s) in [evaluate]: {', '.join(unknown)} (expected metrics, seed, params)")
    eval_params = evaluate.get("params", {})
    if not (isinstance(eval_params, dict) and all(isinstance(v, dict) for v in eval_params.values())):
        raise UserError(f"{path}: [evaluate.params] must hold one table per metric, e.g. [evaluate.params.mig]")
    metrics = evaluate.get("metrics", ["all"])
    if isinstance(metrics, str):
        metrics = [metrics]
    if not (isinstance(metrics, list) and all(isinstance(m, str) for m in metrics)):
        raise UserError(f"{path}: [evaluate] metrics must be a metric name or a list of them, got {metrics!r}")
    seed = evaluate.get("seed", 0)
    check_eval_seed(seed, f"{path}: [evaluate] seed")
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise UserError(f"{path}: name must be a string, got {name!r}")
    study = Study(grid=grid, fixed=dict(spec.get("fixed", {})), blocks=[dict(b) for b in blocks],
                  metrics=tuple(metrics),
                  eval_seed=seed, eval_params=eval_params, name=name, source=str(path))
    check_evaluation_options(study)
    return study


def check_eval_seed(value: Any, where: str = "--eval-seed") -> int:
    """The metrics' seed must be a non-negative integer (numpy refuses others, in every run)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UserError(f"{where}: must be a non-negative integer, got {value!r}")
    return value


def check_evaluation_options(study: Study) -> None:
    """The evaluation every run will get (metric names, their parameters, the seed),
    checked like ``disentangle evaluate`` checks them, so that an option that would fail
    every run's evaluation stops the sweep before anything trains."""
    from disentangle.evaluation.evaluate import check_evaluation
    try:
        check_evaluation(study.metrics, study.eval_seed, study.eval_params)
    except ParameterError as exc:
        if exc.parameter == "seed":
            raise UserError(f"{study.source}: the evaluation seed (--eval-seed, [evaluate] seed) "
                            f"{exc.message}") from None
        raise UserError(f"{study.source}: {exc}") from None
    except UserError as exc:
        raise UserError(f"{study.source}: {exc}") from None


def expand(study: Study, data: str | None = None, device: str | None = None,
           threads: int | None = None) -> list[RunSpec]:
    """Every combination of the grid (of each block's grid, block after block) as a
    validated run configuration, named by its settings. ``data``, ``device`` and
    ``threads``, when given (not None), replace what the spec sets for every run. Order: seed outermost, across
    blocks too (a study that stops early has covered its other axes for the first
    seeds), then the blocks in turn, within one the settings in the configuration's
    order, the method innermost (:func:`disentangle.config.grid_axis_order`). Run
    names (:func:`disentangle.config.run_name`) show what each block varies; they must
    be unique across blocks."""
    from disentangle.config import TrainConfig, differing_keys, replicate_keys
    parts = _parts(study)
    if not study.blocks and not study.grid:
        raise UserError(f"{study.source}: the grid is empty: give at least one axis "
                        f"(e.g. --beta 1,4,16 --seeds 0-2, or [grid] in a --spec file)")
    size = 0
    for _, grid, _ in parts:
        n = 1
        for values in grid.values():
            n *= len(values)
        size += n
    if size > MAX_RUNS:
        what = "the grid has" if not study.blocks else f"the {len(parts)} blocks have"
        raise UserError(f"{study.source}: {what} {size:,} points; a study has at most {MAX_RUNS:,} runs")
    points: list[tuple[tuple, int, dict, list[str]]] = []
    for index, (label, grid, _) in enumerate(parts):
        order = list(grid_axis_order()) + sorted(grid)
        axes = [k for k in dict.fromkeys(order) if k in grid]
        swept = [k for k in axes if len(grid[k]) > 1 and k not in replicate_keys()]
        for combo in itertools.product(*(grid[k] for k in axes)):
            point = dict(zip(axes, combo))
            replicas = tuple(grid[k].index(point[k]) for k in replicate_keys() if k in grid)
            points.append((replicas, index, point, swept))
    points.sort(key=lambda p: p[0])   # stable: within a seed, blocks in turn
    runs: list[RunSpec] = []
    seen: dict[str, tuple[dict, str | None]] = {}
    for _, index, point, swept in points:
        label, _, fixed = parts[index]
        where = f"{study.source}: {label}" if label else study.source
        fixed = dict(fixed)
        preset = fixed.pop("preset", None)
        # an execution setting given here replaces the spec's (resolve_execution checks
        # first that they agree); None leaves the spec's value, else the field's default
        given = {k: v for k, v in (("data", data), ("device", device), ("threads", threads)) if v is not None}
        try:
            cfg = TrainConfig.from_preset(preset, **{**fixed, **point, **given})
            cfg.validate()
        except ParameterError as exc:
            raise exc.within(where) from None
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        except TypeError as exc:
            raise UserError(f"{where}: bad run setting ({exc})") from None
        config = cfg.to_dict()
        _check_hyperparameters(study, index, config["method"])
        name = run_name(config, swept)
        if name in seen:
            other, other_label = seen[name]
            diff = ", ".join(differing_keys(other, config)) or "nothing"
            if other_label != label:
                raise UserError(f"{study.source}: {other_label} and {label} both give the run name {name!r} "
                                f"(they differ in {diff}); make a setting that tells them apart an axis "
                                f"of its block, or merge the blocks")
            raise UserError(f"{where}: two grid points get the run name {name!r} "
                            f"(they differ in {diff}); this is a naming bug")
        seen[name] = (config, label)
        runs.append(RunSpec(name, config))
    return runs


def _parts(study: Study) -> list[tuple[str | None, dict[str, list], dict[str, Any]]]:
    """(label, grid, fixed) of each block (label "block N"), or of the study itself when
    it has no blocks; every key and axis checked, errors naming the block and the key."""
    from disentangle.config import EXECUTION_KEYS, TrainConfig
    known = {f.name for f in dataclasses.fields(TrainConfig)}

    def check(where: str, grid: dict, fixed: dict) -> None:
        for key in list(grid) + list(fixed):
            if key not in known:
                raise UserError(f"{where}unknown run setting {key!r} "
                                f"(settings: {', '.join(sorted(known - {'data'}))})")
        for key, values in grid.items():
            if key in EXECUTION_KEYS:
                raise UserError(f"{where}{key!r} says how runs execute, not what they compute; "
                                f"it cannot be a grid axis (set it once)")
            if not values:
                raise UserError(f"{where}grid axis {key!r} has no values")
            if len({_value_key(v) for v in values}) != len(values):
                raise UserError(f"{where}grid axis {key!r} repeats a value")

    check(f"{study.source}: ", study.grid, study.fixed)
    if not study.blocks:
        return [(None, dict(study.grid), dict(study.fixed))]
    parts = []
    for number, block in enumerate(study.blocks, 1):
        label = f"block {number}"
        if not isinstance(block, dict) or not block:
            raise UserError(f"{study.source}: {label}: a block must be a non-empty table of settings")
        grid = {k: list(v) for k, v in block.items() if isinstance(v, (list, tuple))}
        fixed = {k: v for k, v in block.items() if not isinstance(v, (list, tuple))}
        check(f"{study.source}: {label}: ", grid, fixed)
        for key in block:
            if key in study.grid or key in study.fixed:
                table = "[grid]" if key in study.grid else "[fixed]"
                raise UserError(f"{study.source}: {label}: {key}: also set in {table}; set it in one place")
        parts.append((label, {**study.grid, **grid}, {**study.fixed, **fixed}))
    return parts


def _check_hyperparameters(study: Study, index: int, method: str) -> None:
    """A hyper-parameter that a run's method does not read is a spec error (it would
    silently do nothing): in a block, or in [grid] / [fixed], which every block shares
    (set it in the blocks whose methods use it)."""
    from disentangle import methods as method_registry
    from disentangle.config import method_reads
    block = study.blocks[index] if study.blocks else {}
    for key in list(block) + list(study.grid) + list(study.fixed):
        if not method_reads(method, key):
            used = method_registry.get(method).reads
            if key in block:
                where = f"block {index + 1}: {key}"
            else:
                table = "[grid]" if key in study.grid else "[fixed]"
                where = f"{table} {key}" + (f" (shared by block {index + 1})" if study.blocks else "")
            hint = "; set it in the blocks whose methods use it" if study.blocks and key not in block else ""
            raise UserError(f"{study.source}: {where}: not a hyper-parameter of method {method} "
                            f"(it uses {', '.join(used)}){hint}")


def _value_key(value: Any) -> str:
    # 1 and 1.0 are the same setting
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return json.dumps(value, sort_keys=True)


# The execution settings a sweep's command line also gives (--data, --device,
# --threads-per-job): its value, the spec's, or the default, never silently one over another.
COMMAND_LINE_SETTINGS = {"data": "--data", "device": "--device", "threads": "--threads-per-job"}


def spec_settings(study: Study, key: str) -> list[tuple[str, Any]]:
    """(where, value) of every place the study fixes ``key``: "[fixed]" and each block
    that sets it ("block N")."""
    found = [("[fixed]", study.fixed[key])] if key in study.fixed else []
    found += [(f"block {n}", block[key]) for n, block in enumerate(study.blocks, 1)
              if key in block and not isinstance(block[key], (list, tuple))]
    return found


def _same_setting(key: str, a: Any, b: Any) -> bool:
    if key == "data" and a is not None and b is not None:
        # one file however it is spelled (relative, absolute, through a link)
        return os.path.realpath(os.fspath(a)) == os.path.realpath(os.fspath(b))
    if key == "device" and isinstance(a, str) and isinstance(b, str):
        return a.lower() == b.lower()
    return a == b


def check_execution_settings(study: Study, given: dict[str, Any]) -> None:
    """A setting both the spec fixes and the command line gives explicitly (``given``:
    key -> value, only the options the user typed) must agree: one line naming both,
    before anything is written. (A command-line DEFAULT never replaces the spec's value:
    the caller passes only explicit options here and to :func:`expand`.)"""
    for key, value in given.items():
        if value is None:
            continue
        for where, spec_value in spec_settings(study, key):
            if not _same_setting(key, spec_value, value):
                flag = COMMAND_LINE_SETTINGS.get(key, flag_name(key))
                raise UserError(f"{study.source}: {where} {key} = {spec_value!r}, but {flag} {value}; "
                                f"give one of them (or the same value in both)")


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def swept_axes(study: Study) -> list[str]:
    """The settings the study varies (in any block), replicates excepted."""
    from disentangle.config import replicate_keys
    grids = [study.grid] + [{k: v for k, v in b.items() if isinstance(v, (list, tuple))} for b in study.blocks]
    return [k for k in grid_axis_order()
            if k not in replicate_keys() and any(len(g.get(k, [])) > 1 for g in grids)]
