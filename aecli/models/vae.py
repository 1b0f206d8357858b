"""Variational autoencoder (Kingma & Welling 2013, "Auto-Encoding Variational Bayes").

Encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))), prior p(z) = N(0, I), decoder p(x|z). Training
minimizes the negative ELBO, with the KL weighted by lambda (beta-VAE, Higgins et al. 2017):

    L(x) = E_q[-log p(x|z)] + lambda * KL(q(z|x) || p(z)),     z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)

the expectation estimated with one reparameterized sample (Sec. 2.4). The KL between two Gaussians in
closed form (App. B):

    KL = 1/2 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)

Likelihoods (`model.likelihood`):
- bernoulli: -log p(x|z) = sum_i BCE(x_i, sigmoid(l_i)), computed from the logits l (stable form).
- continuous_bernoulli: the Bernoulli term minus the log normalizer log C(lambda_i) that makes it a
  density on [0, 1] (Loaiza-Ganem & Cunningham 2019); its mean is not sigmoid(l).
- gaussian: N(x; sigmoid(l), sigma^2) with one learned log sigma shared by all pixels.
Every term is in nats per image (sum over pixels and latents, mean over the batch).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from aecli.models.base import Autoencoder, bernoulli_nll, check_choice
from aecli.nets import build_decoder, build_encoder

LIKELIHOODS = ("bernoulli", "continuous_bernoulli", "gaussian")


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, summed over latent dimensions (Kingma & Welling, App. B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample that gradients flow through (Sec. 2.4)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


class VAE(Autoencoder):
    name = "vae"
    has_prior = True

    def __init__(self, net, latent_dim: int, lam: float = 1.0, likelihood: str = "bernoulli",
                 kl_warmup_epochs: int = 0, cond_dim: int = 0):
        super().__init__(net, latent_dim, lam)
        check_choice("likelihood", likelihood, LIKELIHOODS)
        self.likelihood = likelihood
        self.kl_warmup_epochs = int(kl_warmup_epochs)
        self.encoder = build_encoder(net, 2 * self.latent_dim, cond_dim=cond_dim)
        self.decoder = build_decoder(net, self.latent_dim, cond_dim=cond_dim)
        if likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.zeros(()))
        # the KL weight in force: lambda, ramped up linearly over the warm-up epochs
        self.register_buffer("kl_weight", torch.tensor(self.lam), persistent=False)

    # q(z|x) and p(x|z); `c` is the condition (None for the plain VAE)
    def posterior(self, x: torch.Tensor, c: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x, c).chunk(2, dim=1)
        return mu, logvar

    def encode(self, x, y=None):
        return self.posterior(x, self.condition(y))[0]

    def decode(self, z, y=None):
        return self.decoder(z, self.condition(y))

    def condition(self, y: torch.Tensor | None) -> torch.Tensor | None:
        """The vector the encoder and decoder are conditioned on: nothing for the plain VAE."""
        return None

    def log_likelihood(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per image, summed over pixels (nats)."""
        if self.likelihood == "bernoulli":
            return -bernoulli_nll(logits, x)
        if self.likelihood == "continuous_bernoulli":
            dist = torch.distributions.ContinuousBernoulli(logits=logits)
        else:
            dist = torch.distributions.Normal(torch.sigmoid(logits), self.log_sigma.exp())
        return dist.log_prob(x).flatten(1).sum(1)

    def mean_image(self, logits):
        if self.likelihood == "continuous_bernoulli":
            return torch.distributions.ContinuousBernoulli(logits=logits).mean
        return torch.sigmoid(logits)

    def loss(self, x, y=None):
        c = self.condition(y)
        mu, logvar = self.posterior(x, c)
        z = reparameterize(mu, logvar)
        recon = -self.log_likelihood(self.decoder(z, c), x).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return {"loss": recon + self.kl_weight * kl, "recon": recon, "kl": kl}

    def on_epoch_start(self, epoch: int) -> None:
        ramp = 1.0 if self.kl_warmup_epochs <= 0 else min(1.0, epoch / self.kl_warmup_epochs)
        self.kl_weight.fill_(self.lam * ramp)

    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k samples: [k, B] (for the ELBO and IWAE bounds)."""
        c = self.condition(y)
        mu, logvar = self.posterior(x, c)
        std = torch.exp(0.5 * logvar)
        out = []
        for _ in range(k):
            eps = torch.randn_like(mu)
            z = mu + std * eps
            log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
            log_qz = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).sum(1)
            out.append(self.log_likelihood(self.decoder(z, c), x) + log_pz - log_qz)
        return torch.stack(out)
