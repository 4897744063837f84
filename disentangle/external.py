"""Models made elsewhere: evaluate any PyTorch VAE in full, and import disentangling-vae's
released models as runs (docs/external.md).

:func:`evaluate_external` takes an encoder (image batch (n, 1, 64, 64) float32 in {0, 1}
-> (mean, log-variance), each (n, D)) and optionally a decoder (z (n, D) -> logits or
probabilities/means, any shape holding n·4,096 values, with its likelihood), or one object
with ``encode``/``decode``, and writes a run-like directory exactly as ``evaluate`` and the
figures do for a trained run: codes.h5 (the codes table, encoded with the toolkit's
:func:`~disentangle.evaluation.codes.encode_dataset`), scores.json (the same entries, by
the same :func:`~disentangle.evaluation.evaluate.run_metrics`, ``info`` included),
traversal.png and reconstructions.png (:mod:`~disentangle.evaluation.figure_data`). Its
config.json holds the user's label as the method column and any identity settings, the
dataset's provenance and an ``origin`` record (``"kind": "external"``, the label, the
weights file's path and sha256 when one is given), so ``report`` and the plots of a
results folder take it as a row. There is no model.pt: ``evaluate`` and ``plot
traversal`` need the toolkit's network; this function is their counterpart.

Without a decoder, what needs one (``info``, the figures) is refused in one line before
any work; ``--metric all`` then means every metric the codes table feeds (``info_posterior``
in place of ``info``), as ``disentangle score`` does.

:func:`import_disvae` turns a disentangling-vae model directory into a proper run
directory (model.pt in the toolkit's ``burgess`` layout with its sha256 in status.json,
config.json with the mapped method and hyper-parameters, ``origin`` "disvae"), which
``evaluate``, ``plot`` and ``report`` use like any other (:mod:`disentangle.models.disvae`).
"""
from __future__ import annotations

import datetime as _dt
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch

from disentangle.errors import ParameterError, UserError
from disentangle.rundir import DataCache, RunDir

ORIGIN_EXTERNAL = "external"
ORIGIN_DISVAE = "disvae"
DECODER_OUTPUTS = ("logits", "probabilities")
# probabilities are clamped to [EPS, 1 − EPS] before the logit (float32 resolves 1 − 6e-8)
PROBABILITY_EPS = 1e-7
IMAGE_PIXELS = 64 * 64


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the model
class ExternalModel(torch.nn.Module):
    """The toolkit's model interface (``encode``, ``decode`` to logits, ``latent_dim``,
    ``likelihood``) over a model made elsewhere: ``model`` (an object with ``encode`` and
    ``decode``) or the callables ``encoder`` / ``decoder``. Modules given are registered as
    submodules, so ``parameters()`` tells the device and a deep copy copies them.

    Images reach the user's code as contiguous NCHW float32 tensors (the toolkit's CPU
    path makes them channels_last, which a ``.view`` after a convolution cannot take);
    ``set_execution`` is passed on to ``model`` when it has one (a toolkit VAE then
    computes exactly as in ``evaluate``)."""

    def __init__(self, encoder: Callable | None = None, decoder: Callable | None = None, *, model=None,
                 likelihood: str = "bernoulli", decoder_output: str = "logits", latent_dim: int | None = None):
        super().__init__()
        if model is not None and (encoder is not None or decoder is not None):
            raise ParameterError("model", "give either model or encoder/decoder, not both")
        if model is not None:
            if not callable(getattr(model, "encode", None)):
                raise ParameterError("model", "has no encode method (expected an object with encode and decode)")
            self.inner = model
            self.has_decoder = callable(getattr(model, "decode", None))
        else:
            if encoder is None or not callable(encoder):
                raise ParameterError("encoder", "must be a callable: image batch -> (mean, log-variance)")
            if decoder is not None and not callable(decoder):
                raise ParameterError("decoder", "must be a callable: z -> logits or probabilities")
            self.inner = None
            self.encoder_fn = encoder
            self.decoder_fn = decoder
            self.has_decoder = decoder is not None
        if likelihood not in ("bernoulli", "gaussian"):
            raise ParameterError("likelihood", "expected bernoulli or gaussian", value=repr(likelihood))
        if decoder_output not in DECODER_OUTPUTS:
            raise ParameterError("decoder_output", f"expected {' or '.join(DECODER_OUTPUTS)}",
                                 value=repr(decoder_output))
        self.likelihood = likelihood
        self.decoder_output = decoder_output
        self.latent_dim = int(latent_dim) if latent_dim is not None else None
        self.channels = 1   # the dataset's; evaluate_external sets it before any image is seen

    def set_execution(self, mixed=None, channels_last: bool = False) -> "ExternalModel":
        if self.inner is not None and hasattr(self.inner, "set_execution"):
            self.inner.set_execution(mixed=mixed, channels_last=channels_last)
        return self

    def _uses_own_layout(self) -> bool:
        return self.inner is not None and getattr(self.inner, "channels_last", False)

    def encode(self, x: torch.Tensor):
        if not self._uses_own_layout():
            x = x.contiguous()
        out = self.inner.encode(x) if self.inner is not None else self.encoder_fn(x)
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise UserError(f"encoder: returned {type(out).__name__}, expected (mean, log-variance)")
        mean, logvar = out
        n = x.shape[0]
        for name, t in (("mean", mean), ("log-variance", logvar)):
            if not isinstance(t, torch.Tensor) or t.ndim != 2 or t.shape[0] != n:
                raise UserError(f"encoder: {name} has shape {tuple(getattr(t, 'shape', ()))}, expected "
                                f"({n}, latent_dim) for {n} images")
        if mean.shape != logvar.shape:
            raise UserError(f"encoder: mean {tuple(mean.shape)} and log-variance {tuple(logvar.shape)} differ")
        if self.latent_dim is not None and mean.shape[1] != self.latent_dim:
            raise UserError(f"encoder: {mean.shape[1]} latent dimensions, expected latent_dim {self.latent_dim}")
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        if not self.has_decoder:
            raise UserError("decoder: none given; this needs the model's decoder")
        out = self.inner.decode(z) if self.inner is not None else self.decoder_fn(z)
        n = z.shape[0]
        c = self.channels
        if not isinstance(out, torch.Tensor) or out.numel() != n * c * IMAGE_PIXELS:
            raise UserError(f"decoder: returned shape {tuple(getattr(out, 'shape', ()))}, expected {n} "
                            f"images of 64x64 ({n}, {c}, 64, 64)")
        out = out.reshape(n, c, 64, 64)
        if self.decoder_output == "probabilities":
            # the toolkit reads logits: sigmoid(logit(p)) = p, for Bernoulli probabilities
            # and for Gaussian means in [0, 1] alike
            out = torch.logit(out.float(), eps=PROBABILITY_EPS)
        return out

    def reconstruct_mean(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)


