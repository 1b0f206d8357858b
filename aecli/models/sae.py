"""Sparse autoencoder (Ng, "Sparse autoencoder", CS294A lecture notes 2011, Sec. 2.3).

The code is a layer of sigmoid units h = sigmoid(f(x)) in [0, 1]; their batch-mean activations

    rho_hat_j = (1/B) sum_b h_j(x_b)

are pulled toward a small target rho (`rho`) by

    L = (1/B) sum_b R(x_b, g(h(x_b))) + lambda * sum_j KL(rho || rho_hat_j),
    KL(rho || rho_hat) = rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat))

(the KL between Bernoulli(rho) and Bernoulli(rho_hat); a batch-level term), or with `sparsity: l1` by
lambda * (1/B) sum_b sum_j |h_j(x_b)|. lambda weighs the sparsity penalty (beta in Ng's notes).
"""

from __future__ import annotations

import math

import torch

from dataclasses import dataclass

from aecli import schema
from aecli.models.base import IMAGE_SHAPE
from aecli.models.deterministic import DeterministicAE, recon_loss
from aecli.models.prior import FittedPrior


def bernoulli_kl(rho: float, rho_hat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(Bernoulli(rho) || Bernoulli(rho_hat)) elementwise; rho_hat is clamped away from 0 and 1."""
    rho_hat = rho_hat.clamp(eps, 1 - eps)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


@dataclass
class Options(schema.Options):
    sparsity: str = schema.choice("kl", "l1")  # kl: KL to the target rho; l1: lambda * mean_b sum_j |h_j|
    rho: float = schema.number(0.05, low=0, high=1, low_open=True, high_open=True)  # target mean activation
    recon_loss: str = recon_loss()


class SAE(FittedPrior, DeterministicAE):
    name = "sae"
    Options = Options
    default_lambda = 3.0
    sparse_code = True
    code_activation = "sigmoid"  # not an option: the code is a layer of sigmoid units

    def __init__(self, net, latent_dim, lam=None, image_shape=IMAGE_SHAPE, n_classes=10, **options):
        super().__init__(net, latent_dim, lam, image_shape, n_classes, **options)
        # start every unit at the target activation, sigmoid(b) = rho: the KL then starts at its minimum instead of
        # pushing every unit down at once into saturation (the conv sae stayed at the mean image that way)
        if self.sparsity == "kl":
            with torch.no_grad():
                self.encoder.out.bias.fill_(math.log(self.rho / (1 - self.rho)))

    def sparsity_penalty(self, h: torch.Tensor) -> torch.Tensor:
        """sum_j KL(rho || rho_hat_j) over the batch, or the mean over images of sum_j |h_j|."""
        if self.sparsity == "kl":
            return bernoulli_kl(self.rho, h.mean(0)).sum()
        return h.abs().sum(1).mean()

    def loss(self, x, y=None):
        h = self.encode(x)  # sigmoid code activations
        recon = self.recon_nll(self.decode(h), x).mean()
        sparsity = self.sparsity_penalty(h)
        return {"loss": recon + self.lam * sparsity, "recon": recon, "sparsity": sparsity}
