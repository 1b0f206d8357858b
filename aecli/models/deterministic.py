"""What the deterministic autoencoders (ae, cae, dae, sae) share: a code z = s(f(x)) and a reconstruction.

    z = s(f(x))            f the encoder network, s the code activation (`code_activation`)
    x_hat = g(z)           g the decoder network; its outputs are pixel logits l, x_hat = sigmoid(l)

The reconstruction cost (`recon_loss`), summed over the pixels, one value per image:
- bce: -log p(x|z) = sum_i BCE(x_i, sigmoid(l_i)), the Bernoulli negative log-likelihood (nats), the
  cross-entropy of Vincent et al. 2010 (Sec. 2.1) for inputs in [0, 1];
- mse: sum_i (x_i - sigmoid(l_i))^2, the squared error.

Each model writes its own `loss` (reconstruction + lambda * its regularizer) in its own file. A deterministic
model has no p(z) of its own unless it declares one: ae, cae, dae and sae add `FittedPrior` (a Gaussian mixture
fitted to their training codes, aecli.models.prior); a model that shapes its codes toward N(0, I) (a WAE) keeps
the base class's native prior instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from aecli import schema
from aecli.errors import AecliError
from aecli.models.base import IMAGE_SHAPE, Autoencoder, bernoulli_nll

CODE_ACTIVATIONS = {"none": nn.Identity, "sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def code_activation(default: str = "none"):
    """The `code_activation` option: s in z = s(f(x))."""
    return schema.choice(*CODE_ACTIVATIONS, default=default)


def recon_loss():
    """The `recon_loss` option: bce (Bernoulli cross-entropy, nats) or mse (squared error), summed over pixels."""
    return schema.choice("bce", "mse")


@dataclass
class CodeOptions(schema.Options):
    """The options every deterministic model with a free code activation and tied weights shares (ae, cae, dae); a model's own
    Options derive from it and add theirs."""

    code_activation: str = code_activation()
    recon_loss: str = recon_loss()
    tied: bool = schema.boolean(False)  # decoder weights = the encoder's transposed, W' = W^T (a net that ties: mlp)


class DeterministicAE(Autoencoder):
    """Encoder, decoder, code activation and reconstruction cost; `loss` is the model's. Options it reads:
    code_activation (default none), recon_loss, and, when the model declares them, dropout and tied."""

    code_activation = "none"
    recon_loss = "bce"
    dropout = 0.0
    tied = False

    def __init__(self, net, latent_dim, lam=None, image_shape=IMAGE_SHAPE, n_classes=10, **options):
        super().__init__(net, latent_dim, lam, image_shape, n_classes, **options)
        if self.tied and not net.ties_weights:
            raise AecliError(f"model.tied=true needs a net whose decoder can share the encoder's weights (mlp); "
                             f"net {net.describe()} cannot: use net=mlp or model.tied=false")
        self.code = CODE_ACTIVATIONS[self.code_activation]()  # z = s(h), s the code activation
        self.encoder = net.encoder(self.image_shape, self.latent_dim, dropout=self.dropout)
        self.decoder = net.decoder(self.image_shape, self.latent_dim, dropout=self.dropout)
        if self.tied:
            self.decoder.tie_to(self.encoder)

    @property
    def loss_units(self) -> str:
        return "nats per image" if self.recon_loss == "bce" else "squared error per image (val_recon: nats)"

    def encode(self, x, y=None):
        return self.code(self.encoder(x))

    def decode(self, z, y=None):
        return self.decoder(z)

    def recon_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction cost of x given the decoder's logits, one value per image (see the module doc)."""
        if self.recon_loss == "bce":
            return bernoulli_nll(logits, x)
        return (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)
