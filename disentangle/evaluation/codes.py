"""Encode the dataset once: the codes table of a run (``codes.h5``).

A trained encoder's mean is a deterministic function of the image and a ground-truth
dataset is a finite grid, so every metric can draw its samples *by image index* from a
table holding the encoder mean and log-variance of every dataset image, instead of
re-encoding the ~3 million images the published protocols sample per model.

Any registered dataset (:mod:`disentangle.data.datasets`), any channel count: dSprites
sends its bit-packed rows to the device and unpacks them there; 8-bit sets stream their
uint8 rows from disk in slices (``torch_batch``), so a 12.7 GB MPI3D file is never loaded
whole. For the dSprites variants, whose observation is random given the factors, the
table encodes ``images()``: one fixed, seeded realisation per index (the nuisance of
image i drawn from ``default_rng([images_seed, i])``). The protocols draw a fresh
observation per sample instead; :class:`ProtocolCodes` does that (``evaluate
--protocol-encode``), and docs/datasets.md has the measured difference.

``codes.h5`` layout::

    /mean     (N, D) float32   encoder mean, dataset index order
    /logvar   (N, D) float32   encoder log-variance
    attrs: format, model_sha256 (of model.pt), data_content_sha256, dataset, data_identity
           (JSON: dataset, content_sha256, images_seed), data_provenance (JSON),
           table_sha256 (of the float32 mean then logvar bytes), latent_dim, num_images,
           batch_size, device, torch, created, encode_seconds

The table is reused while its stamps match the run's model.pt and the dataset's identity
(name, content checksum, and a variant's images seed) and its own numbers match
table_sha256 (float32, finite, the right shape); it is rebuilt (never silently reused)
otherwise.

:class:`ProtocolCodes` is the same array seen the protocol's way: ``codes[idx]`` renders
(unpacks) and encodes exactly the requested images on the fly. The metrics read codes
only through ``codes.shape`` and ``codes[idx]``, so both give the same samples.

Bit-exactness: every image is encoded in a batch of exactly ``batch_size`` rows (the
last partial batch is padded with blank images and the padding dropped). With the same
batch shape the same kernels run on each image, so a table and a protocol encode with
the same batch size and device agree bit for bit (tested); different batch *shapes* can
differ in the last float32 bit (docs/performance.md).
"""
from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from disentangle.devices import resolve_device, thread_limit
from disentangle.errors import ParameterError, UserError
from disentangle.io import atomic_h5, check_writable
from disentangle.rundir import RunDir

CODES_FORMAT = "disentangle-codes-1"

# Encoder throughput on a CPU is best at small batches (larger ones fall out of the CPU
# caches; measurements in docs/performance.md, benchmarks/bench_evaluate.py --batch-sizes).
DEFAULT_CPU_BATCH = 64
# A GPU is limited by kernel launches at batch 64; a larger batch amortises them.
DEFAULT_CUDA_BATCH = 1024


# --------------------------------------------------------------------------- helpers
def default_batch_size(device) -> int:
    """Encoder and decoder batch for ``device`` ("cpu", "cuda:1", a torch.device): small on
    the CPU (cache-sized), large on an accelerator (amortises kernel launches)."""
    return DEFAULT_CPU_BATCH if str(device).split(":")[0] == "cpu" else DEFAULT_CUDA_BATCH


