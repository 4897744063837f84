"""The commands that make and score runs: train, sweep (and sweep status), evaluate, score,
evaluate-study, import; their options built from the configuration's fields and the
registries.
"""
from __future__ import annotations

from typing import Callable

import click

from disentangle.config import DEVICES, PRESETS
from disentangle.errors import ParameterError
from disentangle.cli.base import Group, flag_of, main, unverified_data_option


# --------------------------------------------------------------------------- options from the configuration
def _field_option(key: str, *, sweep: bool = False) -> click.Option:
    """The option of configuration field ``key``: its flag (:func:`flag_of`), type,
    choices, default and help from the field (and, for a hyper-parameter, the method
    registry). ``sweep``: a comma-separated list of values, each a grid point."""
    from disentangle.config import TrainConfig, column_dtype, field_choices, field_default, field_help
    kind = {"float": float, "Int64": int}.get(column_dtype(key, TrainConfig), str)
    choices = field_choices(key)
    names = [flag_of(key)] + (["--objective"] if key == "method" and not sweep else [])
    help_text = field_help(key) or ""
    if sweep:
        help_text += " A comma-separated list sweeps it" + (f" (from {', '.join(choices)})." if choices else ".")
        return click.Option(names + [key], default=None, help=help_text,
                            show_default=str(field_default(key)) if field_default(key) is not None else False)
    param_type = click.Choice(choices) if choices else kind
    default = field_default(key)
    return click.Option(names + [key], type=param_type, default=None, help=help_text,
                        show_default=str(default) if default is not None else False)


class _FieldOptions:
    """Adds the options of configuration fields to a command when it runs (so a method
    registered after this module was imported brings its hyper-parameters' options)."""

    field_keys: Callable = None   # () -> the field names that get an option
    sweep = False

    def get_params(self, ctx):
        have = {p.name for p in self.params}
        extra = [_field_option(k, sweep=self.sweep) for k in self.field_keys() if k not in have]
        params = super().get_params(ctx)
        return params[:-1] + extra + params[-1:] if params and params[-1].name == "help" else params + extra


def _train_keys():
    import dataclasses

    from disentangle.config import TrainConfig
    return [f.name for f in dataclasses.fields(TrainConfig) if f.name != "preset"]


def _sweep_keys():
    """Every identity field is a sweep axis (the seed is --seeds)."""
    from disentangle.config import replicate_keys, setting_keys
    return [k for k in setting_keys() if k not in replicate_keys()]


class _TrainCommand(_FieldOptions, click.Command):
    field_keys = staticmethod(_train_keys)


class _SweepGroup(_FieldOptions, Group):
    field_keys = staticmethod(_sweep_keys)
    sweep = True


# --------------------------------------------------------------------------- train
@main.command("train", cls=_TrainCommand)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: results/<run name>, e.g. results/beta-vae_b4_s0).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="cpu-short: 10k steps (the defaults); dlib: the disentanglement_lib study, 300k steps.")
@unverified_data_option
def train_cmd(out, preset, **options):
    """Train one run of one method (resumes an interrupted run; a finished one is skipped).
    Defaults shown are the cpu-short preset's; a preset changes several."""
    from disentangle.config import TrainConfig, check_hyperparameters_given
    from disentangle.train import train
    config = TrainConfig.from_preset(preset, **options).validate()
    check_hyperparameters_given(config.method, [k for k, v in options.items() if v is not None])
    train(config, out, progress=True, echo=lambda msg: click.echo(msg, err=True))



# --------------------------------------------------------------------------- sweep
@main.group("sweep", cls=_SweepGroup, invoke_without_command=True)
@click.option("--results", type=click.Path(file_okay=False), default=None,
              help="Study directory: one run directory per grid point, report.md, figures/.")
@click.option("--spec", type=click.Path(dir_okay=False), default=None,
              help="Study spec (TOML: [grid], [fixed], [[blocks]], [evaluate]); options below override it.")
