"""Any folder or zip of images as a dataset without ground-truth factors, under a name the
user gives (`disentangle data import-folder PATH --name NAME`).

Converted once into the toolkit's ``disentangle-images-1`` file (``<data dir>/<NAME>.h5``,
``dataset`` attribute ``image-folder``, the user's name in ``name``): ``ground_truth``
null, the images in the sorted order of their relative paths (POSIX separators, Python
string order), each one's path in ``/source_names``.

Each image, as a user of torchvision would write it (``CenterCrop`` then ``Resize`` with
antialiasing), but fixed at conversion:

1. EXIF orientation applied (a phone photo is stored as it is displayed);
2. to RGB (or, ``channels=1``, to Pillow's ``L``: ITU-R 601-2 luma); transparency is
   composited over black;
3. crop: ``center`` (default) the largest centred square, ``center:N`` a centred N x N
   square (torchvision ``CenterCrop(N)``, e.g. PyTorch-VAE's ``CenterCrop(148)`` for
   CelebA), ``none`` the whole frame (the aspect ratio changes). Offsets round as
   torchvision's ``center_crop``: ``int(round((W - N) / 2))``;
4. resized to 64 x 64 with Pillow's Lanczos filter (``Image.LANCZOS``, the old
   ``ANTIALIAS``; ``reducing_gap`` off, so the result is one exact Lanczos resampling).

Files are chosen by suffix (:data:`IMAGE_SUFFIXES`); other files, hidden files and folders
(a leading dot) and ``__MACOSX`` are skipped and counted (``ignored_files``). A file with an
image suffix that Pillow cannot open is refused in one line naming it, before any image is
converted; one that opens but fails to decode stops the conversion and leaves nothing.
Conversion streams in blocks of :data:`BLOCK` images (memory does not grow with the set).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np

from disentangle.data.datasets import IMAGE_SIZE, REGISTRY, DatasetError, data_dir
from disentangle.data.image_file import IMAGES_FORMAT, ImageFile, write_image_file
from disentangle.errors import ParameterError

KIND = "image-folder"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")
BLOCK = 256
# Pillow modes we turn into 8-bit RGB or L without losing meaning (16-bit and float are refused)
_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV", "La", "RGBa"}
_PIL_ERRORS: tuple = (OSError, SyntaxError, ValueError, EOFError)


def check_name(name: str) -> str:
    """A name for an imported image set: lowercase letters, digits, '-' and '_' (it names
    the file <name>.h5 and appears in run names), not a built-in dataset's name."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ParameterError("name", "expected 1-64 lowercase letters, digits, '-' or '_', starting "
                                     "with a letter or digit", name)
    if name in REGISTRY:
        raise ParameterError("name", "is a built-in dataset's name; choose another", name)
    return name


def imported_path(name: str, path=None) -> Path | None:
    """The file of the imported image set called ``name``: ``path`` when given and it is an
    imported image set, else ``<data dir>/<name>.h5`` when it is; None otherwise."""
    if not isinstance(name, str) or not NAME_PATTERN.match(name) or name in REGISTRY:
        return None
    path = Path(path) if path else data_dir() / f"{name}.h5"
    if not path.is_file():
        return None
    import h5py
    try:
        with h5py.File(path, "r") as f:
            ok = f.attrs.get("format") == IMAGES_FORMAT and f.attrs.get("dataset") == KIND
    except OSError:
        return None
    # (the name it holds is checked when it is opened: a copied file is refused, naming both)
    return path if ok else None


