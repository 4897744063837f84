"""The command line's trunk: the `disentangle` group, its one-line error handling (a
UserError or ParameterError becomes `Error: ...` naming the flag), and the helpers every
command module shares (progress bars, --unverified-data).
"""
from __future__ import annotations

import sys

import click

from disentangle import __version__
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


class Group(click.Group):
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


def progress_bar(total: int, desc: str, unit: str = "img"):
    # only on a terminal: a redirected log gets no carriage-return runs
    from disentangle.progress import bar
    return bar(total, desc, unit)


class LazyBar:
    """A progress bar made at the first update (a conversion's total is unknown up front);
    ``update(n)`` is the converters' progress callback."""

    def __init__(self, desc: str):
        self.desc, self.bar = desc, None

    def update(self, n: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(None, self.desc)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


UNVERIFIED_DATA_HELP = ("Use a dataset file without a recorded content checksum (refused otherwise): its images "
                        "are hashed as read and every record says content_check: unverified.")


def unverified_data_option(fn):
    """--unverified-data: the one explicit way to use a dataset file without content_sha256
    (disentangle.data.trust.accept_unverified around the command)."""
    import functools

    @functools.wraps(fn)
    def command(*args, unverified_data: bool = False, **kwargs):
        from disentangle.data.trust import accept_unverified
        with accept_unverified(unverified_data):
            return fn(*args, **kwargs)
    return click.option("--unverified-data", "unverified_data", is_flag=True, help=UNVERIFIED_DATA_HELP)(command)


@click.group(cls=Group)
@click.version_option(__version__, prog_name="disentangle")
def main():
    """Disentanglement benchmarking: beta-VAE on dSprites, metrics, rate/distortion,
    sweeps, reports and figures."""
