"""The encoder/decoder networks for 64x64 images of any channel count, by name
(``TrainConfig.architecture``):

- ``burgess`` (version 1): the β-VAE network of Burgess et al. 2018 ("Understanding
  disentangling in β-VAE"). Encoder: 4 conv layers (32 channels, 4x4 kernels, stride 2,
  padding 1: 64→32→16→8→4), two fully connected layers of 256, then one linear layer to
  2·latent_dim (mean and log-variance). Decoder: the mirror image (fc 256, 256, 512 =
  32x4x4, then 4 transposed convolutions 32→32→32→1), ending in one logit per pixel.
  PyTorch's default initialisation. The toolkit's first network; runs without an
  ``architecture`` field are this one, and its state-dict names are unchanged.
- ``dlib`` (version 1): disentanglement_lib's ``conv_encoder`` / ``deconv_decoder``
  (google-research/disentanglement_lib, disentanglement_lib/methods/shared/architectures.py),
  the network of Locatello et al. 2019's study. See :class:`DlibEncoder`, :class:`DlibDecoder`.
- ``fc`` (version 1): disentanglement_lib's ``fc_encoder`` / ``fc_decoder`` (same file), the
  dSprites MLP of Higgins et al. 2017. See :class:`FcEncoder`, :class:`FcDecoder`.

The discriminator of FactorVAE (dlib's ``fc_discriminator``) is :class:`FcDiscriminator`.

Every encoder maps float32 x of shape (n, C, 64, 64) to (mean, logvar), every decoder z
to logits of shape (n, C, 64, 64); C is the dataset's channel count (``channels``, 1 by
default: the networks' first and last layers are the only ones that change). The networks know nothing about the loss:
:mod:`disentangle.models.methods` decides how the decoder output is read.

Mixed precision (``mixed`` = torch.bfloat16) runs the bulk of each network under autocast;
the layers that read or write precise values (the posterior heads, the first decoder
layer that reads z, the last layer that writes the logits) stay float32 in every
architecture. ``channels_last`` keeps conv activations NHWC.
"""
from __future__ import annotations


import torch
from torch import nn

from disentangle.models.likelihoods import LOG_SCALE_INIT, ScaledLikelihood, has_scale

IMAGE_SIZE = 64
CHANNELS = 32
HIDDEN = 256
_CONV_OUT = CHANNELS * 4 * 4  # 64 px halved four times -> 4x4

# Name -> version. A version changes whenever a network of that name would compute
# something else from the same weights (or start from other weights); it is recorded in
# config.json, so a run says which network it trained.
ARCHITECTURE_VERSIONS = {"burgess": 1, "dlib": 1, "fc": 1}


