"""disentangling-vae's released models (YannDubs/disentangling-vae, MIT licence) on the
toolkit's ``burgess`` network.

A disentangling-vae model directory holds ``model.pt`` (a state dict saved with
``torch.save(model.state_dict())``, disvae/utils/modelIO.py) and ``specs.json`` (the
training arguments of main.py). Its ``Burgess`` model (disvae/models/encoders.py,
decoders.py) is the toolkit's ``burgess`` network layer for layer, with two differences in
how the weights are read:

- the encoder's last layer ``mu_logvar_gen`` has 2·D outputs INTERLEAVED: its forward
  pass reshapes them to (n, D, 2) and unbinds, so output 2i is the mean of dimension i
  and 2i+1 its log-variance; the toolkit's ``head`` puts the D means first. The mapping
  takes rows 0, 2, 4, ... then 1, 3, 5, ...;
- the decoder ends in ``torch.sigmoid(convT3(x))`` (probabilities); the toolkit's decoder
  returns logits, so ``convT3``'s weights are exactly the logits' weights and nothing else
  changes (their Bernoulli loss, binary cross-entropy on the probabilities summed over
  pixels, is the toolkit's on the logits).

Layer names: encoder conv1, conv2, conv3, conv_64 -> conv.0, .2, .4, .6; lin1, lin2 ->
fc.0, fc.2; mu_logvar_gen -> head (rows de-interleaved). Decoder lin1 -> stem.0; lin2,
lin3 -> fc.0, fc.2; convT_64, convT1, convT2 -> deconv.0, .2, .4 (convT_64 runs FIRST in
their forward pass, on the 4x4 input); convT3 -> head. tests/test_disvae.py re-implements
their modules and checks that both networks compute the same means, log-variances and
logits from the same image.

Their training settings map onto the toolkit's methods (:data:`LOSS_METHODS`); what their
losses do that the toolkit's methods do not (the regulariser's linear warm-up over
``reg_anneal`` steps for betaH, btcvae and factor; β-TCVAE's minibatch-stratified
sampling) is recorded in the origin, not hidden.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from disentangle.errors import UserError

SOURCE = "https://github.com/YannDubs/disentangling-vae"
MODEL_FILE = "model.pt"
SPECS_FILE = "specs.json"
# the official dSprites file their dsprites dataset loads (utils/datasets.py)
OFFICIAL_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
DSPRITES_IMAGES = 737_280

# their state-dict name -> the toolkit's burgess name (the head is special: de-interleaved)
ENCODER_NAMES = {"conv1": "conv.0", "conv2": "conv.2", "conv3": "conv.4", "conv_64": "conv.6",
                 "lin1": "fc.0", "lin2": "fc.2", "mu_logvar_gen": "head"}
DECODER_NAMES = {"lin1": "stem.0", "lin2": "fc.0", "lin3": "fc.2", "convT_64": "deconv.0",
                 "convT1": "deconv.2", "convT2": "deconv.4", "convT3": "head"}

# their --loss -> (the toolkit's method, {toolkit hyper-parameter: specs.json key}).
# VAE is β-VAE with β = 1; betaH Higgins et al.; betaB Burgess et al.'s capacity annealing
# (γ |KL − C|, C from betaB_initC to betaB_finC over reg_anneal steps); btcvae Chen et al.
# (α = btcvae_A, β = btcvae_B, γ = btcvae_G; the toolkit's beta-tcvae is α = γ = 1);
# factor Kim & Mnih (γ = factor_G).
LOSS_METHODS: dict[str, tuple[str, dict[str, str]]] = {
    "VAE": ("beta-vae", {}),
    "betaH": ("beta-vae", {"beta": "betaH_B"}),
    "betaB": ("annealed-vae", {"gamma": "betaB_G", "capacity_max": "betaB_finC", "capacity_steps": "reg_anneal"}),
    "btcvae": ("beta-tcvae", {"beta": "btcvae_B"}),
    "factor": ("factor-vae", {"gamma": "factor_G"}),
}
# losses that multiply their regulariser by min(step / reg_anneal, 1) (losses.py, linear_annealing)
WARMED_UP = ("VAE", "betaH", "btcvae", "factor")   # VAE is their BetaHLoss with β = 1


def _fail(path: Path, why: str) -> UserError:
    return UserError(f"{path}: {why}")


def read_specs(model_dir: str | os.PathLike) -> dict:
    """specs.json of a disentangling-vae model directory, checked to be a Burgess model of
    one-channel 64x64 images; UserError naming the file otherwise."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise _fail(model_dir, "no such directory (expected a disentangling-vae model directory "
                               f"with {MODEL_FILE} and {SPECS_FILE})")
    path = model_dir / SPECS_FILE
    if not path.is_file():
        raise _fail(path, f"missing: not a disentangling-vae model directory (it holds {MODEL_FILE} "
                          f"and {SPECS_FILE})")
    try:
        specs = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise _fail(path, f"unreadable ({str(exc).splitlines()[0]})") from None
    if not isinstance(specs, dict):
        raise _fail(path, "not a disentangling-vae specs file (expected a JSON object)")
    missing = [k for k in ("model_type", "img_size", "latent_dim", "loss") if k not in specs]
    if missing:
        raise _fail(path, f"not a disentangling-vae specs file (no {', '.join(missing)})")
    if str(specs["model_type"]).lower() != "burgess":
        raise _fail(path, f"model_type {specs['model_type']!r}: only disentangling-vae's Burgess model "
                          f"can be imported")
    if list(specs["img_size"]) != [1, 64, 64]:
        raise _fail(path, f"img_size {specs['img_size']}: only one-channel 64x64 models (dSprites) "
                          f"can be imported")
    latent = specs["latent_dim"]
    if isinstance(latent, bool) or not isinstance(latent, int) or latent < 1:
        raise _fail(path, f"latent_dim {latent!r}: expected a positive integer")
    if specs["loss"] not in LOSS_METHODS:
        raise _fail(path, f"loss {specs['loss']!r}: unknown (known: {', '.join(LOSS_METHODS)})")
    if specs.get("rec_dist", "bernoulli") != "bernoulli":
        raise _fail(path, f"rec_dist {specs['rec_dist']!r}: only the Bernoulli decoder can be imported "
                          f"(the toolkit has no {specs['rec_dist']} likelihood of theirs)")
    return specs


