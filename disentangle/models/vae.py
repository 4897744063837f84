"""The β-VAE network of Burgess et al. 2018 ("Understanding disentangling in β-VAE"),
for 64x64 single-channel images.

Encoder: 4 conv layers (32 channels, 4x4 kernels, stride 2, padding 1: 64→32→16→8→4),
two fully connected layers of 256, then a linear layer to 2·latent_dim (mean and
log-variance). Decoder: the mirror image (fc 256, 256, 512 = 32x4x4, then 4 transposed
convolutions 32→32→32→1), ending in one logit per pixel.

The network knows nothing about the loss: :mod:`disentangle.models.objectives` decides
how the decoder output is read (Bernoulli logits, or the Gaussian mean after a sigmoid).
"""
from __future__ import annotations

import torch
from torch import nn

IMAGE_SIZE = 64
CHANNELS = 32
HIDDEN = 256
_CONV_OUT = CHANNELS * 4 * 4  # 64 px halved four times -> 4x4


def _autocast(x: torch.Tensor, dtype: torch.dtype | None):
    """Mixed precision for the bulk of the network (convolutions and hidden layers);
    no-op when dtype is None."""
    return torch.autocast(device_type=x.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


class Encoder(nn.Module):
    """conv x4 -> fc 256 -> fc 256 (``body``), then the linear ``head`` to (mean, logvar)."""

    def __init__(self, latent_dim: int):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(1, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
        )
        self.fc = nn.Sequential(
            nn.Linear(_CONV_OUT, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
        )
        self.head = nn.Linear(HIDDEN, 2 * latent_dim)

    def forward(self, x: torch.Tensor, mixed: torch.dtype | None = None) -> torch.Tensor:
        with _autocast(x, mixed):
            # reshape, not view: the activations may be channels_last
            h = self.fc(self.conv(x).reshape(x.shape[0], _CONV_OUT))
        # the posterior parameters always in float32: a bfloat16 mean would round
        # away the precision of informative latents
        return self.head(h.float())


class Decoder(nn.Module):
    """``stem`` fc 256 (float32: reads the precise z), then fc 256 -> fc 512 -> deconv x3
    (``fc``, ``deconv``), then the last transposed convolution ``head`` to one logit per pixel."""

    def __init__(self, latent_dim: int):
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
        self.head = nn.ConvTranspose2d(CHANNELS, 1, 4, 2, 1)

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


class BetaVAE(nn.Module):
    """Encoder + decoder. ``encode(x) -> (mean, logvar)`` for float32 x of shape
    (n, 1, 64, 64) in {0, 1}; ``decode(z) -> logits`` of shape (n, 1, 64, 64)."""

    def __init__(self, latent_dim: int = 10, likelihood: str = "bernoulli"):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.encoder = Encoder(self.latent_dim)
        self.decoder = Decoder(self.latent_dim)

        # Execution settings of the training loop (see set_execution); not part of the
        # weights. Defaults: plain float32, contiguous (NCHW) activations.
        self.mixed: torch.dtype | None = None
        self.channels_last = False

    def set_execution(self, mixed: torch.dtype | None = None, channels_last: bool = False) -> "BetaVAE":
        """Run convolutions and hidden layers in ``mixed`` precision (e.g. torch.bfloat16;
        the posterior head, decoder stem and output layer stay float32), and keep conv
        activations and weights channels_last (faster oneDNN kernels on CPU)."""
        self.mixed = mixed
        self.channels_last = channels_last
        self.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
        return self

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        stats = self.encoder(x, self.mixed)
        return stats[:, :self.latent_dim], stats[:, self.latent_dim:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, self.mixed, self.channels_last)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None):
        """Reparameterised pass: z = mean + exp(logvar / 2) · noise, noise ~ N(0, I)
        given by the caller (the training loop draws it from its own generator, so a
        run is reproducible). Without noise, z = mean. Returns (logits, mean, logvar)."""
        mean, logvar = self.encode(x)
        z = mean if noise is None else mean + torch.exp(0.5 * logvar) * noise
        return self.decode(z), mean, logvar

    def reconstruct_mean(self, logits: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image: sigmoid of the logits, for both likelihoods."""
        return torch.sigmoid(logits)


def build_model(latent_dim: int, likelihood: str, seed: int) -> BetaVAE:
    """A freshly initialised model whose weights depend only on (latent_dim, seed); made
    on the CPU, so a run starts from the same weights on every device. PyTorch's default
    layer initialisation, drawn from a forked RNG so global random state is untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BetaVAE(latent_dim, likelihood)
