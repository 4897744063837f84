"""Old import path of the model: the networks now live in
:mod:`disentangle.models.architectures` (same classes, same state-dict names)."""
from disentangle.models.architectures import BetaVAE, Decoder, Encoder, build_model  # noqa: F401
