"""`disentangle data`: render, fetch, import and describe dataset files.
"""
from __future__ import annotations


import click

from disentangle.cli.base import Group, LazyBar, main, progress_bar, unverified_data_option


# --------------------------------------------------------------------------- data
@main.group(cls=Group)
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
    with progress_bar(gt.num_images, "render") as bar:
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
            state["bar"] = progress_bar(total, "download", unit="B")
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
    converting = LazyBar("convert")
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
    converting = LazyBar("convert")
    try:
        written, source = import_folder(path, name, out=out, crop=crop, channels=1 if grey else 3,
                                        overwrite=overwrite, progress=converting.update)
    finally:
        converting.close()
    skipped = f", {source.ignored} other files skipped" if source.ignored else ""
    click.echo(f"wrote {written} ({len(source.names)} images from {path}{skipped}); dataset name: {name}")


@data.command("info")
@click.argument("target", required=False)
@unverified_data_option
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