# --------------------------------------------------------------------------- encoding
class BatchEncoder:
    """Encodes bit-packed images in fixed-size batches: unpack a batch, encode it under
    ``torch.inference_mode``, copy mean and log-variance back as float32 numpy.

    Every batch has exactly ``batch_size`` rows (the last one padded with blank images),
    so an image's code does not depend on how many images were requested with it.
    """

    def __init__(self, model, device: str = "cpu", batch_size: int | None = None):
        import torch
        self.device = torch.device(device)
        self.channels_last = self.device.type == "cpu"
        if self.channels_last:
            # oneDNN's convolutions run faster on NHWC than on NCHW (docs/performance.md); a private
            # copy, so the caller's model (e.g. the one `info` decodes with) is unchanged.
            # Codes are always float32 (mixed=None), whatever the model trained in.
            model = copy.deepcopy(model)
            if hasattr(model, "set_execution"):
                model.set_execution(mixed=None, channels_last=True)
            else:
                model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.batch_size = int(batch_size or default_batch_size(device))
        if self.batch_size < 1:
            raise ParameterError("batch_size", f"must be >= 1, got {batch_size}")
        self.latent_dim = int(model.latent_dim)
        self.images_encoded = 0
        self._buffer = np.zeros((self.batch_size, 512), dtype=np.uint8)

    def encode_packed(self, packed: np.ndarray, progress=None, want_logvar: bool = True):
        """(n, 512) packed images -> mean (n, D) float32 [, logvar (n, D) float32]."""
        import torch

        from disentangle.data.render import unpack_to_float

        def padded_batch(start: int):
            rows = packed[start:start + self.batch_size]
            m = len(rows)
            if m < self.batch_size:
                self._buffer[:m] = rows
                self._buffer[m:] = 0
                rows = self._buffer
            # only the packed bytes travel to the device; unpacked there
            return unpack_to_float(torch.from_numpy(rows).to(self.device)), m
        return self._encode_batches(len(packed), padded_batch, progress, want_logvar)

    def encode_tensor(self, x, want_logvar: bool = True):
        """A float32 tensor (n, C, 64, 64) already on the device -> mean [, logvar], each
        (n, D) float32 numpy, in padded batches of exactly ``batch_size`` rows."""
        import torch

        def padded_batch(start: int):
            rows = x[start:start + self.batch_size]
            m = int(rows.shape[0])
            if m < self.batch_size:
                rows = torch.cat([rows, rows.new_zeros((self.batch_size - m,) + tuple(rows.shape[1:]))])
            return rows, m
        return self._encode_batches(int(x.shape[0]), padded_batch, None, want_logvar)

    def _encode_batches(self, n: int, padded_batch, progress, want_logvar: bool):
        """The encoding loop of both inputs: ``padded_batch(start)`` gives the batch from row
        ``start`` padded to ``batch_size`` rows (every call the same shape: one compiled
        graph, identical numbers whatever the position) and how many rows are real."""
        import torch
        mean = np.empty((n, self.latent_dim), dtype=np.float32)
        logvar = np.empty((n, self.latent_dim), dtype=np.float32) if want_logvar else None
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                x, m = padded_batch(start)
                if self.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                mu, lv = self.model.encode(x)
                mean[start:start + m] = mu[:m].float().cpu().numpy()
                if want_logvar:
                    logvar[start:start + m] = lv[:m].float().cpu().numpy()
                if progress is not None:
                    progress(m)
        self.images_encoded += n
        return (mean, logvar) if want_logvar else mean

    def encode_indices(self, data, indices, want_logvar: bool = True, rng: np.random.Generator | None = None):
        """Encode images ``indices`` of ``data`` (any dataset): the packed rows where it has
        them; else its fixed images (``rng`` None) or, for a dataset with random nuisance,
        fresh observations drawn from ``rng``."""
        import torch
        idx = np.asarray(indices, dtype=np.int64)
        packed = getattr(data, "packed", None)
        if packed is not None:
            return self.encode_packed(packed[idx], want_logvar=want_logvar)
        if getattr(data, "has_random_nuisance", False):
            x = data.observations(idx, rng) if rng is not None else data.images(idx)
            x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.device)
        else:
            x = data.torch_batch(idx, self.device)
        return self.encode_tensor(x, want_logvar=want_logvar)


def encode_dataset(model, data, device: str = "cpu", batch_size: int | None = None,
                   progress: bool = True):
    """Encoder mean and log-variance of every image of ``data``, in index order."""
    from disentangle.progress import report
    encoder = BatchEncoder(model, device, batch_size)
    total, encoded = data.num_images, 0
    bar = None
    if progress:
        from disentangle.progress import bar as progress_bar   # shown only on a terminal
        bar = progress_bar(data.num_images, "encode", "img")
    try:
        # feed the encoder in slices so only one slice of rows is read and copied at a time
        # (8-bit sets stream from disk; a slice of 3-channel floats is 12 MB per 256 images)
        packed = getattr(data, "packed", None)
        chunk = encoder.batch_size * (256 if packed is not None else 16)

        def advance(m: int) -> None:
            nonlocal encoded
            encoded += m
            if bar is not None:
                bar.update(m)
            report("encoding", encoded, total, "images")
        report("encoding", 0, total, "images")
        means, logvars = [], []
        for start in range(0, data.num_images, chunk):
            if packed is not None:
                m, lv = encoder.encode_packed(packed[start:start + chunk], progress=advance)
            else:
                stop = min(start + chunk, data.num_images)
                m, lv = encoder.encode_indices(data, np.arange(start, stop))
                advance(stop - start)
            means.append(m)
            logvars.append(lv)
    finally:
        if bar is not None:
            bar.close()
    return np.concatenate(means), np.concatenate(logvars), encoder.batch_size


# --------------------------------------------------------------------------- the table
@dataclass
class Codes:
    """A run's codes table in memory: ``mean`` and ``logvar`` (N, D) float32, dataset
    index order. ``built`` says whether this call encoded the dataset (and
    ``encode_seconds`` how long that took) or reused codes.h5."""

    mean: np.ndarray
    logvar: np.ndarray
    model_sha256: str
    data_content_sha256: str
    data_provenance: dict = field(default_factory=dict)
    path: Path | None = None
    built: bool = False
    encode_seconds: float = 0.0

    @property
    def latent_dim(self) -> int:
        return int(self.mean.shape[1])

    @property
    def num_images(self) -> int:
        return int(self.mean.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mean.shape)

    def __getitem__(self, indices) -> np.ndarray:
        """Encoder means of the given images (so a Codes can be passed as a metric's codes)."""
        return self.mean[indices]