def _probe(model: ExternalModel, data, device) -> int:
    """Encode (and decode) two dataset images before any work: a wrong output shape is
    refused in one line naming the encoder or decoder; returns the latent dimension."""
    images = np.asarray(data.images(np.arange(2)), dtype=np.float32)
    x = torch.from_numpy(images[:, None] if images.ndim == 3 else images).to(device)   # (n, C, 64, 64)
    with torch.inference_mode():
        mean, _logvar = model.encode(x)
        if model.has_decoder:
            model.decode(mean)
    return int(mean.shape[1])


# --------------------------------------------------------------------------- evaluation
def _check_label(label) -> str:
    if not isinstance(label, str) or not label.strip():
        raise ParameterError("label", "must be a non-empty string (the method column of the report)")
    return label.strip()


def _weights_record(weights) -> dict | None:
    if weights is None:
        return None
    from disentangle.io import file_sha256
    path = Path(weights)
    if not path.is_file():
        raise ParameterError("weights", f"{path}: no such file (the weights file whose sha256 is recorded)")
    return {"path": str(path.resolve()), "sha256": file_sha256(path)}


def evaluate_external(out: str | os.PathLike, encoder: Callable | None = None, decoder: Callable | None = None, *,
                      model=None, likelihood: str = "bernoulli", decoder_output: str = "logits",
                      data=None, dataset: str | None = None, metrics: Iterable[str] = ("all",),
                      label: str = "external",
                      settings: Mapping[str, Any] | None = None, weights: str | os.PathLike | None = None,
                      seed: int = 0, params: Mapping[str, Mapping] | None = None, device: str = "cpu",
                      batch_size: int | None = None, figures: bool | None = None, traversal_images: int = 3,
                      reconstruction_images: int = 10, progress: bool = True,
                      echo: Callable[[str], None] | None = None) -> dict:
    """Evaluate a model made elsewhere into the run-like directory ``out`` (module
    docstring); returns ``{metric: entry}`` as scores.json holds them.

    ``encoder``: image batch (n, C, 64, 64) float32 in [0, 1] -> (mean, logvar) (n, D);
    ``decoder``: z (n, D) -> ``decoder_output`` ("logits", or "probabilities": Bernoulli
    probabilities / Gaussian means in [0, 1]) of n images; or ``model``: one object with
    ``encode``/``decode`` (decode returning ``decoder_output``). ``likelihood``: the
    decoder's, "bernoulli" or "gaussian". ``dataset``: a registered dataset's name
    (default dsprites); ``data``: its file (or a dataset object; None: the dataset's rule). ``label``: the report's method column; ``settings``: other identity
    columns (e.g. {"beta": 4, "seed": 2}); ``weights``: the weights file, whose sha256 is
    recorded. ``figures``: traversal.png and reconstructions.png (default: when there is a
    decoder). Everything is checked before the dataset is encoded.
    """
    from disentangle.devices import resolve_device
    from disentangle.evaluation.codes import encode_dataset, write_codes, Codes
    from disentangle.evaluation.evaluate import check_evaluation, metric_names, run_metrics
    from disentangle.evaluation.metrics import run_level
    from disentangle.evaluation.score import parse_settings, scorable_metrics, _refusal
    from disentangle.io import environment_info

    say = echo or (lambda msg: None)
    label = _check_label(label)
    wrapped = ExternalModel(encoder, decoder, model=model, likelihood=likelihood, decoder_output=decoder_output)
    has_decoder = wrapped.has_decoder
    if figures and not has_decoder:
        raise ParameterError("figures", "traversals and reconstructions need the model's decoder; none given")
    figures = has_decoder if figures is None else bool(figures)
    fields = parse_settings([f"{k}={v}" for k, v in (settings or {}).items()], label)
    requested = list(metrics)
    allowed = run_level() if has_decoder else scorable_metrics(True)
    for name in requested:
        if name != "all" and name in run_level() and name not in allowed:
            refusal = _refusal(name, True)
            raise ParameterError(refusal.parameter, refusal.message.replace(
                "and the images, which a codes file lacks", "and none was given"),
                                 value=refusal.value)
    names = metric_names(requested, available=allowed)
    plan = check_evaluation(names, seed, params, batch_size)
    weights_record = _weights_record(weights)
    device = resolve_device(device)

    run = RunDir(out)
    if run.model_path.exists():
        raise UserError(f"{run.path}: holds a trained model; score it with `disentangle evaluate`")
    dataset = (data if data is not None and not isinstance(data, (str, os.PathLike))
               else DataCache().load(data, dataset))
    wrapped.channels = int(getattr(dataset, "channels", 1))
    wrapped.to(device) if any(True for _ in wrapped.parameters()) else None
    latent_dim = _probe(wrapped, dataset, device)
    wrapped.latent_dim = latent_dim

    origin = {"kind": ORIGIN_EXTERNAL, "label": label, "weights": weights_record, "decoder": has_decoder,
              "decoder_output": decoder_output if has_decoder else None, "likelihood": likelihood}
    config = {"method": label, "latent_dim": latent_dim, "likelihood": likelihood, **fields}
    if run.has_config():
        saved = run.saved()
        if (saved.get("origin") or {}).get("kind") != ORIGIN_EXTERNAL or run.config() != config or \
                (saved.get("origin") or {}).get("weights") != weights_record:
            raise UserError(f"{run.config_path}: this directory holds another model or label/settings; "
                            f"choose another out directory")
    else:
        run.path.mkdir(parents=True, exist_ok=True)
        run.write_config({"config": config, "data": dataset.provenance, "package": environment_info(),
                          "origin": origin, "created": _now()})
    sha = weights_record["sha256"] if weights_record else None
    run.write_status("finished", reason=f"a model made elsewhere ({label}), evaluated by disentangle",
                     origin=ORIGIN_EXTERNAL, weights_sha256=sha)

    t0 = time.perf_counter()
    mean, logvar, used_batch = encode_dataset(wrapped, dataset, device, batch_size, progress)
    seconds = time.perf_counter() - t0
    write_codes(run.codes_path, mean, logvar, model_sha256=sha or "", data=dataset, batch_size=used_batch,
                device=device, encode_seconds=seconds)
    say(f"{run.path}: encoded {len(mean)} images into codes.h5 in {seconds:.1f} s")
    codes = Codes(mean=mean, logvar=logvar, model_sha256=sha or "", data_content_sha256=str(
        dataset.provenance.get("content_sha256")), data_provenance=dataset.provenance, path=run.codes_path,
        built=True, encode_seconds=seconds)
    # the rows describe this dataset; what the model trained on is unknown
    data_info = {**run.data_record(dataset), "matches_training_data": None}
    inputs = {"codes": lambda: mean, "ground_truth": lambda: dataset.ground_truth, "codes_table": lambda: codes,
              "model": lambda: wrapped, "dataset": lambda: dataset}
    results = run_metrics(run, plan, inputs, say,
                          lambda spec: {"data": data_info, "codes": "table", "model_sha256": sha,
                                        "origin": ORIGIN_EXTERNAL})
    if figures:
        write_figures(run, wrapped, dataset, codes, device=device, seed=seed, traversal_images=traversal_images,
                      reconstruction_images=reconstruction_images, echo=say)
    return results