def _expected_shapes(latent_dim: int) -> dict[str, tuple[int, ...]]:
    conv, lin = (32, 32, 4, 4), (256, 256)
    shapes = {}
    for prefix, layers in (("encoder", {"conv1": (32, 1, 4, 4), "conv2": conv, "conv3": conv, "conv_64": conv,
                                        "lin1": (256, 512), "lin2": lin, "mu_logvar_gen": (2 * latent_dim, 256)}),
                           ("decoder", {"lin1": (256, latent_dim), "lin2": lin, "lin3": (512, 256),
                                        "convT_64": conv, "convT1": conv, "convT2": conv, "convT3": (32, 1, 4, 4)})):
        for name, shape in layers.items():
            shapes[f"{prefix}.{name}.weight"] = shape
            shapes[f"{prefix}.{name}.bias"] = (shape[1] if prefix == "decoder" and name.startswith("convT")
                                               else shape[0],)
    return shapes


def read_state(model_dir: str | os.PathLike, latent_dim: int) -> dict:
    """Their model.pt as a state dict (torch.load(weights_only=True), never a pickle),
    checked to hold exactly the Burgess model's tensors with their shapes."""
    import torch
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise _fail(path, "missing: not a disentangling-vae model directory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged zip, a foreign pickle: all mean "not their weights"
        raise _fail(path, f"unreadable model file ({type(exc).__name__}); not a state dict") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise _fail(path, "not a state dict of tensors")
    want = _expected_shapes(latent_dim)
    missing, extra = sorted(set(want) - set(state)), sorted(set(state) - set(want))
    if missing or extra:
        raise _fail(path, "not disentangling-vae's Burgess model "
                          f"({'missing ' + ', '.join(missing[:3]) if missing else 'unexpected ' + ', '.join(extra[:3])})")
    for key, shape in want.items():
        if tuple(state[key].shape) != shape:
            raise _fail(path, f"{key} has shape {tuple(state[key].shape)}, expected {shape} "
                              f"(latent_dim {latent_dim} in {SPECS_FILE})")
    return state


def to_burgess_state(state: dict, latent_dim: int) -> dict:
    """Their Burgess state dict -> the toolkit's ``burgess`` VAE state dict (module
    docstring): renamed, the encoder head's interleaved rows split into means then
    log-variances, every tensor float32 and contiguous."""
    import torch
    out: dict[str, torch.Tensor] = {}
    for prefix, names in (("encoder", ENCODER_NAMES), ("decoder", DECODER_NAMES)):
        for theirs, ours in names.items():
            for kind in ("weight", "bias"):
                tensor = state[f"{prefix}.{theirs}.{kind}"].detach().to(torch.float32)
                if prefix == "encoder" and theirs == "mu_logvar_gen":
                    # output 2i is mean i, 2i+1 its log-variance (view(-1, D, 2).unbind(-1))
                    tensor = torch.cat([tensor[0::2], tensor[1::2]])
                out[f"{prefix}.{ours}.{kind}"] = tensor.contiguous().clone()
    if len(out) != 2 * (len(ENCODER_NAMES) + len(DECODER_NAMES)):
        raise AssertionError("mapping lost a tensor")
    return out


def training_settings(specs: dict) -> tuple[dict[str, Any], dict[str, Any]]:
    """(TrainConfig fields, the origin's training record) from their specs.json.

    Steps: their trainer runs ``epochs`` passes over the whole dSprites file in batches of
    ``batch_size`` (the last partial batch included), so steps = epochs · ceil(737,280 /
    batch_size). The record keeps every specs.json value, and says what their loss does
    that the toolkit's method does not."""
    loss = specs["loss"]
    method, keys = LOSS_METHODS[loss]
    fields: dict[str, Any] = {"architecture": "burgess", "likelihood": "bernoulli",
                              "latent_dim": int(specs["latent_dim"])}
    for ours, theirs in keys.items():
        value = specs.get(theirs)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UserError(f"{SPECS_FILE}: {theirs} {value!r}: expected a number (the {loss} loss's {ours})")
        fields[ours] = int(value) if ours == "capacity_steps" else float(value)
    if loss == "VAE":
        fields["beta"] = 1.0
    batch, epochs = specs.get("batch_size"), specs.get("epochs")
    if isinstance(batch, int) and batch > 0:
        fields["batch_size"] = batch
    if isinstance(epochs, int) and isinstance(batch, int) and batch > 0 and epochs > 0 and specs.get("dataset") == "dsprites":
        fields["steps"] = epochs * -(-DSPRITES_IMAGES // batch)
    if isinstance(specs.get("lr"), (int, float)) and not isinstance(specs.get("lr"), bool):
        fields["lr"] = float(specs["lr"])
    if isinstance(specs.get("seed"), int) and not isinstance(specs.get("seed"), bool):
        fields["seed"] = int(specs["seed"])
    notes = []
    if loss in WARMED_UP and specs.get("reg_anneal"):
        notes.append(f"their {loss} loss raises the regulariser's weight linearly from 0 to 1 over the "
                     f"first {specs['reg_anneal']} steps; the toolkit's {method} does not")
    if loss == "btcvae":
        notes.append(f"their β-TCVAE estimates the TC with minibatch-stratified sampling (is_mss) and "
                     f"weights α = {specs.get('btcvae_A')}, γ = {specs.get('btcvae_G')} (the toolkit's: "
                     f"dlib's minibatch-weighted estimate, α = γ = 1)")
    if loss == "factor":
        notes.append(f"their FactorVAE splits each batch of {batch} in two halves (VAE and discriminator), "
                     f"discriminator Adam lr {specs.get('lr_disc')}")
    training = {"loss": loss, "method": method, "epochs": epochs, "batch_size": batch, "lr": specs.get("lr"),
                "seed": specs.get("seed"), "dataset": specs.get("dataset"),
                "data_file": OFFICIAL_FILE if specs.get("dataset") == "dsprites" else None,
                "differences": notes, "specs": specs}
    return fields, training


def load_disvae(model_dir: str | os.PathLike):
    """(the toolkit's VAE holding their weights, in eval mode; its TrainConfig fields;
    the training record) of a disentangling-vae model directory. Everything is checked
    before anything is built; UserError naming the file at the first problem."""
    from disentangle.models.architectures import VAE
    specs = read_specs(model_dir)
    latent_dim = int(specs["latent_dim"])
    state = read_state(model_dir, latent_dim)
    fields, training = training_settings(specs)
    model = VAE(latent_dim, "bernoulli", "burgess")
    model.load_state_dict(to_burgess_state(state, latent_dim), strict=True)
    return model.eval(), fields, training
