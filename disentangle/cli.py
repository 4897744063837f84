"""The `disentangle` command line. Thin: parse options, call the library, print.

Each command lives next to the others here; the work is done by library functions so
that everything the CLI does is also a Python API call.
"""
from __future__ import annotations

import sys
from typing import Callable

import click

from disentangle import __version__
from disentangle.config import DEVICES, PRESETS
from disentangle.errors import ParameterError, UserError


def flag_of(parameter: str) -> str:
    """The command-line flag of a library parameter: 'threads_per_job' -> '--threads-per-job';
    a metric's protocol parameter 'mig.num_train' -> '--param mig.num_train'."""
    if "." in parameter:
        return f"--param {parameter}"
    return "--" + parameter.replace("_", "-")


def user_message(exc: UserError) -> str:
    """The one line the CLI prints for ``exc``, parameters shown as their flags."""
    if isinstance(exc, ParameterError):
        return exc.message_for(flag_of(exc.parameter), show=flag_of)
    return str(exc)


# path-like options whose empty value would silently mean "here" or "the default"
_NON_EMPTY_OPTIONS = ("--out", "--data", "--url", "--spec", "--file", "--factors", "--md5", "--sha256")


def _refuse_empty_options(args) -> None:
    for k, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in _NON_EMPTY_OPTIONS and ((eq and not value.strip())
                                          or (not eq and k + 1 < len(args) and not args[k + 1].strip())):
            raise click.ClickException(f"{name}: must not be empty")


def _require_working_directory() -> None:
    # a deleted working directory makes relative paths meaningless and torch's MKL abort
    # with a fatal error while loading: refuse before anything is imported or written
    import os
    try:
        os.getcwd()
    except OSError:
        raise click.ClickException("the working directory no longer exists (deleted?); "
                                   "cd to an existing directory and run again") from None


def _suppress_os_errors():
    import contextlib
    return contextlib.suppress(OSError, ValueError)


class _Group(click.Group):
    """Turns UserError into a one-line message and exit status 1 (no traceback)."""

    def invoke(self, ctx):
        protected = ctx._protected_args if hasattr(ctx, "_protected_args") else ctx.protected_args
        _refuse_empty_options([*protected, *ctx.args])
        if ctx.parent is None:
            _require_working_directory()
        try:
            result = super().invoke(ctx)
            if ctx.parent is None and sys.stdout is not None:
                sys.stdout.flush()   # a full or closed stdout fails here, in one line below
            return result
        except UserError as exc:
            raise click.ClickException(user_message(exc)) from None
        except OSError as exc:
            import errno
            if exc.errno not in (errno.ENOSPC, errno.EPIPE, errno.EBADF, errno.EIO):
                raise
            with _suppress_os_errors():
                sys.stdout = None   # nothing more goes to the broken stream at exit
            raise click.ClickException(f"standard output: cannot write: {exc.strerror.lower()}") from None


def _progress_bar(total: int, desc: str, unit: str = "img"):
    # only on a terminal: a redirected log gets no carriage-return runs
    from disentangle.progress import bar
    return bar(total, desc, unit)