def _autocast(x: torch.Tensor, dtype: torch.dtype | None):
    """Mixed precision for the bulk of the network (convolutions and hidden layers);
    no-op when dtype is None."""
    return torch.autocast(device_type=x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def tf_same_padding(size: int, kernel: int, stride: int) -> int:
    """The symmetric PyTorch padding equal to TensorFlow's "same" padding of a stride-
    ``stride`` convolution on a ``size``-pixel input. TF pads
    total = max((ceil(size/stride) − 1)·stride + kernel − size, 0), the smaller half
    before; that is a symmetric padding only when total is even, which holds for every
    layer of dlib's network on 64x64 images (k4 s2 on even sizes: 1 each side; k2 s2: 0).
    A transposed "same" convolution is the gradient of the forward one on the output
    size (size·stride), so ConvTranspose2d(padding=p) with this p is TF's too."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    if total % 2:
        raise ValueError(f"TF 'same' padding of k{kernel} s{stride} on {size} px is asymmetric")
    return total // 2


def glorot_init_(module: nn.Module) -> nn.Module:
    """TensorFlow 1's defaults for tf.layers.dense/conv2d/conv2d_transpose: Glorot-uniform
    kernels (limit sqrt(6 / (fan_in + fan_out)), with fans counting the receptive field,
    which PyTorch's xavier_uniform_ computes alike for every layout here) and zero biases."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
    return module


# --------------------------------------------------------------------------- burgess
class Encoder(nn.Module):
    """Burgess: conv x4 -> fc 256 -> fc 256 (``body``), then the linear ``head`` to (mean, logvar)."""

    def __init__(self, latent_dim: int, channels: int = 1):
        super().__init__()
        self.latent_dim = latent_dim
        self.conv = nn.Sequential(
            nn.Conv2d(channels, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
        )
        self.fc = nn.Sequential(
            nn.Linear(_CONV_OUT, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
        )
        self.head = nn.Linear(HIDDEN, 2 * latent_dim)

    def forward(self, x: torch.Tensor, mixed: torch.dtype | None = None):
        with _autocast(x, mixed):
            # reshape, not view: the activations may be channels_last
            h = self.fc(self.conv(x).reshape(x.shape[0], _CONV_OUT))
        # the posterior parameters always in float32: a bfloat16 mean would round
        # away the precision of informative latents
        stats = self.head(h.float())
        return stats[:, :self.latent_dim], stats[:, self.latent_dim:]


class Decoder(nn.Module):
    """Burgess: ``stem`` fc 256 (float32: reads the precise z), then fc 256 -> fc 512 -> deconv x3
    (``fc``, ``deconv``), then the last transposed convolution ``head`` to one logit per pixel."""

    def __init__(self, latent_dim: int, channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(latent_dim, HIDDEN), nn.ReLU())
        self.fc = nn.Sequential(
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, _CONV_OUT), nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
        )
        self.head = nn.ConvTranspose2d(CHANNELS, channels, 4, 2, 1)

    def forward(self, z: torch.Tensor, mixed: torch.dtype | None = None,
                channels_last: bool = False) -> torch.Tensor:
        h = self.stem(z)
        with _autocast(z, mixed):
            h = self.fc(h).reshape(z.shape[0], CHANNELS, 4, 4)
            if channels_last:
                h = h.contiguous(memory_format=torch.channels_last)
            h = self.deconv(h)
        # the logits in float32: the loss sums 4,096 of them
        return self.head(h.float())


# --------------------------------------------------------------------------- dlib
def _tf_conv(cin: int, cout: int, k: int, size: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, 2, tf_same_padding(size, k, 2))


def _tf_deconv(cin: int, cout: int, k: int, size: int) -> nn.ConvTranspose2d:
    # "same" transposed conv from size to 2·size: the padding of the forward conv on 2·size
    return nn.ConvTranspose2d(cin, cout, k, 2, tf_same_padding(2 * size, k, 2))


class DlibEncoder(nn.Module):
    """dlib ``conv_encoder``: conv 32 k4 s2, conv 32 k4 s2, conv 64 k2 s2, conv 64 k2 s2
    (ReLU, TF "same" padding: 64→32→16→8→4), flatten (1,024), fc 256 ReLU, then two
    separate linear heads ``mean`` and ``logvar`` (two tf.layers.dense in dlib; separate
    here too, so their Glorot limits use fan_out = latent_dim as TF's do).

    Flatten order. TensorFlow's tensors are NHWC and tf.layers.flatten flattens (h, w, c)
    with c fastest; PyTorch's NCHW flatten would put c slowest. This encoder flattens in
    TF's order (permute to NHWC, then reshape), so feature i of the fc layer is the same
    activation as in dlib and a dlib checkpoint's dense kernel (1024, 256) maps 1:1 onto
    ``fc.0.weight`` transposed (conv kernels: TF (kh, kw, in, out) → PyTorch
    (out, in, kh, kw) by a permutation only; both frameworks cross-correlate).
    With channels_last activations the permute is free (they already are NHWC in memory).
    """

    def __init__(self, latent_dim: int, channels: int = 1):
        super().__init__()
        self.conv = nn.Sequential(
            _tf_conv(channels, 32, 4, 64), nn.ReLU(),
            _tf_conv(32, 32, 4, 32), nn.ReLU(),
            _tf_conv(32, 64, 2, 16), nn.ReLU(),
            _tf_conv(64, 64, 2, 8), nn.ReLU(),
        )
        self.fc = nn.Sequential(nn.Linear(4 * 4 * 64, 256), nn.ReLU())
        self.mean = nn.Linear(256, latent_dim)
        self.logvar = nn.Linear(256, latent_dim)
        glorot_init_(self)

    def forward(self, x: torch.Tensor, mixed: torch.dtype | None = None):
        with _autocast(x, mixed):
            h = self.conv(x).permute(0, 2, 3, 1).reshape(x.shape[0], 4 * 4 * 64)   # TF's HWC order
            h = self.fc(h)
        h = h.float()
        return self.mean(h), self.logvar(h)


class DlibDecoder(nn.Module):
    """dlib ``deconv_decoder``: fc 256 ReLU (``stem``, float32), fc 1024 ReLU reshaped to
    4×4×64, transposed conv 64, 32, 32 (k4 s2 "same", ReLU), then the transposed conv
    ``head`` to the image's channels (k4 s2 "same"): logits, 4→8→16→32→64.

    Reshape order. dlib reshapes the 1,024 features to [-1, 4, 4, 64] (NHWC, c fastest);
    this decoder does the same (reshape to (n, 4, 4, 64), then permute to NCHW, which is
    a channels_last view), so ``fc.0`` maps 1:1 to dlib's dense kernel transposed and the
    transposed-conv kernels TF (kh, kw, out, in) → PyTorch (in, out, kh, kw) by a
    permutation only.
    """

    def __init__(self, latent_dim: int, channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Linear(latent_dim, 256), nn.ReLU())
        self.fc = nn.Sequential(nn.Linear(256, 1024), nn.ReLU())
        self.deconv = nn.Sequential(
            _tf_deconv(64, 64, 4, 4), nn.ReLU(),
            _tf_deconv(64, 32, 4, 8), nn.ReLU(),
            _tf_deconv(32, 32, 4, 16), nn.ReLU(),
        )
        self.head = _tf_deconv(32, channels, 4, 32)
        glorot_init_(self)

    def forward(self, z: torch.Tensor, mixed: torch.dtype | None = None,
                channels_last: bool = False) -> torch.Tensor:
        h = self.stem(z)
        with _autocast(z, mixed):
            h = self.fc(h).reshape(z.shape[0], 4, 4, 64).permute(0, 3, 1, 2)   # TF's HWC order
            if not channels_last:
                h = h.contiguous()
            h = self.deconv(h)
        return self.head(h.float())


# --------------------------------------------------------------------------- fc
class FcEncoder(nn.Module):
    """dlib ``fc_encoder``: flatten (64·64·C in TF's HWC order, channel fastest; for one
    channel that is PyTorch's order), fc 1200 ReLU, fc 1200 ReLU, linear heads ``mean``
    and ``logvar``."""

    def __init__(self, latent_dim: int, channels: int = 1):
        super().__init__()
        self.pixels = IMAGE_SIZE * IMAGE_SIZE * channels
        self.fc = nn.Sequential(nn.Linear(self.pixels, 1200), nn.ReLU(),
                                nn.Linear(1200, 1200), nn.ReLU())
        self.mean = nn.Linear(1200, latent_dim)
        self.logvar = nn.Linear(1200, latent_dim)
        glorot_init_(self)

    def forward(self, x: torch.Tensor, mixed: torch.dtype | None = None):
        with _autocast(x, mixed):
            h = self.fc(x.permute(0, 2, 3, 1).reshape(x.shape[0], self.pixels))   # TF's HWC order
        h = h.float()
        return self.mean(h), self.logvar(h)


class FcDecoder(nn.Module):
    """dlib ``fc_decoder``: fc 1200 tanh (``stem``, float32), fc 1200 tanh ×2, then the
    linear ``head`` to 64·64·C logits reshaped as TF does (HWC) to (n, C, 64, 64)."""

    def __init__(self, latent_dim: int, channels: int = 1):
        super().__init__()
        self.channels = channels
        self.stem = nn.Sequential(nn.Linear(latent_dim, 1200), nn.Tanh())
        self.fc = nn.Sequential(nn.Linear(1200, 1200), nn.Tanh(), nn.Linear(1200, 1200), nn.Tanh())
        self.head = nn.Linear(1200, IMAGE_SIZE * IMAGE_SIZE * channels)
        glorot_init_(self)

    def forward(self, z: torch.Tensor, mixed: torch.dtype | None = None,
                channels_last: bool = False) -> torch.Tensor:
        h = self.stem(z)
        with _autocast(z, mixed):
            h = self.fc(h)
        out = self.head(h.float()).reshape(z.shape[0], IMAGE_SIZE, IMAGE_SIZE, self.channels)
        return out.permute(0, 3, 1, 2).contiguous()


class FcDiscriminator(nn.Module):
    """dlib ``fc_discriminator`` (architectures.py), FactorVAE's critic: six fc 1000
    leaky-ReLU layers (tf.nn.leaky_relu, slope 0.2), then a linear layer to 2 logits.
    ``forward`` returns (logits, probabilities clipped to [1e-6, 1 − 1e-6]) as dlib's.
    Logit 0 is "z drawn from q(z)", logit 1 "z drawn from the product of its marginals".
    Always float32 (it is small next to the VAE and its log-probabilities are losses).
    """

    def __init__(self, latent_dim: int, hidden: int = 1000, layers: int = 6):
        super().__init__()
        mods: list[nn.Module] = []
        width = latent_dim
        for _ in range(layers):
            mods += [nn.Linear(width, hidden), nn.LeakyReLU(0.2)]
            width = hidden
        self.body = nn.Sequential(*mods)
        self.head = nn.Linear(hidden, 2)
        glorot_init_(self)

    def forward(self, z: torch.Tensor):
        logits = self.head(self.body(z))
        probs = torch.softmax(logits, dim=1).clamp(1e-6, 1 - 1e-6)
        return logits, probs


NETWORKS = {"burgess": (Encoder, Decoder), "dlib": (DlibEncoder, DlibDecoder), "fc": (FcEncoder, FcDecoder)}
ARCHITECTURES = tuple(NETWORKS)


# --------------------------------------------------------------------------- the VAE
class VAE(nn.Module):
    """Encoder + decoder of one architecture. ``encode(x) -> (mean, logvar)`` for float32
    x of shape (n, C, 64, 64) in [0, 1]; ``decode(z) -> logits`` of shape (n, C, 64, 64).
    ``channels``: the dataset's (1 for dSprites, 3 for the colour sets)."""

    def __init__(self, latent_dim: int = 10, likelihood: str = "bernoulli", architecture: str = "burgess",
                 channels: int = 1):
        super().__init__()
        if architecture not in NETWORKS:
            raise ValueError(f"unknown architecture {architecture!r} (choose from {', '.join(NETWORKS)})")
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.architecture = architecture
        self.channels = int(channels)
        encoder, decoder = NETWORKS[architecture]
        self.encoder = encoder(self.latent_dim, self.channels)
        self.decoder = decoder(self.latent_dim, self.channels)
        if has_scale(likelihood):
            # a discretised likelihood's learned log-scale, one per image channel
            # (models/likelihoods.py); made after the networks, so their weights are unchanged
            self.log_scale = nn.Parameter(torch.full((self.channels,), LOG_SCALE_INIT))

        # Execution settings of the training loop (see set_execution); not part of the
        # weights. Defaults: plain float32, contiguous (NCHW) activations.
        self.mixed: torch.dtype | None = None
        self.channels_last = False

    def output_likelihood(self):
        """What the loss reads the decoder output with: the likelihood's name, or for a
        discretised one a ScaledLikelihood holding this model's log-scale parameter."""
        return ScaledLikelihood(self.likelihood, self.log_scale) if has_scale(self.likelihood) else self.likelihood

    def set_execution(self, mixed: torch.dtype | None = None, channels_last: bool = False) -> "VAE":
        """Run convolutions and hidden layers in ``mixed`` precision (e.g. torch.bfloat16;
        the posterior heads, the first decoder layer and the output layer stay float32), and
        keep conv activations and weights channels_last (faster oneDNN kernels on CPU)."""
        self.mixed = mixed
        self.channels_last = channels_last
        self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.encoder(x, self.mixed)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, self.mixed, self.channels_last)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """Reparameterised pass: z = mean + exp(logvar / 2) · noise, noise ~ N(0, I)
        given by the caller (the training loop draws it from its own generator, so a
        run is reproducible). Without noise, z = mean. Returns (logits, mean, logvar)."""
        mean, logvar = self.encode(x)
        return self.decode(self.sample(mean, logvar, noise)), mean, logvar

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        """z = mean + exp(logvar / 2) · noise (z = mean without noise)."""
        return mean if noise is None else mean + torch.exp(0.5 * logvar) * noise

    def reconstruct_mean(self, logits: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image: sigmoid of the logits, for both likelihoods."""
        return torch.sigmoid(logits)


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_model(latent_dim: int, likelihood: str, seed: int, architecture: str = "burgess",
                channels: int = 1) -> VAE:
    """A freshly initialised model whose weights depend only on (architecture, latent_dim,
    seed); made on the CPU, so a run starts from the same weights on every device. Drawn
    from a forked RNG so global random state is untouched. (burgess: PyTorch's default
    layer initialisation; dlib and fc: TF1's, see :func:`glorot_init_`.)"""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return VAE(latent_dim, likelihood, architecture, channels)


def build_discriminator(latent_dim: int, seed: int) -> FcDiscriminator:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return FcDiscriminator(latent_dim)