def _data_sha(data) -> str:
    sha = data.provenance.get("content_sha256")
    if not sha:
        raise UserError(f"{data.path}: dataset file has no content_sha256 attribute "
                        f"(re-create it with `disentangle data render` or `data fetch`)")
    return str(sha)


def data_identity(data) -> dict:
    """What a codes table is stamped with: the dataset's name, content checksum and, for a
    variant of dSprites, the seed of its fixed per-index images (the variants share the
    dSprites file's checksum)."""
    prov = data.provenance
    return {"dataset": str(prov.get("dataset", getattr(data, "name", None) or "dsprites")),
            "content_sha256": _data_sha(data), "images_seed": prov.get("images_seed")}


def codes_state(run_dir: "RunDir | str | os.PathLike", data) -> str:
    """'fresh', 'missing', or 'stale: <reason>' for the run's codes.h5 against its
    current model.pt and ``data``."""
    run = RunDir.of(run_dir)
    path = run.codes_path
    if not path.is_file():
        return "missing"
    try:
        import h5py
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            shape = f["mean"].shape if "mean" in f else None
            has_logvar = "logvar" in f and f["logvar"].shape == shape
    except (OSError, KeyError, ValueError) as exc:
        return f"stale: unreadable ({exc})"
    if attrs.get("format") != CODES_FORMAT:
        return f"stale: format {attrs.get('format')!r}"
    if attrs.get("model_sha256") != run.model_sha256():
        return "stale: model.pt changed"
    if attrs.get("data_content_sha256") != _data_sha(data):
        return "stale: dataset changed"
    # tables from before datasets were named hold dSprites codes
    stored = json.loads(attrs.get("data_identity") or "null") or {"dataset": "dsprites", "images_seed": None}
    wanted = data_identity(data)
    if (stored.get("dataset"), stored.get("images_seed")) != (wanted["dataset"], wanted["images_seed"]):
        return f"stale: dataset {stored.get('dataset')} there, {wanted['dataset']} asked"
    if shape is None or not has_logvar or len(shape) != 2 or shape[0] != data.num_images:
        return "stale: wrong shape"
    latent_dim = _run_latent_dim(run)
    if latent_dim is not None and shape[1] != latent_dim:
        return f"stale: {shape[1]} columns, the run has {latent_dim} latent dimensions"
    # the stamps say which model and data; the table's own checksum says these are the
    # numbers that were written for them (a table edited with its stamps intact is rebuilt)
    try:
        with h5py.File(path, "r") as f:
            if f["mean"].dtype != np.float32 or f["logvar"].dtype != np.float32:
                return f"stale: dtype {f['mean'].dtype}/{f['logvar'].dtype}, expected float32"
            mean, logvar = f["mean"][...], f["logvar"][...]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        return f"stale: unreadable ({exc})"
    if attrs.get("table_sha256") != _table_sha(mean, logvar):
        return "stale: the table's checksum differs (edited or damaged)"
    if not (np.isfinite(mean).all() and np.isfinite(logvar).all()):
        return "stale: NaN or infinite values"
    return "fresh"


def _table_sha(mean: np.ndarray, logvar: np.ndarray) -> str:
    """sha256 of the table's numbers (float32, C order, mean then logvar)."""
    import hashlib
    h = hashlib.sha256()
    for array in (mean, logvar):
        h.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return h.hexdigest()


def _encoder_dim(run: RunDir, model) -> int:
    if model is not None:
        return int(model.latent_dim)
    return _run_latent_dim(run) or 1


def _run_latent_dim(run: RunDir) -> int | None:
    """The latent dimension the run's configuration records (None when unreadable)."""
    try:
        value = run.config().get("latent_dim")
    except UserError:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_codes(path: str | os.PathLike) -> Codes:
    import h5py
    path = Path(path)
    with h5py.File(path, "r") as f:
        attrs = dict(f.attrs)
        mean = f["mean"][...]
        logvar = f["logvar"][...]
    return Codes(mean=mean, logvar=logvar, model_sha256=str(attrs["model_sha256"]),
                 data_content_sha256=str(attrs["data_content_sha256"]),
                 data_provenance=json.loads(attrs.get("data_provenance", "{}")), path=path,
                 built=False, encode_seconds=float(attrs.get("encode_seconds", 0.0)))