@click.option("--objective", "objective", default=None, hidden=True)   # the first name of --method
@click.option("--seeds", default=None, help="Seeds: 0-4 or 0,1,7.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None, help="Training preset (see train).")
@click.option("--metric", "metrics", multiple=True, help="Metrics to evaluate (repeatable; default all, info included).")
@click.option("--eval-seed", type=int, default=None, help="Seed of the metrics' sampling (default 0).")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dataset file (default: the spec's data, else the dataset rule).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Device of every run (a spec's device holds unless this is given; both must agree).")
@click.option("--executor", type=click.Choice(["local", "slurm"]), default="local", show_default=True)
@click.option("--jobs", type=click.IntRange(1), default=1, show_default=True,
              help="local: runs at once, each in its own process.")
@click.option("--threads-per-job", type=click.IntRange(1), default=None,
              help="Threads of each run (default: the spec's threads, else cores // jobs locally, "
                   "--cpus-per-task on slurm).")
@click.option("--retry-failed", is_flag=True, help="Run failed runs again (default: report them, skip them).")
@click.option("--partition", default=None, help="slurm: partition.")
@click.option("--time", "time_limit", default="120", show_default=True,
              help="slurm: time limit per run (minutes or H:MM:SS); a run out of time requeues and resumes.")
@click.option("--cpus-per-task", type=click.IntRange(1), default=1, show_default=True, help="slurm: CPUs per run.")
@click.option("--mem", default="4G", show_default=True, help="slurm: memory per run (e.g. 4G).")
@click.option("--gpus-per-task", type=click.IntRange(0), default=None, help="slurm: GPUs per run.")
@click.option("--no-wait", is_flag=True, help="slurm: return once submitted (see `disentangle sweep status`).")
@click.option("--no-report", is_flag=True, help="Skip writing report.md and figures/ at the end.")
@click.option("--dry-run", is_flag=True, help="Print the runs the grid expands to, and stop.")
@click.pass_context
@unverified_data_option
def sweep_cmd(ctx, results, spec, objective, seeds, preset, metrics, eval_seed, data, device, executor, jobs,
              threads_per_job, retry_failed, partition, time_limit, cpus_per_task, mem, gpus_per_task,
              no_wait, no_report, dry_run, **axes):
    """Train and evaluate a grid of runs, then write the study's report and figures.
    Every setting option takes one value or a comma-separated list (a grid axis).

    \b
      disentangle sweep --beta 1,2,4,8,16 --seeds 0-4 --steps 20000 --results results/study
      disentangle sweep --spec benchmarks/studies/beta_study.toml --results results/study --jobs 2
      disentangle sweep status results/study

    Run again to resume: finished runs are skipped, interrupted ones resume from their
    checkpoints, failed ones are retried with --retry-failed."""
    if ctx.invoked_subcommand is not None:
        return
    from disentangle import sweep as sw
    from disentangle.config import column_dtype
    if results is None:
        raise ParameterError("results", "name the study directory (e.g. --results results/study)")
    if objective is not None:
        if axes.get("method") is not None:
            raise click.UsageError("--objective is the first name of --method: give one of them")
        axes["method"] = objective
    study = sw.load_spec(spec) if spec else sw.Study()
    kinds = {"float": float, "Int64": int}
    grid = {key: sw.parse_values(text, flag_of(key), kinds.get(column_dtype(key), str))
            for key, text in axes.items() if text is not None}
    grid["seed"] = seeds and sw.parse_values(seeds, "--seeds", int)
    study = study.with_overrides(grid=grid, fixed={"preset": preset}, metrics=metrics, eval_seed=eval_seed)
    # an option left at its default never replaces what the spec fixes (and one given
    # explicitly must agree with it: a conflict is refused in one line)
    if ctx.get_parameter_source("device") == click.core.ParameterSource.DEFAULT:
        device = None
    if dry_run:
        sw.check_execution_settings(study, {"data": data, "device": device, "threads": threads_per_job})
        for run in sw.expand(study):
            click.echo(run.name)
        return
    slurm = sw.SlurmOptions(partition=partition, time_min=sw.parse_time(time_limit), cpus_per_task=cpus_per_task,
                            mem=mem or None, gpus_per_task=gpus_per_task or None, wait=not no_wait)
    result = sw.run_sweep(study, results, executor=executor, jobs=jobs, threads_per_job=threads_per_job,
                          retry_failed=retry_failed, data=data, device=device, slurm=slurm,
                          report=not no_report, echo=click.echo)
    if result.count("failed"):
        raise click.exceptions.Exit(1)


@sweep_cmd.command("status")
@click.argument("results", type=click.Path(file_okay=False))
def sweep_status_cmd(results):
    """What each run of the study in RESULTS is: queued, running, done, failed, ..."""
    from disentangle.sweep import format_status, study_status
    click.echo(format_status(study_status(results)))


# --------------------------------------------------------------------------- evaluate
@main.command("evaluate")
@click.argument("runs", nargs=-1, required=True)
@click.option("--metric", "metrics", multiple=True, default=("all",), show_default=True,
              help="A registered metric (an unknown name lists them) or all; repeatable.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of each metric's numpy Generator.")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dataset file (default: the one the run trained on, else the dataset rule).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--protocol-encode", is_flag=True,
              help="Encode sampled images on the fly as the published protocols do (slow; same scores).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch/BLAS threads.")
@click.option("--param", "param_texts", multiple=True, metavar="METRIC.KEY=VALUE",
              help="Override a protocol parameter, e.g. mig.num_train=1000; repeatable.")
@unverified_data_option
def evaluate_cmd(runs, metrics, seed, data, device, protocol_encode, threads, param_texts):
    """Score RUN directories (paths or globs) and merge the scores into their scores.json."""
    from disentangle.evaluation.evaluate import (echo_stderr, evaluate_runs, expand_runs, parse_param,
                                                 score_table)
    params: dict = {}
    for text in param_texts:
        metric, key, value = parse_param(text)
        params.setdefault(metric, {})[key] = value
    results = evaluate_runs(expand_runs(runs), metrics=metrics, seed=seed, data=data, device=device,
                            protocol_encode=protocol_encode, params=params, threads=threads,
                            echo=echo_stderr)
    click.echo(score_table(results))
    # what a metric has to say beyond its table cells (info: H(X) - D <= I_q <= R, per run)
    from disentangle.evaluation.metrics import get_metric
    for run, entries in results.items():
        for name, entry in entries.items():
            spec = get_metric(name)
            if spec.summary is not None:
                click.echo(f"\n{run}: {name}")
                click.echo(spec.summary(entry["values"]))