class _LazyBar:
    """A progress bar made at the first update (a conversion's total is unknown up front);
    ``update(n)`` is the converters' progress callback."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def update(self, n: int) -> None:
        if self.bar is None:
            self.bar = _progress_bar(None, self.desc)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


UNVERIFIED_DATA_HELP = ("Use a dataset file without a recorded content checksum (refused otherwise): its images "
                        "are hashed as read and every record says content_check: unverified.")


def _unverified_data_option(fn):
    """--unverified-data: the one explicit way to use a dataset file without content_sha256
    (disentangle.data.trust.accept_unverified around the command)."""
    import functools

    @functools.wraps(fn)
    def command(*args, unverified_data: bool = False, **kwargs):
        from disentangle.data.trust import accept_unverified
        with accept_unverified(unverified_data):
            return fn(*args, **kwargs)
    return click.option("--unverified-data", "unverified_data", is_flag=True, help=UNVERIFIED_DATA_HELP)(command)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="disentangle")
def main():
    """Disentanglement benchmarking: beta-VAE on dSprites, metrics, rate/distortion,
    sweeps, reports and figures."""


# --------------------------------------------------------------------------- data
@main.group(cls=_Group)
def data():
    """Get datasets: dSprites (official or a faithful offline rendering), its colour, noisy and
    Scream variants, Shapes3D, MPI3D, smallNORB, Cars3D, CelebA; import any folder of images."""


@data.command("render")
@click.option("--out", type=click.Path(dir_okay=False), default="data/dsprites-rendered.h5",
              show_default=True, help="Dataset file to write.")
@click.option("--pos-y-bottom", is_flag=True,
              help="Put posY index 0 at the bottom rows (the one open convention, DSPRITES.md 3.6).")
@click.option("--keep", "keep", multiple=True, metavar="FACTOR=CLASSES",
              help="Render a sub-grid: keep only these classes of FACTOR, as START:STOP:STEP or a "
                   "comma list (e.g. orientation=0:40:4); repeat for several factors.")
def data_render(out, pos_y_bottom, keep):
    """Render all 737,280 dSprites images (or a sub-grid, --keep) into an HDF5 dataset file."""
    from disentangle.data.dsprites import render_dataset
    from disentangle.data.ground_truth import GroundTruth
    from disentangle.io import refuse_non_regular
    from disentangle.rundir import refuse_run_file
    refuse_run_file(out)
    refuse_non_regular(out)   # before the rendering, not after it
    gt = GroundTruth.dsprites()
    if keep:
        gt = gt.subgrid(_parse_keep(keep, dict(zip(gt.factor_names, gt.factor_sizes))))
    with _progress_bar(gt.num_images, "render") as bar:
        path = render_dataset(out, gt, pos_y_top=not pos_y_bottom, progress=bar.update)
    click.echo(f"wrote {path} ({gt.num_images} images, rendered)")


def _parse_keep(items, sizes: dict[str, int] | None = None) -> dict[str, list[int]]:
    """--keep FACTOR=START:STOP:STEP or FACTOR=I,J,K -> {factor: [classes]}. With
    ``sizes`` (factor -> class count) the factor and every bound are checked before any
    list is built (a huge STOP never allocates)."""
    keep: dict[str, list[int]] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        try:
            if not sep or not name or not spec:
                raise ValueError
            if ":" in spec:
                parts = [int(p) if p else None for p in spec.split(":")]
                if len(parts) > 3 or parts[1] is None:
                    raise ValueError
                start, stop = parts[0] or 0, parts[1]
                step = parts[2] if len(parts) == 3 else 1
                if step is None or step < 1:
                    raise click.UsageError(f"--keep {item!r}: STEP must be a positive integer")
                if sizes is not None and name in sizes and not 0 <= start < stop <= sizes[name]:
                    raise click.UsageError(f"--keep {item!r}: {name} has classes 0 to {sizes[name] - 1}; "
                                           f"need 0 <= START < STOP <= {sizes[name]}")
                classes = list(range(start, stop, step)) if sizes is not None or stop - start < 10**6 else None
                if classes is None:
                    raise click.UsageError(f"--keep {item!r}: range too large")
            else:
                texts = spec.split(",")
                if sizes is not None and name in sizes and len(texts) > sizes[name]:
                    raise click.UsageError(f"--keep {item!r}: {name} has only {sizes[name]} classes")
                classes = [int(p) for p in texts]
                if sizes is not None and name in sizes:
                    bad = [c for c in classes if not 0 <= c < sizes[name]]
                    if bad:
                        raise click.UsageError(f"--keep {item!r}: {name} has classes 0 to {sizes[name] - 1}, "
                                               f"not {bad[0]}")
        except ValueError:
            raise click.UsageError(f"--keep {item!r}: expected FACTOR=START:STOP[:STEP] or FACTOR=I,J,..., "
                                   f"e.g. orientation=0:40:4") from None
        if sizes is not None and name not in sizes:
            raise click.UsageError(f"--keep {item!r}: unknown factor {name!r} (factors: {', '.join(sizes)})")
        if name in keep:
            raise click.UsageError(f"--keep {item!r}: factor {name!r} given twice")
        keep[name] = classes
    return keep


@data.command("fetch")
@click.argument("name", required=False, default="dsprites")
@click.option("--url", default=None, help="Where to download the source from (default: its known location; "
              "for a dataset of several files, the folder URL).")
@click.option("--md5", default=None, help="Expected md5 of the source file (overrides the pinned checksum).")
@click.option("--sha256", default=None, help="Expected sha256 of the source file (overrides the pinned checksum).")
@click.option("--file", "file", type=click.Path(), default=None,
              help="Convert a source file you already have (for several files, their folder) instead of downloading.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Dataset file to write (default: data/<name>.h5, data/dsprites.h5 for dsprites).")
@click.option("--keep-npz", is_flag=True, help="dsprites: keep the downloaded npz beside the output.")
@click.option("--any-count", is_flag=True,
              help="celeba: convert a copy with another number of images than the official 202,599 "
                   "(recorded as not verified).")
def data_fetch(name, url, md5, sha256, file, out, keep_npz, any_count):
    """Download dataset NAME (default dsprites), verify it, convert it once to HDF5.

    NAME: dsprites, color-dsprites, noisy-dsprites, scream-dsprites (fetches the Scream
    JPEG), shapes3d, mpi3d-toy, mpi3d-realistic, mpi3d-real, smallnorb, cars3d, celeba
    (--file img_align_celeba.zip or its folder, or --url: the official host needs a browser)."""
    if any_count and name != "celeba":
        raise click.UsageError("--any-count applies to celeba only")
    if out:
        from disentangle.io import refuse_non_regular
        from disentangle.rundir import refuse_run_file
        refuse_run_file(out)
        refuse_non_regular(out)
    state = {}

    def dl_progress(got, total):
        if "bar" not in state:
            state["bar"] = _progress_bar(total, "download", unit="B")
        state["bar"].update(got - state["bar"].n)

    if name == "dsprites":
        from disentangle.data import dsprites
        if sha256 or file:
            raise click.UsageError("dsprites: --sha256 and --file are not supported; use --url and --md5")
        try:
            path = dsprites.fetch_official(out or "data/dsprites.h5", url=url or dsprites.OFFICIAL_URL,
                                           md5=md5 or dsprites.OFFICIAL_MD5, keep_npz=keep_npz,
                                           download_progress=dl_progress)
        finally:
            if "bar" in state:
                state["bar"].close()
        info = dsprites.dataset_info(path)
        click.echo(f"wrote {path} ({info['num_images']} images, official, {info['source_checksum']})")
        return
    if name in ("color-dsprites", "noisy-dsprites"):
        raise click.UsageError(f"{name} is built from the dSprites file at run time: "
                               f"`disentangle data fetch dsprites` (or `data render`) is all it needs")
    from disentangle.data.convert import fetch_dataset
    from disentangle.data.datasets import dataset_class
    dataset_class(name)  # unknown name: one line before any work
    converting = _LazyBar("convert")
    try:
        options = {"expected_count": None} if any_count else {}
        path = fetch_dataset(name, out=out, url=url, md5=md5, sha256=sha256, file=file,
                             download_progress=dl_progress, convert_progress=converting.update, **options)
    finally:
        if state.get("bar") is not None:
            state["bar"].close()
        converting.close()
    click.echo(f"wrote {path} ({name})")


@data.command("import-folder")
@click.argument("path", type=click.Path(exists=True))
@click.option("--name", required=True,
              help="The dataset's name (lowercase letters, digits, '-', '_'): written to data/<name>.h5 "
                   "and opened by that name afterwards.")
@click.option("--crop", default="center", show_default=True,
              help="center: the largest centred square; center:N: a centred N x N square; none: the whole "
                   "frame (the aspect ratio changes). Then resized to 64x64 (Lanczos).")
@click.option("--grey/--rgb", "grey", default=False, help="Grey (Pillow L, 1 channel) or RGB (3, default).")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Dataset file to write (default: data/<name>.h5, or $DISENTANGLE_DATA_DIR/<name>.h5).")
@click.option("--overwrite", is_flag=True, help="Replace an existing dataset file.")
def data_import_folder(path, name, crop, grey, out, overwrite):
    """Convert a folder (or a zip) of images into dataset NAME, once: images in the sorted
    order of their relative paths, cropped and resized to 64x64, no ground-truth factors.
    Files without an image suffix are skipped and counted; an unreadable image is refused."""
    from disentangle.data.image_folder import import_folder
    converting = _LazyBar("convert")
    try:
        written, source = import_folder(path, name, out=out, crop=crop, channels=1 if grey else 3,
                                        overwrite=overwrite, progress=converting.update)
    finally:
        converting.close()
    skipped = f", {source.ignored} other files skipped" if source.ignored else ""
    click.echo(f"wrote {written} ({len(source.names)} images from {path}{skipped}); dataset name: {name}")


@data.command("info")
@click.argument("target", required=False)
@_unverified_data_option
def data_info(target):
    """Print source, checksums, image count and factors of a dataset: a NAME (found by its
    path rule) or a FILE (default: the dSprites rule). The images are read once to verify
    the recorded content checksum."""
    from pathlib import Path

    from disentangle.data.datasets import REGISTRY, open_dataset, open_file
    from disentangle.data.dsprites import dataset_info, resolve_data_path
    from disentangle.data.image_folder import imported_path
    if (target in REGISTRY or imported_path(target or "") is not None) and not Path(target).exists():
        ds = open_dataset(target)
    else:
        path = resolve_data_path(target)
        ds = open_file(path) if path.is_file() else None
    if ds is None or type(ds).__name__ == "DSprites":
        info = dataset_info(ds.path if ds is not None else path)   # the dSprites summary, as before
    else:
        if hasattr(ds, "verify"):
            ds.verify()
        info = ds.info()
        unverified = info.pop("content_check", None)
        info["content_check"] = ((f"{unverified} (no content_sha256 recorded in the file; the checksum shown "
                                  f"is of the images as read)") if unverified
                                 else "verified" if hasattr(ds, "verify") else "the dSprites file's, at load")
    for key, value in info.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = "; ".join(str(v) for v in value)
        click.echo(f"{key + ':':18s}{value}")


# --------------------------------------------------------------------------- commands of the other layers
# (train, evaluate, sweep, report, plot are added below by their layers)


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


class _SweepGroup(_FieldOptions, _Group):
    field_keys = staticmethod(_sweep_keys)
    sweep = True


# --------------------------------------------------------------------------- train
@main.command("train", cls=_TrainCommand)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: results/<run name>, e.g. results/beta-vae_b4_s0).")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="cpu-short: 10k steps (the defaults); dlib: the disentanglement_lib study, 300k steps.")
@_unverified_data_option
def train_cmd(out, preset, **options):
    """Train one run of one method (resumes an interrupted run; a finished one is skipped).
    Defaults shown are the cpu-short preset's; a preset changes several."""
    from disentangle.config import TrainConfig, check_hyperparameters_given
    from disentangle.train import train
    config = TrainConfig.from_preset(preset, **options).validate()
    check_hyperparameters_given(config.method, [k for k, v in options.items() if v is not None])
    train(config, out, progress=True, echo=lambda msg: click.echo(msg, err=True))


