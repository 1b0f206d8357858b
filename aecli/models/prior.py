"""Code priors: a diagonal Gaussian mixture, fitted by EM to the codes of models without a native prior.

ae, cae, dae, sae and pca have no p(z) of their own, so after every epoch the trainer hands them training
images (`fit_prior`), their codes z are fitted with a K-component Gaussian mixture

    p(z) = sum_k pi_k N(z; mu_k, diag(sigma_k^2))

by expectation-maximization (Dempster, Laird & Rubin 1977; Bishop, PRML Sec. 9.2.2), and `aecli sample`
decodes draws from it. The parameters are buffers, so checkpoints carry them. The AAE uses the same class
with fixed parameters as its target prior (N(0, I), or the ring of 10 Gaussians of Makhzani et al. 2015).
"""

from __future__ import annotations

import math

import torch
from torch import nn

COMPONENTS = 10  # mixture components for fitted code priors
EM_ITERATIONS = 30
FIT_SEED = 0  # EM's initialization is seeded: the same codes give the same prior
ENCODE_CHUNK = 1000  # images per forward pass when encoding the fitting set


class GaussianMixture(nn.Module):
    """K diagonal Gaussians in `dim` dimensions; starts as K copies of N(0, I)."""

    def __init__(self, k: int, dim: int):
        super().__init__()
        self.register_buffer("log_pi", torch.full((k,), -math.log(k)))
        self.register_buffer("mu", torch.zeros(k, dim))
        self.register_buffer("var", torch.ones(k, dim))

    @classmethod
    def ring(cls, k: int, dim: int, radius: float = 4.0, std: float = 0.5) -> GaussianMixture:
        """k Gaussians of standard deviation `std` with means evenly spaced on a circle of `radius` in the
        first two code dimensions (on a line when dim = 1): the mixture prior of Makhzani et al. 2015, Fig. 4."""
        gm = cls(k, dim)
        angle = 2 * math.pi * torch.arange(k) / k
        if dim == 1:
            gm.mu[:, 0] = torch.linspace(-radius, radius, k)
        else:
            gm.mu[:, 0], gm.mu[:, 1] = radius * angle.cos(), radius * angle.sin()
        gm.var.fill_(std ** 2)
        return gm

    def component_log_prob(self, z: torch.Tensor, log_pi=None, mu=None, var=None) -> torch.Tensor:
        """log pi_k + log N(z; mu_k, diag var_k): [N, K]."""
        log_pi = self.log_pi if log_pi is None else log_pi
        mu = self.mu if mu is None else mu
        var = self.var if var is None else var
        # sum_d (z_d - mu_kd)^2 / var_kd, expanded into matrix products (no [N, K, dim] tensor)
        maha = z.pow(2) @ (1 / var).T - 2 * z @ (mu / var).T + (mu.pow(2) / var).sum(1)
        return log_pi - 0.5 * (maha + var.log().sum(1) + z.shape[1] * math.log(2 * math.pi))

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) per row: [N]."""
        return torch.logsumexp(self.component_log_prob(z), dim=1)

    @torch.no_grad()
    def fit(self, z: torch.Tensor, iterations: int = EM_ITERATIONS, seed: int = FIT_SEED) -> None:
        """EM from means at k distinct random codes, variances at the codes' variance (seeded)."""
        z = z.detach().double()
        n, k = z.shape[0], self.mu.shape[0]
        g = torch.Generator(device=z.device).manual_seed(seed)
        pick = (torch.randperm(n, generator=g, device=z.device)[:k] if n >= k
                else torch.randint(n, (k,), generator=g, device=z.device))
        floor = 1e-4 * z.var(0, unbiased=False).mean().clamp_min(1e-8)  # keeps a component from collapsing
        log_pi = torch.full((k,), -math.log(k), dtype=z.dtype, device=z.device)
        mu = z[pick].clone()
        var = z.var(0, unbiased=False).clamp_min(floor).expand(k, -1).clone()
        for _ in range(iterations):
            r = torch.softmax(self.component_log_prob(z, log_pi, mu, var), dim=1)  # E step: responsibilities
            nk = r.sum(0) + 1e-10  # M step
            log_pi = (nk / n).log()
            mu = (r.T @ z) / nk[:, None]
            var = ((r.T @ z.pow(2)) / nk[:, None] - mu.pow(2)).clamp_min(floor)
        self.log_pi.copy_(log_pi)
        self.mu.copy_(mu)
        self.var.copy_(var)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        k = torch.multinomial(self.log_pi.exp(), n, replacement=True, generator=generator)
        eps = torch.randn(n, self.mu.shape[1], device=self.mu.device, generator=generator)
        return self.mu[k] + self.var[k].sqrt() * eps


class FittedPrior:
    """Mixin for models without a native prior (it declares code_prior = "fitted"): `fit_prior` fits a Gaussian
    mixture to the training codes (the trainer calls it before an epoch's grids and checkpoints) and `sample_prior`
    draws from it. Listed first among the bases (`class AE(FittedPrior, DeterministicAE)`), it adds the mixture
    once the model is built: a buffer, so checkpoints carry it."""

    code_prior = "fitted"
    mixture: GaussianMixture

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixture = GaussianMixture(COMPONENTS, self.latent_dim)

    @torch.no_grad()
    def fit_prior(self, x: torch.Tensor, y: torch.Tensor | None = None) -> None:
        z = torch.cat([self.encode(x[i:i + ENCODE_CHUNK], None if y is None else y[i:i + ENCODE_CHUNK])
                       for i in range(0, len(x), ENCODE_CHUNK)])
        self.mixture.fit(z.float())

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mixture.sample(n, generator)