def write_codes(path: str | os.PathLike, mean: np.ndarray, logvar: np.ndarray, *, model_sha256: str,
                data, batch_size: int, device: str, encode_seconds: float) -> Path:
    import torch
    path = Path(path)
    with atomic_h5(path) as f:
        f.create_dataset("mean", data=np.asarray(mean, dtype=np.float32))
        f.create_dataset("logvar", data=np.asarray(logvar, dtype=np.float32))
        f.attrs.update({
            "format": CODES_FORMAT,
            "table_sha256": _table_sha(mean, logvar),
            "model_sha256": model_sha256,
            "data_content_sha256": _data_sha(data),
            "dataset": data_identity(data)["dataset"],
            "data_identity": json.dumps(data_identity(data)),
            "data_provenance": json.dumps(data.provenance, default=str),
            "latent_dim": int(mean.shape[1]),
            "num_images": int(mean.shape[0]),
            "batch_size": int(batch_size),
            "device": str(device),
            "torch": str(torch.__version__),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "encode_seconds": float(encode_seconds),
        })
    return path


def get_codes(run_dir: "RunDir | str | os.PathLike", data, device: str = "cpu", batch_size: int | None = None,
              progress: bool = True, model=None, threads: int | None = None) -> Codes:
    """The run's codes table for ``data`` (a dataset, or a dataset path / None: the run's
    dataset by :meth:`RunDir.dataset`): read codes.h5 when it is fresh, else encode
    every image once (batched, no grad, progress bar) and write codes.h5 atomically.

    ``model`` skips loading model.pt when the caller already holds it. ``threads`` limits
    torch's (and BLAS's) threads while encoding. A stale table (model.pt or the dataset
    changed) is always rebuilt, never reused.
    """
    run = RunDir.of(run_dir)
    model_file = run.require_model()
    if data is None or isinstance(data, (str, os.PathLike)):
        data = run.dataset(data)
    state = codes_state(run, data)
    if state == "fresh":
        return read_codes(run.codes_path)
    device = resolve_device(device)
    # before encoding: two float32 tables of (images, latents), plus HDF5's own bytes
    check_writable(run.codes_path, need_bytes=2 * 4 * data.num_images * _encoder_dim(run, model) + 65536)
    model_sha = run.model_sha256()
    if model is None:
        model, _config = run.load_model(device)
    with thread_limit(threads):
        t0 = time.perf_counter()
        mean, logvar, used_batch = encode_dataset(model, data, device, batch_size, progress)
        seconds = time.perf_counter() - t0
    # the model file must not have changed under us while we encoded
    if run.model_sha256() != model_sha:
        raise UserError(f"{model_file}: changed while encoding; run evaluate again")
    path = write_codes(run.codes_path, mean, logvar, model_sha256=model_sha, data=data,
                       batch_size=used_batch, device=device, encode_seconds=seconds)
    return Codes(mean=mean, logvar=logvar, model_sha256=model_sha,
                 data_content_sha256=_data_sha(data), data_provenance=data.provenance,
                 path=path, built=True, encode_seconds=seconds)


# --------------------------------------------------------------------------- protocol encode
class ProtocolCodes:
    """The codes array seen the published protocols' way: nothing is precomputed;
    ``codes[idx]`` unpacks and encodes exactly the requested images with the model and
    returns their encoder means, float32 (len(idx), D).

    Same interface as an (N, D) table for the metrics (``shape``, ``codes[idx]``), so a
    metric run with the same Generator draws the same samples either way. For a dataset
    with random nuisance (the dSprites variants) every requested image is a fresh
    observation, its nuisance drawn from ``rng`` (as disentanglement_lib's metrics draw
    observations); without ``rng`` the fixed per-index images are encoded.
    ``images_encoded`` and ``calls`` count the work done (the benchmark reports them).
    """

    def __init__(self, model, data, device: str = "cpu", batch_size: int | None = None,
                 rng: np.random.Generator | None = None):
        self.data = data
        self.rng = rng
        self._encoder = BatchEncoder(model, device, batch_size)
        self.shape = (int(data.num_images), self._encoder.latent_dim)
        self.calls = 0

    ndim = 2
    dtype = np.dtype(np.float32)

    @property
    def images_encoded(self) -> int:
        return self._encoder.images_encoded

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, indices) -> np.ndarray:
        if isinstance(indices, slice):
            indices = np.arange(self.shape[0])[indices]
        idx = np.asarray(indices)
        if idx.dtype == bool or not np.issubdtype(idx.dtype, np.integer):
            raise TypeError("ProtocolCodes takes integer image indices")
        flat = idx.reshape(-1).astype(np.int64)
        if flat.size and (flat.min() < -self.shape[0] or flat.max() >= self.shape[0]):
            raise IndexError(f"image index out of range for {self.shape[0]} images")
        self.calls += 1
        flat = np.where(flat < 0, flat + self.shape[0], flat)
        mean = self._encoder.encode_indices(self.data, flat, want_logvar=False, rng=self.rng)
        return mean.reshape(idx.shape + (self.shape[1],))