# --------------------------------------------------------------------------- score
@main.command("score")
@click.argument("codes", type=click.Path(dir_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Directory to write (config.json, scores.json); report and plot read it like a run.")
@click.option("--metric", "metrics", multiple=True, default=("all",), show_default=True,
              help="A metric that needs only codes (info_posterior also needs logvar) or all; repeatable.")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dataset file whose images the rows are, in index order (default: the dataset rule).")
@click.option("--dataset", "dataset_name", default=None,
              help="The rows' dataset by name (e.g. color-dsprites on the dSprites file; default: what --data holds).")
@click.option("--label", default=None, help="The method's name: the report's method column (default: CODES's stem).")
@click.option("--setting", "settings", multiple=True, metavar="KEY=VALUE",
              help="A configuration column of the row, e.g. beta=4 or seed=2; repeatable.")
@click.option("--factors", type=click.Path(dir_okay=False), default=None,
              help="A .npy of each row's factor classes, checked against the dataset's latents_classes.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of each metric's numpy Generator.")
@click.option("--param", "param_texts", multiple=True, metavar="METRIC.KEY=VALUE",
              help="Override a protocol parameter, e.g. mig.num_train=1000; repeatable.")
@unverified_data_option
def score_cmd(codes, out, metrics, data, dataset_name, label, settings, factors, seed, param_texts):
    """Score CODES (.npy, .npz with codes|mean [+ logvar], .h5): one row per dataset image
    in index order, from any model (docs/score.md)."""
    from disentangle.evaluation.evaluate import echo_stderr, parse_param, score_table
    from disentangle.evaluation.score import score_codes
    params: dict = {}
    for text in param_texts:
        metric, key, value = parse_param(text)
        params.setdefault(metric, {})[key] = value
    entries = score_codes(codes, out, metrics=metrics, data=data, label=label, settings=settings,
                          seed=seed, params=params, factors=factors, echo=echo_stderr, dataset=dataset_name)
    click.echo(score_table({out: entries}))


# --------------------------------------------------------------------------- evaluate-study
def _study_metrics() -> list[str]:
    from disentangle.evaluation.metrics import study_level
    return study_level()


@main.command("evaluate-study")
@click.argument("results", type=click.Path(file_okay=False))
@click.option("--metric", type=click.Choice(_study_metrics()), default=_study_metrics()[0], show_default=True,
              help="A study-level metric of the registry (udr compares each run with the other seeds "
                   "of its configuration).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the metric's numpy Generator (image sample, Lasso seeds).")
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dataset file (default: the one the runs trained on, else the dataset rule).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Device for building missing codes tables.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch/BLAS threads.")
@click.option("--param", "param_texts", multiple=True, metavar="udr.KEY=VALUE",
              help="Override a protocol parameter, e.g. udr.num_data_points=2000; repeatable.")
@unverified_data_option
def evaluate_study_cmd(results, metric, seed, data, device, threads, param_texts):
    """Score every run under RESULTS against the other seeds of its configuration (UDR) and
    merge the scores into each run's scores.json."""
    from disentangle.evaluation.evaluate import echo_stderr, parse_param
    from disentangle.evaluation.study_metrics import evaluate_study, study_table
    params: dict = {}
    for text in param_texts:
        name, key, value = parse_param(text)
        if name != metric:
            raise click.UsageError(f"--param {text!r}: not a parameter of {metric}")
        params[key] = value
    out = evaluate_study(results, metric=metric, seed=seed, data=data, device=device, params=params,
                         threads=threads, echo=echo_stderr)
    click.echo(study_table(out))   # (evaluate_study refuses a study with nothing to compare, naming why)


# --------------------------------------------------------------------------- import
@main.group("import")
def import_group():
    """Bring in models trained by other code as run directories (docs/external.md)."""


@import_group.command("disvae")
@click.argument("model_dir", type=click.Path(file_okay=False))
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Run directory to write (must not exist or be empty); evaluate, plot and report use it.")
def import_disvae_cmd(model_dir, out):
    """Import a YannDubs/disentangling-vae model directory (model.pt + specs.json of its
    Burgess model) as a finished run of the toolkit's burgess network."""
    from disentangle.external import import_disvae
    run = import_disvae(model_dir, out)
    cfg = run.config()
    training = run.saved()["origin"]["training"]
    method = cfg.get("method", cfg.get("objective"))
    click.echo(f"imported {model_dir} ({training['loss']} loss) as {run.path}: {method}, "
               f"{cfg['latent_dim']} latents, {cfg['steps']:,} steps ({training['epochs']} epochs), lr {cfg['lr']:g}")
    for note in training["differences"]:
        click.echo(f"  note: {note}")


if __name__ == "__main__":
    main()
