"""CelebA, aligned and cropped (Liu et al. 2015, ``img_align_celeba``): 202,599 JPEGs of
178 x 218 (width x height) named ``000001.jpg`` ... ``202599.jpg``; no ground-truth factors
(the 40 attributes are not factors of a grid, and are not used).

Source: the official ``img_align_celeba.zip`` (members ``img_align_celeba/000001.jpg`` ...)
or that folder unpacked. The official host (Google Drive / Baidu, linked from
https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) needs a browser, so ``data fetch
celeba`` takes the user's zip (``--file``) or a URL they can reach (``--url``). There is no
official checksum: the zip's sha256 is recorded; verified are the count (202,599), the
names (a contiguous 000001 ... N) and every JPEG's size (178 x 218) and colour (RGB).

Preprocessing follows YannDubs/disentangling-vae (commit f045219), ``utils/datasets.py``:
``CelebA.download`` (lines 268-269) calls ``preprocess(self.train_data, size=(64, 64))``
without a centre crop, and ``preprocess`` (lines 411-413) does ``img.resize(size,
Image.ANTIALIAS)``: the whole 178 x 218 frame resized to 64 x 64 with Lanczos (Pillow's
``ANTIALIAS`` is ``LANCZOS``). Why this one: the beta-VAE paper (Higgins et al. 2017) gives
64 x 64 x 3 but no crop; the two reference implementations of that paper's CelebA setting
agree on resizing the full frame — disentangling-vae, which benchmarks the beta-VAE family,
and 1Konny/Beta-VAE (``dataset.py`` lines 56-60, ``transforms.Resize((64, 64))`` on the
folder, bilinear) — so faces keep the framing of those published traversals (slightly
narrowed: 218/178 = 1.22 vertical squeeze). Deviation: disentangling-vae saves the resized
image as a JPEG again (quality 75) and trains on that second lossy encoding; we keep the
resized pixels exactly (uint8). Other crops (e.g. PyTorch-VAE's ``CenterCrop(148)``) are
available through ``data import-folder img_align_celeba.zip --crop center:148``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

from disentangle.data.datasets import DatasetError, data_dir
from disentangle.data.image_file import ImageFile
from disentangle.data.image_folder import ImageSource, Preprocess, convert_source
from disentangle.data.sources import SourceFile, obtain

OFFICIAL_COUNT = 202_599
JPEG_SIZE = (178, 218)          # width, height
ZIP_NAME = "img_align_celeba.zip"
MEMBER = re.compile(r"^(?:(.*)/)?(\d{6})\.jpg$")
PREPROCESS = Preprocess(crop="none", channels=3, exif_transpose=False)
REFERENCE = ("YannDubs/disentangling-vae f045219 utils/datasets.py: CelebA.download -> "
             "preprocess(size=(64, 64)) (lines 268-269), img.resize(size, Image.ANTIALIAS) (lines 411-413)")
HOW_TO_GET = ("celeba: the official host needs a browser: from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html "
              "follow 'Align&Cropped Images' (Google Drive or Baidu) and download img_align_celeba.zip "
              "(about 1.4 GB), then `disentangle data fetch celeba --file img_align_celeba.zip` "
              "(or --url URL for a copy you can reach)")


def check_names(source: ImageSource, expected_count: int | None) -> list[str]:
    """The verification of the names: every JPEG is ``NNNNNN.jpg`` in one folder, numbered
    000001 ... N without gaps, and N is ``expected_count`` (None: any N, recorded as not
    verified). Returns what was verified."""
    where = str(source.path)
    if not source.names:
        raise DatasetError(f"{where}: no img_align_celeba/NNNNNN.jpg images found; nothing was written")
    folders, numbers = set(), []
    for name in source.names:
        m = MEMBER.match(name)
        if m is None:
            raise DatasetError(f"{where}: {name} is not named like the release's NNNNNN.jpg; nothing was written")
        folders.add(m.group(1) or "")
        numbers.append(int(m.group(2)))
    if len(folders) > 1:
        raise DatasetError(f"{where}: JPEGs in {len(folders)} folders ({', '.join(sorted(folders)[:3])}); "
                           f"expected one img_align_celeba folder; nothing was written")
    n = len(numbers)
    if numbers != list(range(1, n + 1)):
        missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
        gap = f"{missing[0]:06d}.jpg is missing" if missing else "the numbering does not start at 000001.jpg"
        raise DatasetError(f"{where}: {gap} ({n} JPEGs); nothing was written")
    verified = [f"{n:,} JPEGs named 000001.jpg-{n:06d}.jpg"]
    if expected_count is None:
        if n != OFFICIAL_COUNT:
            verified.append(f"count {n:,} differs from the official {OFFICIAL_COUNT:,}: not verified")
    elif n != expected_count:
        raise DatasetError(f"{where}: {n:,} JPEGs, the official release has {expected_count:,} (an incomplete copy?); "
                           f"nothing was written (--any-count converts it anyway)")
    else:
        verified.append(f"count {n:,}" + (" (official)" if n == OFFICIAL_COUNT else " (as expected)"))
    return verified


def check_jpeg(label: str, img) -> None:
    if img.format != "JPEG" or img.size != JPEG_SIZE or img.mode != "RGB":
        raise DatasetError(f"{label}: {img.format} {img.size[0]}x{img.size[1]} {img.mode}, expected a JPEG of "
                           f"{JPEG_SIZE[0]}x{JPEG_SIZE[1]} RGB (img_align_celeba); nothing was written")


class CelebA(ImageFile):
    name = "celeba"
    channels = 3
    default_file = "celeba.h5"
    sources = (SourceFile(ZIP_NAME),)       # no official URL a program can fetch, no official checksum
    manual_download = HOW_TO_GET

    @classmethod
    def fetch(cls, out=None, url: str | None = None, md5: str | None = None, sha256: str | None = None,
              file=None, keep_source: bool = True, download_progress=None, convert_progress=None,
              expected_count: int | None = OFFICIAL_COUNT) -> Path:
        """Verify and convert the user's zip or folder (``file``) or a download from ``url``
        into ``out`` (default ``<data dir>/celeba.h5``). ``expected_count`` None accepts any
        number of images (recorded as not verified)."""
        out = Path(out) if out else data_dir() / cls.default_file
        downloaded = False
        if file is not None and Path(file).is_dir():
            if md5 or sha256:
                raise DatasetError(f"{file}: --md5/--sha256 pin a zip; a folder has no single checksum")
            path, record = Path(file), None
        else:
            if file is None and url is None:
                raise DatasetError(HOW_TO_GET)
            downloaded = file is None
            path, record = obtain(SourceFile(ZIP_NAME, md5=md5, sha256=sha256), out.parent / ".downloads",
                                  file=file, url=url, progress=download_progress)
        try:
            source = ImageSource(path, select=lambda name: name.lower().endswith(".jpg"))
            verified = check_names(source, expected_count)
            source.scan(check=check_jpeg)
            verified.append(f"every JPEG {JPEG_SIZE[0]}x{JPEG_SIZE[1]} RGB")
            attrs = {"source": "official", "converter": "disentangle.data.celeba",
                     "preprocessing": json.dumps({**PREPROCESS.record(), "reference": REFERENCE}),
                     "ignored_files": source.ignored}

            def late():
                rec = record if record is not None else source.record()
                pins = rec.get("verified", ["nothing pinned: manifest sha256 recorded"])
                pins = [p if p != "nothing pinned: sha256 recorded" else "no official checksum: sha256 recorded"
                        for p in pins]
                name = rec["name"]
                return {"source_files": json.dumps([{**rec, "name": name}]),
                        "verified": json.dumps({name: pins + verified})}

            result = convert_source(source, out, PREPROCESS, attrs, cls.name, progress=convert_progress,
                                    check=check_jpeg, late_attrs=late)
        except DatasetError:
            if downloaded:       # a verified download of the wrong layout is of no use: leave nothing
                path.unlink(missing_ok=True)
            raise
        if downloaded and not keep_source:
            path.unlink(missing_ok=True)
        return result