# --------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class Preprocess:
    """How one source image becomes a 64 x 64 x C uint8 array (see the module docstring)."""

    crop: str = "center"          # "center" | "none" | "center:N"
    channels: int = 3             # 3: RGB, 1: grey (Pillow "L")
    exif_transpose: bool = True

    def __post_init__(self):
        parse_crop(self.crop)
        if self.channels not in (1, 3):
            raise ParameterError("channels", "expected 1 (grey) or 3 (RGB)", self.channels)

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int] | None:
        """(left, top, right, bottom) of the crop, or None for the whole frame."""
        side = parse_crop(self.crop)
        if side is None:
            return None
        side = min(width, height) if side == 0 else side
        left, top = int(round((width - side) / 2.0)), int(round((height - side) / 2.0))
        return left, top, left + side, top + side

    def check_size(self, width: int, height: int, label: str) -> None:
        side = parse_crop(self.crop)
        if side and (side > width or side > height):
            raise DatasetError(f"{label}: {width}x{height} is smaller than the crop {self.crop}; nothing was written")

    def apply(self, img) -> np.ndarray:
        from PIL import Image, ImageOps
        if self.exif_transpose:
            img = ImageOps.exif_transpose(img)
        img = to_mode(img, "RGB" if self.channels == 3 else "L")
        box = self.crop_box(*img.size)
        if box is not None and box != (0, 0) + img.size:
            img = img.crop(box)
        if img.size != (IMAGE_SIZE, IMAGE_SIZE):
            img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)
        arr = np.asarray(img, dtype=np.uint8)
        return arr[..., None] if arr.ndim == 2 else arr

    def record(self) -> dict:
        import PIL
        box = {"center": "largest centred square", "none": "none (whole frame, aspect ratio changes)"}
        return {"crop": self.crop, "crop_box": box.get(self.crop, f"centred {self.crop[7:]}x{self.crop[7:]} square"),
                "resize": f"{IMAGE_SIZE}x{IMAGE_SIZE}", "resample": "lanczos",
                "color": "rgb" if self.channels == 3 else "grey (Pillow L, ITU-R 601-2 luma)",
                "alpha": "composited over black", "exif_orientation": "applied" if self.exif_transpose else "ignored",
                "pillow": PIL.__version__}


def parse_crop(crop: str) -> int | None:
    """"none" -> None, "center" -> 0 (the largest square), "center:N" -> N."""
    if crop == "none":
        return None
    if crop == "center":
        return 0
    m = re.fullmatch(r"center:([1-9][0-9]{0,4})", str(crop))
    if m is None:
        raise ParameterError("crop", "expected center, none or center:N (a centred N x N square)", crop)
    return int(m.group(1))