def write_figures(run: RunDir, model, dataset, codes, device: str = "cpu", seed: int = 0,
                  traversal_images: int = 3, reconstruction_images: int = 10,
                  echo: Callable[[str], None] | None = None) -> list[Path]:
    """traversal.png and reconstructions.png of ``model`` in the run directory, computed
    as ``plot traversal`` / ``plot reconstructions`` compute them (figure_data)."""
    from disentangle import plots   # the figures' drawing; imported only when asked for
    from disentangle.evaluation import figure_data
    from disentangle.evaluation.information.gaussian import rate_per_dim
    kl = figure_data.KLPerDimension(rate_per_dim(codes.mean, codes.logvar), codes.num_images, sampled=False)
    t = figure_data.traversals_of(model, dataset, kl, run.path.name, n_images=traversal_images, seed=seed,
                                  device=device)
    r = figure_data.reconstructions_of(model, dataset, run.path.name, model.likelihood,
                                       n_images=reconstruction_images, seed=seed, device=device)
    written = plots.save_figure(plots.traversal(t), run.path / "traversal.png")
    written += plots.save_figure(plots.reconstructions(r), run.path / "reconstructions.png")
    if echo:
        echo(f"{run.path}: wrote {', '.join(p.name for p in written)}")
    return written


# --------------------------------------------------------------------------- disentangling-vae
def import_disvae(model_dir: str | os.PathLike, out: str | os.PathLike) -> RunDir:
    """A disentangling-vae model directory (model.pt + specs.json) as a finished run
    directory ``out``: model.pt in the toolkit's ``burgess`` layout (its sha256 recorded
    in status.json), config.json with the mapped method, hyper-parameters, steps, lr and
    seed, the training data (the official dSprites file), and ``origin`` (where it came
    from, their specs and their model.pt's sha256). ``out`` must not hold a run already."""
    from disentangle.config import TrainConfig
    from disentangle.data.dsprites import OFFICIAL_MD5, OFFICIAL_NPZ_NAME
    from disentangle.data.ground_truth import GroundTruth
    from disentangle.models import disvae
    from disentangle.io import atomic_path, environment_info, file_sha256

    model_dir = Path(model_dir)
    model, fields, training = disvae.load_disvae(model_dir)
    run = RunDir(out)
    if run.path.exists() and (not run.path.is_dir() or any(run.path.iterdir())):
        raise UserError(f"{run.path}: exists and is not empty; choose a new --out")
    method, _ = disvae.LOSS_METHODS[training["loss"]]
    config = TrainConfig(**fields, device="cpu")
    setattr(config, "method", method)
    config.validate()
    origin = {"kind": ORIGIN_DISVAE, "source": disvae.SOURCE, "model_dir": str(model_dir.resolve()),
              "model_sha256": file_sha256(model_dir / disvae.MODEL_FILE),
              "specs_sha256": file_sha256(model_dir / disvae.SPECS_FILE), "training": training,
              "mapping": "encoder head de-interleaved (mean 2i, log-variance 2i+1); decoder's sigmoid "
                         "dropped (the weights are the logits'); see disentangle/models/disvae.py"}
    # what it trained on: the official file (no content checksum is known without it, so
    # matches_training_data stays None unless the user's copy is the official one)
    gt = GroundTruth.dsprites()
    data = {"source": "official", "file": OFFICIAL_NPZ_NAME, "source_checksum": OFFICIAL_MD5,
            "num_images": gt.num_images, "factor_sizes": list(gt.factor_sizes),
            "trained_by": "disentangling-vae"}
    run.path.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.model_path) as tmp:
        torch.save(model.state_dict(), tmp)
    run.write_config({"config": config.to_dict(), "data": data, "package": environment_info(),
                      "origin": origin, "created": _now()})
    run.write_status("finished", step=int(fields.get("steps", 0)),
                     reason=f"imported from disentangling-vae ({model_dir.name})",
                     origin=ORIGIN_DISVAE, model_sha256=run.model_sha256())
    return run