# --------------------------------------------------------------------------- report and plot
class _WarningsToStderr:
    """Show library warnings (unreadable scores, mixed groups) as one 'warning:' line each."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings(record=True)
        self._caught = self._ctx.__enter__()
        warnings.simplefilter("always")
        return self

    shown = 5  # a sweep in progress has many unevaluated runs: name a few, count the rest

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        messages = list(dict.fromkeys(str(w.message) for w in self._caught))
        for message in messages[:self.shown]:
            click.echo(f"warning: {message}", err=True)
        if len(messages) > self.shown:
            click.echo(f"warning: ... and {len(messages) - self.shown} more like these", err=True)
        return False


@main.command("report")
@click.argument("results", type=click.Path(file_okay=False))
@click.option("--format", "fmt", type=click.Choice(["markdown", "csv", "latex"]), default="markdown",
              show_default=True, help="Table format (LaTeX: booktabs, drops into a paper).")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the table here (default: print).")
@click.option("--group-by", default=None,
              help="Aggregate over seeds: comma-separated columns, e.g. method,beta (always split by data source).")
@click.option("--metric", "metrics", multiple=True,
              help="Metric (mig) or score column (info.rate_nats) to show; repeat for several. Default: headline scores.")
@click.option("--detail", is_flag=True,
              help="Markdown: after the headline tables, one table per metric with all its scores.")
def report_cmd(results, fmt, out, group_by, metrics, detail):
    """Table of the runs under RESULTS: one row per run, or mean ± std over seeds. Markdown:
    a headline table (one column per metric, the registry's labels) and an information
    table; --detail adds one table per metric; CSV has every column."""
    from disentangle.report import write_report
    from disentangle.rundir import refuse_run_file
    if out:
        refuse_run_file(out)
    elif sys.stdout is None:
        raise click.ClickException("standard output is closed; give --out FILE")
    with _WarningsToStderr():
        text = write_report(results, fmt, out, group_by, list(metrics) or None, detail)
    if out:
        click.echo(f"wrote {out}", err=True)
    else:
        click.echo(text, nl=False)


@main.group("plot", cls=_Group)
def plot():
    """Figures (PNG and vector PDF side by side): rate-distortion, metric-vs-strength
    (first name: metric-vs-beta), traversal, reconstructions, training."""


def _save(fig, out, dpi):
    from disentangle.plots import output_paths, save_figure
    from disentangle.rundir import refuse_run_file
    for path in output_paths(out):
        refuse_run_file(path)
    for path in save_figure(fig, out, dpi=dpi, echo=lambda msg: click.echo(msg, err=True)):
        click.echo(f"wrote {path}")


def _out_option(fn):
    fn = click.option("--dpi", type=click.IntRange(50, 600), default=200, show_default=True,
                      help="Resolution of the PNG (the PDF is vector).")(fn)
    return click.option("--out", type=click.Path(dir_okay=False), default=None,
                        help="Figure path; .png and .pdf are both written (default: DIR/figures/NAME.png).")(fn)
_device_option = click.option("--device", type=click.Choice(DEVICES), default="cpu",
                              show_default=True, help="Where the decoder runs.")


def _finite(value: float, flag: str) -> float:
    import math
    if not math.isfinite(value):   # click's FloatRange lets NaN through (every comparison is False)
        raise click.BadParameter(f"must be a finite number, got {value}", param_hint=flag)
    return value


def _device(name: str) -> str:
    from disentangle.devices import resolve_device
    return resolve_device(name)


@plot.command("rate-distortion")
@click.argument("results", type=click.Path(file_okay=False))
@_out_option
def plot_rate_distortion(results, out, dpi):
    """Every run on the rate-distortion plane (nats) with D = H(X) - R: coloured by method
    (marker size: strength), or for one method by its strength."""
    from disentangle import plots
    from disentangle.results import collect
    with _WarningsToStderr():
        fig = plots.rate_distortion(collect(results))
    _save(fig, out or plots.default_out(results, "rate_distortion.png"), dpi)


def _metric_vs_strength(results, metrics, out, dpi, name):
    from disentangle import plots
    from disentangle.results import collect
    with _WarningsToStderr():
        fig = plots.metric_vs_strength(collect(results), list(metrics))
    _save(fig, out or plots.default_out(results, f"{name}.png"), dpi)


_metric_option = click.option("--metric", "metrics", multiple=True, required=True,
                              help="Metric (mig) or score column (dci.completeness); repeat for panel columns.")


@plot.command("metric-vs-strength")
@click.argument("results", type=click.Path(file_okay=False))
@_metric_option
@_out_option
def plot_metric_vs_strength(results, metrics, out, dpi):
    """Scores against regularisation strength: a panel row per method on its own
    hyper-parameter's axis (beta, C_max, gamma, lambda_od), a column per metric; mean and
    ±1 std band over seeds."""
    _metric_vs_strength(results, metrics, out, dpi, "metric_vs_strength")


@plot.command("metric-vs-beta")
@click.argument("results", type=click.Path(file_okay=False))
@_metric_option
@click.option("--x", "x", type=click.Choice(["beta", "gamma", "capacity_max"]), default=None, hidden=True)
@_out_option
def plot_metric_vs_beta(results, metrics, x, out, dpi):
    """The first name of metric-vs-strength (default file: figures/metric_vs_beta.png)."""
    if x is not None:
        click.echo("note: --x is no longer needed: every method is drawn on its own hyper-parameter's axis",
                   err=True)
    _metric_vs_strength(results, metrics, out, dpi, "metric_vs_beta")


_study_metrics_option = click.option("--metric", "metrics", multiple=True,
                                     help="Metric to include; repeat for several. Default: every metric with scores.")


def _study_figure(results, metrics, out, dpi, make, name):
    from disentangle import plots
    from disentangle.report import headline_column
    from disentangle.results import collect
    with _WarningsToStderr():
        df = collect(results)
        columns = [headline_column(df, m) for m in metrics] or None
        fig = make(df, columns)
    _save(fig, out or plots.default_out(results, name), dpi)


@plot.command("metric-correlation")
@click.argument("results", type=click.Path(file_okay=False))
@_study_metrics_option
@_out_option
def plot_metric_correlation(results, metrics, out, dpi):
    """Spearman rank correlation between the metrics over all runs under RESULTS, one
    heatmap per dataset (Locatello et al. 2019, Fig. 3); needs 5 runs with every metric."""
    from disentangle import plots
    _study_figure(results, metrics, out, dpi, plots.metric_correlation, "metric_correlation.png")


@plot.command("metric-distribution")
@click.argument("results", type=click.Path(file_okay=False))
@_study_metrics_option
@_out_option
def plot_metric_distribution(results, metrics, out, dpi):
    """Distribution of each metric per method over all runs under RESULTS: one panel per
    metric, a violin per method, each run a dot (Locatello et al. 2019)."""
    from disentangle import plots
    _study_figure(results, metrics, out, dpi, plots.metric_distribution, "metric_distribution.png")


@plot.command("traversal")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dataset file (default: the one the run recorded; its checksum must match).")
@click.option("--images", "n_images", type=click.IntRange(1, 12), default=3, show_default=True, help="Base images.")
@click.option("--steps", type=click.IntRange(2, 21), default=9, show_default=True, help="Values per sweep.")
@click.option("--span", type=click.FloatRange(0, 100, min_open=True), default=3.0, show_default=True,
              callback=lambda ctx, param, v: _finite(v, "--span"),
              help="Sweep z_d over [-span, span] prior standard deviations.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Chooses the base images.")
@click.option("--dims", "max_dims", type=click.IntRange(min=1), default=10, show_default=True,
              help="Show the DIMS latent dimensions with the most KL.")
@click.option("--gif", type=click.Path(dir_okay=False), default=None,
              help="Also write an animated GIF here: one frame per value, latents x base images.")
@click.option("--frame-ms", type=click.IntRange(min=20), default=250, show_default=True,
              help="GIF frame duration (milliseconds).")
@_device_option
@_out_option
@_unverified_data_option
def plot_traversal(run, data, n_images, steps, span, seed, max_dims, gif, frame_ms, device, out, dpi):
    """Latent traversals of RUN around real images, dimensions sorted by KL, each row
    labelled with its KL; --out x.gif writes only the animated GIF."""
    from disentangle import plots
    from disentangle.evaluation import figure_data
    if gif is not None and not str(gif).lower().endswith(".gif"):
        raise click.BadParameter(f"{gif}: must end in .gif", param_hint="--gif")
    t = figure_data.traversals(run, data, n_images=n_images, steps=steps, span=span, seed=seed,
                               device=_device(device), max_dims=max_dims)
    gifs = [p for p in (gif, out) if p is not None and str(p).lower().endswith(".gif")]
    for path in gifs:
        click.echo(f"wrote {plots.save_traversal_gif(t, path, duration_ms=frame_ms)}")
    if not (out and str(out).lower().endswith(".gif")):
        _save(plots.traversal(t), out or plots.default_out(run, "traversal.png"), dpi)


@plot.command("reconstructions")
@click.argument("run", type=click.Path(file_okay=False))
@click.option("--data", type=click.Path(dir_okay=False), default=None,
              help="Dataset file (default: the one the run recorded; its checksum must match).")
@click.option("--images", "n_images", type=click.IntRange(1, 32), default=10, show_default=True)
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True, help="Chooses the images.")
@_device_option
@_out_option
@_unverified_data_option
def plot_reconstructions(run, data, n_images, seed, device, out, dpi):
    """Originals over reconstructions of RUN, each labelled with its distortion (nats)."""
    from disentangle import plots
    from disentangle.evaluation import figure_data
    fig = plots.reconstructions(figure_data.reconstructions(run, data, n_images=n_images, seed=seed,
                                                            device=_device(device)))
    _save(fig, out or plots.default_out(run, "reconstructions.png"), dpi)


@plot.command("training")
@click.argument("runs", nargs=-1, required=True, type=click.Path(file_okay=False))
@_out_option
def plot_training(runs, out, dpi):
    """Loss, reconstruction and KL (total and per dimension) against step for RUNS."""
    from disentangle import plots
    fig = plots.training(runs)
    _save(fig, out or plots.default_training_out(runs), dpi)


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
@_unverified_data_option
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
@_unverified_data_option
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
@_unverified_data_option
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
@_unverified_data_option
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
