"""The `disentangle` command line. Thin: parse options, call the library, print.

Each command lives next to the others here; the work is done by library functions so
that everything the CLI does is also a Python API call.
"""
from __future__ import annotations

import sys

import click

from disentangle import __version__
from disentangle.errors import UserError


class _Group(click.Group):
    """Turns UserError into a one-line message and exit status 1 (no traceback)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as exc:
            raise click.ClickException(str(exc)) from None


def _progress_bar(total: int, desc: str, unit: str = "img"):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                dynamic_ncols=True, mininterval=0.5)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="disentangle")
def main():
    """Disentanglement benchmarking: beta-VAE on dSprites, metrics, rate/distortion,
    sweeps, reports and figures."""


# --------------------------------------------------------------------------- data
@main.group(cls=_Group)
def data():
    """Get dSprites: the official file, or a faithful offline rendering."""


@data.command("render")
@click.option("--out", type=click.Path(dir_okay=False), default="data/dsprites-rendered.h5",
              show_default=True, help="Dataset file to write.")
@click.option("--pos-y-bottom", is_flag=True,
              help="Put posY index 0 at the bottom rows (the one open convention, DSPRITES.md 3.6).")
def data_render(out, pos_y_bottom):
    """Render all 737,280 dSprites images into an HDF5 dataset file."""
    from disentangle.data.dsprites import render_dataset
    from disentangle.data.ground_truth import GroundTruth
    gt = GroundTruth.dsprites()
    with _progress_bar(gt.num_images, "render") as bar:
        path = render_dataset(out, gt, pos_y_top=not pos_y_bottom, progress=bar.update)
    click.echo(f"wrote {path} ({gt.num_images} images, rendered)")


@data.command("fetch")
@click.option("--url", default=None, help="Where to download the official npz from (default: the dsprites-dataset repository).")
@click.option("--md5", default=None, help="Expected md5 of the npz (default: the official file's).")
@click.option("--out", type=click.Path(dir_okay=False), default="data/dsprites.h5", show_default=True,
              help="Dataset file to write.")
@click.option("--keep-npz", is_flag=True, help="Keep the downloaded npz beside the output.")
def data_fetch(url, md5, out, keep_npz):
    """Download the official dSprites npz, verify its checksum, convert it to HDF5."""
    from disentangle.data import dsprites
    url = url or dsprites.OFFICIAL_URL
    md5 = md5 or dsprites.OFFICIAL_MD5
    state = {}

    def dl_progress(got, total):
        if "bar" not in state:
            state["bar"] = _progress_bar(total, "download", unit="B")
        state["bar"].update(got - state["bar"].n)

    try:
        path = dsprites.fetch_official(out, url=url, md5=md5, keep_npz=keep_npz,
                                       download_progress=dl_progress)
    finally:
        if "bar" in state:
            state["bar"].close()
    info = dsprites.dataset_info(path)
    click.echo(f"wrote {path} ({info['num_images']} images, official, {info['source_checksum']})")


@data.command("info")
@click.argument("path", type=click.Path(dir_okay=False), required=False)
def data_info(path):
    """Print source, checksum, image count and factor sizes of a dataset file."""
    from disentangle.data.dsprites import dataset_info, resolve_data_path
    info = dataset_info(resolve_data_path(path))
    for key, value in info.items():
        if key == "factors":
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        click.echo(f"{key + ':':18s}{value}")


# --------------------------------------------------------------------------- commands of the other layers
# (train, evaluate, sweep, report, plot are added below by their layers)


# --------------------------------------------------------------------------- train
@main.command("train")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: results/<objective>-b<beta>-s<seed>).")
@click.option("--preset", type=click.Choice(["cpu-short", "dlib"]), default=None,
              help="cpu-short: 10k steps (the defaults); dlib: the disentanglement_lib study, 300k steps.")
@click.option("--objective", type=click.Choice(["beta-h", "beta-b"]), default=None,
              help="beta-h: recon + beta*KL (default); beta-b: recon + gamma*|KL - C| (Burgess et al.).")
@click.option("--beta", type=float, default=None, help="KL weight of beta-h (default 1).")
@click.option("--gamma", type=float, default=None, help="Weight of |KL - C| in beta-b (default 1000).")
@click.option("--capacity-max", type=float, default=None, help="Final capacity C in nats, beta-b (default 25).")
@click.option("--capacity-steps", type=int, default=None, help="Steps over which C rises from 0 (preset's).")
@click.option("--likelihood", type=click.Choice(["bernoulli", "gaussian"]), default=None,
              help="bernoulli (default; binary pixels) or gaussian (sum of squared errors).")
@click.option("--latent-dim", type=int, default=None, help="Latent dimensions (default 10).")
@click.option("--batch-size", type=int, default=None, help="Batch size (default 64).")
@click.option("--lr", type=float, default=None, help="Adam learning rate (default 1e-4).")
@click.option("--steps", type=int, default=None, help="Training steps (preset's).")
@click.option("--seed", type=int, default=None, help="Seed of weights, batches and noise (default 0).")
@click.option("--data", type=click.Path(dir_okay=False), default=None, help="Dataset file (default: the dataset rule).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="auto picks a GPU when present.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--checkpoint-every", type=int, default=None, help="Steps between checkpoints (preset's).")
@click.option("--log-every", type=int, default=None, help="Steps between train_log.csv rows (preset's).")
@click.option("--compile/--no-compile", "compile_", default=None, help="torch.compile the training step.")
def train_cmd(out, preset, compile_, **options):
    """Train one beta-VAE run (resumes an interrupted run; a finished one is skipped)."""
    from disentangle.config import TrainConfig
    from disentangle.train import train
    config = TrainConfig.from_preset(preset, compile=compile_, **options).validate()
    train(config, out, progress=True, echo=lambda msg: click.echo(msg, err=True))


if __name__ == "__main__":
    main()