def to_mode(img, mode: str):
    """``img`` as 8-bit ``mode`` ("RGB" or "L"); transparency composited over black."""
    from PIL import Image
    if img.mode not in _MODES:
        raise DatasetError(f"Pillow mode {img.mode} (16-bit or float pixels) is not supported: convert to 8-bit")
    if img.mode in ("LA", "PA", "RGBA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba).convert("RGB")
    return img if img.mode == mode else img.convert(mode)


def decode(data: bytes, label: str):
    """A fully decoded Pillow image, or one line naming ``label``."""
    from PIL import Image
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except _PIL_ERRORS + (Image.DecompressionBombError,) as exc:
        raise DatasetError(f"{label}: not a readable image ({exc}); nothing was written") from None
    return img


# --------------------------------------------------------------------------- sources
def _skipped(parts) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


class ImageSource:
    """The image files of a folder or a zip, in sorted order of their relative paths.

    ``names``: the relative POSIX paths of the images; ``ignored``: how many other files
    were skipped; :meth:`items` yields (name, bytes) in that order."""

    def __init__(self, path, select: Callable[[str], bool] | None = None):
        self.path = Path(path)
        if self.path.is_dir():
            self.kind = "folder"
            names, ignored = [], 0
            for root, dirs, files in os.walk(self.path):
                dirs[:] = [d for d in dirs if not _skipped([d])]
                for f in files:
                    rel = PurePosixPath(Path(root, f).relative_to(self.path).as_posix())
                    if _skipped(rel.parts):
                        continue
                    if rel.suffix.lower() in IMAGE_SUFFIXES and (select is None or select(str(rel))):
                        names.append(str(rel))
                    else:
                        ignored += 1
        elif self.path.is_file():
            self.kind = "zip"
            try:
                with zipfile.ZipFile(self.path) as zf:
                    infos = zf.infolist()
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise DatasetError(f"{self.path}: not a folder or a readable zip ({exc}); nothing was written") from None
            names, ignored, seen = [], 0, set()
            for info in infos:
                if info.is_dir():
                    continue
                rel = PurePosixPath(info.filename)
                if _skipped(rel.parts):
                    continue
                if rel.suffix.lower() in IMAGE_SUFFIXES and (select is None or select(info.filename)):
                    if info.filename in seen:
                        raise DatasetError(f"{self.path}: member {info.filename} appears twice; nothing was written")
                    seen.add(info.filename)
                    names.append(info.filename)
                else:
                    ignored += 1
        else:
            raise DatasetError(f"{self.path}: no such folder or zip")
        self.names = sorted(names)
        self.ignored = ignored
        self._file_sha: dict[str, str] = {}

    def label(self, name: str) -> str:
        return f"{self.path}/{name}" if self.kind == "folder" else f"{self.path}:{name}"

    @contextlib.contextmanager
    def reader(self) -> Iterator[Callable[[str], bytes]]:
        """A function name -> bytes (the zip stays open while it is in use)."""
        if self.kind == "folder":
            yield lambda name: (self.path / name).read_bytes()
        else:
            with zipfile.ZipFile(self.path) as zf:
                yield zf.read

    def scan(self, check: Callable[[str, object], None] | None = None) -> None:
        """Open every image's header (no decoding) before any work: an unreadable file is
        refused in one line naming it. ``check(label, image)`` adds the caller's checks."""
        from PIL import Image
        if not self.names:
            raise DatasetError(f"{self.path}: no image files ({', '.join(IMAGE_SUFFIXES)}) found; nothing was written")
        with self.reader() as read:
            for name in self.names:
                label = self.label(name)
                try:
                    data = read(name)
                    with Image.open(io.BytesIO(data)) as img:
                        if img.mode not in _MODES:
                            raise DatasetError(f"{label}: Pillow mode {img.mode} (16-bit or float pixels) is not "
                                               f"supported: convert to 8-bit; nothing was written")
                        if check is not None:
                            check(label, img)
                except DatasetError:
                    raise
                except (zipfile.BadZipFile, zlib.error) as exc:
                    raise DatasetError(f"{label}: unreadable zip member ({exc}); nothing was written") from None
                except _PIL_ERRORS + (Image.DecompressionBombError,) as exc:
                    raise DatasetError(f"{label}: not a readable image ({exc}); nothing was written") from None

    def items(self) -> Iterator[tuple[str, bytes]]:
        """(name, bytes) in order; remembers each file's sha256 for :meth:`record`."""
        with self.reader() as read:
            for name in self.names:
                try:
                    data = read(name)
                except (zipfile.BadZipFile, zlib.error, OSError) as exc:
                    raise DatasetError(f"{self.label(name)}: unreadable ({exc}); nothing was written") from None
                self._file_sha[name] = hashlib.sha256(data).hexdigest()
                yield name, data

    def record(self) -> dict:
        """What identifies the source: for a zip its bytes and digests; for a folder the
        sha256 of its manifest (one line ``<relative path>\\t<sha256>`` per image, in order),
        available once :meth:`items` has read every file."""
        if self.kind == "zip":
            from disentangle.data.sources import digests
            return {"name": self.path.name, "kind": "zip", "images": len(self.names), **digests(self.path)}
        manifest = "".join(f"{n}\t{self._file_sha[n]}\n" for n in self.names)
        size = sum((self.path / n).stat().st_size for n in self.names)
        return {"name": self.path.name + "/", "kind": "folder", "images": len(self.names), "bytes": size,
                "manifest_sha256": hashlib.sha256(manifest.encode()).hexdigest()}


def convert_source(source: ImageSource, out, preprocess: Preprocess, attrs: dict, dataset: str,
                   progress: Callable[[int], None] | None = None,
                   check: Callable[[str, object], None] | None = None,
                   late_attrs: Callable[[], dict] | None = None) -> Path:
    """Stream ``source``'s images through ``preprocess`` into a ``disentangle-images-1``
    file without factors (``dataset`` is its ``dataset`` attribute)."""
    n, c = len(source.names), preprocess.channels

    def blocks():
        buf = np.empty((BLOCK, IMAGE_SIZE, IMAGE_SIZE, c), np.uint8)
        k = 0
        for name, data in source.items():
            label = source.label(name)
            img = decode(data, label)
            if check is not None:
                check(label, img)
            try:
                buf[k] = preprocess.apply(img)
            except DatasetError as exc:
                raise DatasetError(f"{label}: {exc}; nothing was written") from None
            k += 1
            if k == BLOCK:
                yield buf
                k = 0
        if k:
            yield buf[:k]

    return write_image_file(out, dataset, None, c, blocks(), attrs, progress=progress, num_images=n,
                            source_names=source.names, late_attrs=late_attrs)


def import_folder(path, name: str, out=None, crop: str = "center", channels: int = 3,
                  overwrite: bool = False, progress: Callable[[int], None] | None = None) -> tuple[Path, ImageSource]:
    """Convert the images of folder or zip ``path`` into dataset ``name`` (written to
    ``out``, default ``<data dir>/<name>.h5``). Refuses a bad name or crop, an existing
    output (unless ``overwrite``), an empty source and unreadable images, in one line,
    before converting anything. Returns the file and the source (for its counts)."""
    check_name(name)
    preprocess = Preprocess(crop=crop, channels=channels)
    out = Path(out) if out else data_dir() / f"{name}.h5"
    if out.exists() and not overwrite:
        raise ParameterError("overwrite", f"{out} exists; pass it to replace the file")
    source = ImageSource(path)
    source.scan(check=lambda label, img: preprocess.check_size(*img.size, label))
    attrs = {"source": "imported", "name": name, "kind": KIND, "source_path": str(Path(path).resolve()),
             "preprocessing": json.dumps(preprocess.record()), "ignored_files": source.ignored,
             "converter": "disentangle.data.image_folder"}

    def late():
        record = source.record()
        return {"source_files": json.dumps([record]),
                "verified": json.dumps({record["name"]: [f"nothing pinned: {'sha256' if source.kind == 'zip' else 'manifest sha256'} recorded",
                                                         f"{len(source.names)} images decoded"]})}

    return convert_source(source, out, preprocess, attrs, KIND, progress=progress, late_attrs=late), source


# --------------------------------------------------------------------------- the dataset
class ImageFolder(ImageFile):
    """An imported image set: name and channel count are read from the file."""

    name = KIND
    channels = 3
    named_by_file = True      # open_dataset(name) finds <data dir>/<name>.h5 (open_named)
    default_file = ""

    def _configure(self, attrs: dict) -> None:
        name = attrs.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise DatasetError(f"{self.path}: image-folder file without a valid name attribute ({name!r})")
        self.name = name
        shape = self._file["images"].shape
        self.channels = int(shape[-1]) if len(shape) == 4 and shape[-1] in (1, 3) else 3

    @classmethod
    def resolve_path(cls, explicit=None) -> Path:
        if explicit:
            return Path(explicit)
        raise DatasetError("an imported image set is opened by its name (data/<name>.h5) or its file")

    @classmethod
    def open_named(cls, name: str, path=None, verify: bool = False) -> "ImageFolder":
        """Dataset ``name`` from ``path`` or ``<data dir>/<name>.h5``; the file must hold that name."""
        if name == KIND:
            raise ParameterError("dataset", "is the kind of imported image sets; give the name you imported one "
                                            "under (`disentangle data import-folder PATH --name NAME`)", name)
        path = Path(path) if path else (imported_path(name) or data_dir() / f"{name}.h5")
        if not path.is_file():
            raise DatasetError(f"{path}: no image set {name!r} (run `disentangle data import-folder PATH --name {name}`)")
        ds = cls(path, verify=verify)
        if ds.name != name:
            ds.close()
            raise DatasetError(f"{path}: holds image set {ds.name!r}, not {name!r}")
        return ds

    def recreate_command(self) -> str:
        source = self.attrs.get("source_path") if hasattr(self, "attrs") else None
        import shlex
        return f"`disentangle data import-folder {shlex.quote(source) if source else 'PATH'} --name {self.name}`"

    @property
    def provenance(self) -> dict:
        prov = super().provenance
        prov.update({"kind": KIND, "source_path": self.attrs.get("source_path"),
                     "ignored_files": int(self.attrs.get("ignored_files", 0))})
        return prov
