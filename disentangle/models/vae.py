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


class Encoder(nn.Module):
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
            nn.Linear(HIDDEN, 2 * latent_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # reshape, not view: the activations may be channels_last
        return self.fc(self.conv(x).reshape(x.shape[0], _CONV_OUT))


class Decoder(nn.Module):
    def __init__(self, latent_dim: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, _CONV_OUT), nn.ReLU(),
        )
        self.deconv = nn.Sequential(
            nn.ConvTranspose2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(CHANNELS, CHANNELS, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(CHANNELS, 1, 4, 2, 1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.fc(z).reshape(z.shape[0], CHANNELS, 4, 4))


class BetaVAE(nn.Module):
    """Encoder + decoder. ``encode(x) -> (mean, logvar)`` for float32 x of shape
    (n, 1, 64, 64) in {0, 1}; ``decode(z) -> logits`` of shape (n, 1, 64, 64)."""

    def __init__(self, latent_dim: int = 10, likelihood: str = "bernoulli"):
        super().__init__()
        self.latent_dim = int(latent_dim)
        self.likelihood = likelihood
        self.encoder = Encoder(self.latent_dim)
        self.decoder = Decoder(self.latent_dim)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stats = self.encoder(x)
        return stats[:, :self.latent_dim], stats[:, self.latent_dim:]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

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
