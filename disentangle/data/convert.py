"""`disentangle data fetch NAME`: obtain a dataset's source files (download or the user's
own copy, verified), convert them once into the toolkit's file, record what was verified.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from disentangle.data.datasets import DEFAULT_DATA_DIR, DATA_DIR_ENV_VAR, DatasetError, dataset_class
from disentangle.data.sources import SourceFile, obtain


def default_output(name: str) -> Path:
    cls = dataset_class(name)
    folder = Path(os.environ.get(DATA_DIR_ENV_VAR) or DEFAULT_DATA_DIR)
    return folder / cls.default_file


def fetch_dataset(name: str, out=None, url: str | None = None, md5: str | None = None,
                  sha256: str | None = None, file=None, keep_source: bool = True,
                  download_progress=None, convert_progress=None, **options) -> Path:
    """Obtain, verify and convert dataset ``name``; return the written file.

    ``url``: the source's URL (for a dataset of several files, the folder URL they sit in);
    ``file``: a source file the user has (or the folder holding a multi-file source);
    ``md5``/``sha256``: override the pinned checksum of a single-file source. A dataset
    class with its own ``fetch`` (CelebA: a zip or a folder, no pinned checksum) does the
    whole job; ``options`` go to it (e.g. CelebA's ``expected_count``)."""
    cls = dataset_class(name)
    if hasattr(cls, "fetch"):
        return cls.fetch(out=out, url=url, md5=md5, sha256=sha256, file=file, keep_source=keep_source,
                         download_progress=download_progress, convert_progress=convert_progress, **options)
    if options:
        raise DatasetError(f"{name}: no options {', '.join(options)}")
    sources: tuple[SourceFile, ...] = getattr(cls, "sources", ())
    if not sources:
        raise DatasetError(f"{name}: built from the dSprites file; fetch dsprites (or render it) instead")
    if (md5 or sha256) and len(sources) != 1:
        raise DatasetError(f"{name}: --md5/--sha256 apply to single-file sources; {name} has {len(sources)} files")
    out = Path(out) if out else default_output(name)
    folder = out.parent / ".downloads"
    records, paths = [], []
    for src in sources:
        if md5 or sha256:
            src = SourceFile(src.name, src.url, None, md5 or None, sha256 or None)
        f = None
        if file is not None:
            f = Path(file) / src.name if Path(file).is_dir() else Path(file)
        u = None
        if url is not None:
            u = url if len(sources) == 1 else url.rstrip("/") + "/" + src.name
        path, rec = obtain(src, folder, file=f, url=u, progress=download_progress)
        paths.append(path)
        records.append(rec)
    verified = {r["name"]: r["verified"] for r in records}
    attrs = {"source": "official", "source_files": json.dumps(records), "verified": json.dumps(verified)}
    try:
        result = cls.convert(paths, out, attrs, progress=convert_progress)
    except DatasetError:
        if file is None:   # a verified download of the wrong layout is of no use: leave nothing
            for p in paths:
                p.unlink(missing_ok=True)
        raise
    if not keep_source and file is None:
        for p in paths:
            p.unlink(missing_ok=True)
    return result
