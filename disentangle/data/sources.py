"""Getting a dataset's source files: resumable download, size and checksum verification,
and the record of what was verified (stored in the converted file's attributes).

A download goes to ``.<file>.disentangle-download`` beside its destination and is renamed only once it is
complete and its checksum matches; a run interrupted mid-transfer resumes from the
partial file with an HTTP Range request (a server that ignores Range restarts it). A
checksum mismatch deletes the partial file: nothing is written. (A hidden name of the
toolkit's own: a user's ``<file>.part`` is never resumed into or deleted.)
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from disentangle.data.datasets import DatasetError
from disentangle.io import open_in_place, refuse_non_regular


def copy_response(resp, fh, got: int, total: int | None, progress=None) -> int:
    """Copy an HTTP response into ``fh`` in 1 MiB blocks, reporting (bytes so far, total);
    returns the byte count (``got`` plus what was read)."""
    while True:
        block = resp.read(1 << 20)
        if not block:
            return got
        fh.write(block)
        got += len(block)
        if progress is not None:
            progress(got, total)


@dataclass(frozen=True)
class SourceFile:
    """One file a dataset is built from: where it lives and what pins it (any may be None)."""

    name: str
    url: str | None = None
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None


def digests(path: str | os.PathLike) -> dict:
    """{"bytes", "md5", "sha256"} of a file, read once in 1 MiB blocks."""
    md5, sha = hashlib.md5(), hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            md5.update(block)
            sha.update(block)
            size += len(block)
    return {"bytes": size, "md5": md5.hexdigest(), "sha256": sha.hexdigest()}


def verify(path: Path, source: SourceFile, label: str | None = None) -> dict:
    """Check a file against its pinned size and checksums; return its record
    (name, bytes, md5, sha256, and ``verified``: which pins were checked)."""
    label = label or str(path)
    d = digests(path)
    checked = []
    if source.size is not None:
        if d["bytes"] != source.size:
            raise DatasetError(f"{label}: size mismatch ({d['bytes']} bytes, expected {source.size}); nothing was written")
        checked.append("bytes")
    for algo in ("md5", "sha256"):
        want = getattr(source, algo)
        if want:
            if d[algo] != want.lower():
                raise DatasetError(f"{label}: checksum mismatch ({algo} {d[algo]}, expected {want}); nothing was written")
            checked.append(algo)
    return {"name": source.name, **d, "verified": checked or ["nothing pinned: sha256 recorded"]}


def download(url: str, out: str | os.PathLike, source: SourceFile,
             progress: Callable[[int, int | None], None] | None = None, timeout: float = 60.0) -> dict:
    """Download ``url`` to ``out`` (resuming ``out``.part), verify it, rename it into place.
    Returns the verification record."""
    out = Path(out)
    # a hidden name of this toolkit's own (resumable, so not random): never a user's "<file>.part"
    part = out.with_name(f".{out.name}.disentangle-download")
    refuse_non_regular(out)
    refuse_non_regular(part, links=False)
    out.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        try:
            resp = urllib.request.urlopen(req, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:   # the .part is already complete
                resp = None
            else:
                raise
        if resp is not None:
            with resp:
                if have and resp.status != 206:
                    have = 0   # the server ignored Range: start over
                length = resp.headers.get("Content-Length")
                total = have + int(length) if length is not None else None
                got = have
                flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if have else os.O_TRUNC)
                with open(open_in_place(part, flags), "ab" if have else "wb") as fh:
                    got = copy_response(resp, fh, got, total, progress)
                if total is not None and got != total:
                    raise DatasetError(f"{url}: download truncated ({got} of {total} bytes); kept {part} "
                                       f"to resume, nothing else was written")
    except DatasetError:
        raise
    except http.client.IncompleteRead:
        got = part.stat().st_size if part.exists() else 0
        raise DatasetError(f"{url}: download truncated ({got} bytes so far); kept {part} to resume, "
                           f"nothing else was written") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise DatasetError(f"{url}: download failed ({reason}); nothing was written") from None
    try:
        record = verify(part, source, label=url)
    except DatasetError:
        part.unlink(missing_ok=True)
        raise
    refuse_non_regular(out)
    os.replace(part, out)
    return {**record, "url": url}


def obtain(source: SourceFile, folder: Path, file: str | os.PathLike | None = None, url: str | None = None,
           progress=None) -> tuple[Path, dict]:
    """The local path of a source file and its verification record: ``file`` if the user
    has it (verified in place), else a download from ``url`` (or the pinned one) into
    ``folder``."""
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise DatasetError(f"{path}: no such file")
        return path, {**verify(path, source), "file": str(path)}
    url = url or source.url
    if not url:
        raise DatasetError(f"{source.name}: no download location known; pass its URL or the file you have")
    path = folder / source.name
    if path.is_file():   # a previous complete download: verify again rather than trust it
        return path, {**verify(path, source), "url": url}
    return path, download(url, path, source, progress=progress)
