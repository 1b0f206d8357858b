"""What the deterministic autoencoders (ae, cae, dae, sae) share: a code z = s(f(x)) and a reconstruction.

    z = s(f(x))            f the encoder network, s the code activation (`code_activation`)
    x_hat = g(z)           g the decoder network; its outputs are pixel logits l, x_hat = sigmoid(l)

The reconstruction cost (`recon_loss`), summed over the 784 pixels, one value per image:
- bce: -log p(x|z) = sum_i BCE(x_i, sigmoid(l_i)), the Bernoulli negative log-likelihood (nats), the
  cross-entropy of Vincent et al. 2010 (Sec. 2.1) for inputs in [0, 1];
- mse: sum_i (x_i - sigmoid(l_i))^2, the squared error.

Each model writes its own `loss` (reconstruction + lambda * its regularizer) in its own file. None has a
prior p(z): they sample from a Gaussian mixture fitted to their training codes (aecli.models.prior).
"""

from __future__ import annotations

import torch
from torch import nn

from aecli.errors import AecliError
from aecli.models.base import Autoencoder, bernoulli_nll, check_choice
from aecli.models.prior import COMPONENTS, FittedPrior, GaussianMixture
from aecli.nets import build_decoder, build_encoder

CODE_ACTIVATIONS = {"none": nn.Identity, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
RECON_LOSSES = ("bce", "mse")


class DeterministicAE(FittedPrior, Autoencoder):
    """Encoder, decoder, code activation, reconstruction cost and fitted code prior; `loss` is the model's."""

    def __init__(self, net, latent_dim: int, lam: float, code_activation: str = "none", recon_loss: str = "bce",
                 dropout: float = 0.0, tied: bool = False):
        super().__init__(net, latent_dim, lam)
        check_choice("code_activation", code_activation, CODE_ACTIVATIONS)
        check_choice("recon_loss", recon_loss, RECON_LOSSES)
        if tied and net["name"] != "mlp":
            raise AecliError(f"model.tied=true needs net=mlp (net={net['name']} has no transposed twin for each "
                             f"encoder weight): use net=mlp or model.tied=false")
        self.code_activation = code_activation
        self.code = CODE_ACTIVATIONS[code_activation]()  # z = s(h), s the code activation
        self.recon_loss = recon_loss
        self.encoder = build_encoder(net, self.latent_dim, dropout=dropout)
        self.decoder = build_decoder(net, self.latent_dim, dropout=dropout)
        if tied:
            self.decoder.tie_to(self.encoder)
        self.prior = GaussianMixture(COMPONENTS, self.latent_dim)

    def encode(self, x, y=None):
        return self.code(self.encoder(x))

    def decode(self, z, y=None):
        return self.decoder(z)

    def recon_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction cost of x given the decoder's logits, one value per image (see the module doc)."""
        if self.recon_loss == "bce":
            return bernoulli_nll(logits, x)
        return (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)
