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

from aecli.models.base import check_choice
from aecli.models.deterministic import DeterministicAE

SPARSITIES = ("kl", "l1")


def bernoulli_kl(rho: float, rho_hat: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """KL(Bernoulli(rho) || Bernoulli(rho_hat)) elementwise; rho_hat is clamped away from 0 and 1."""
    rho_hat = rho_hat.clamp(eps, 1 - eps)
    return rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))


class SAE(DeterministicAE):
    name = "sae"

    def __init__(self, net, latent_dim: int, lam: float = 3.0, sparsity: str = "kl", rho: float = 0.05,
                 recon_loss: str = "bce"):
        super().__init__(net, latent_dim, lam, code_activation="sigmoid", recon_loss=recon_loss)
        check_choice("sparsity", sparsity, SPARSITIES)
        if not 0.0 < float(rho) < 1.0:
            raise ValueError(f"model.rho={rho!r}: must be in (0, 1)")
        self.sparsity = sparsity
        self.rho = float(rho)
        # start every unit at the target activation, sigmoid(b) = rho: the KL then starts at its minimum instead of
        # pushing every unit down at once into saturation (the conv sae stayed at the mean image that way)
        if sparsity == "kl":
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
