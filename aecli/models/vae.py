"""Variational autoencoder (Kingma & Welling 2013, "Auto-Encoding Variational Bayes").

Encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))), prior p(z) = N(0, I), decoder p(x|z). Training
minimizes the negative ELBO, with the KL weighted by lambda (beta-VAE, Higgins et al. 2017):

    L(x) = E_q[-log p(x|z)] + lambda * KL(q(z|x) || p(z)),     z = mu + exp(logvar / 2) * eps,  eps ~ N(0, I)

the expectation estimated with one reparameterized sample (Sec. 2.4). The KL between two Gaussians in
closed form (App. B):

    KL = 1/2 * sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j)

`iw_samples` = k > 1 trains the importance weighted autoencoder instead (Burda, Grosse & Salakhutdinov 2016,
"Importance Weighted Autoencoders", eq. 8): the loss is minus the k-sample bound

    L_k(x) = log (1/k) sum_{i=1..k} w_i,    w_i = p(x|h_i) p(h_i) / q(h_i|x),    h_i = mu + sigma * eps_i

with the k samples reparameterized, so the gradient goes through them (their eq. 14: a weighted sum of the
per-sample gradients, the weights w_i / sum_j w_j). L_1 is the ELBO, E[L_k] <= E[L_{k+1}] <= log p(x)
(Theorem 1); k = 1 trains the VAE above exactly (its closed-form KL). With lambda != 1 the log prior ratio is
weighted by lambda: log w_i = log p(x|h_i) + lambda * (log p(h_i) - log q(h_i|x)).

Likelihoods (`model.likelihood`):
- bernoulli: -log p(x|z) = sum_i BCE(x_i, sigmoid(l_i)), computed from the logits l (stable form).
- continuous_bernoulli: log p(x|l) = x l - softplus(l) + log C(l), the Bernoulli term plus the log normalizer
  that makes it a density on [0, 1] (Loaiza-Ganem & Cunningham 2019, Eq. 7), written in the logits l:
      C(l) = l / tanh(l/2)                    (= 2 artanh(1 - 2p) / (1 - 2p), p = sigmoid(l))
      E[x] = sigmoid(l) / tanh(l/2) - 1/l     (= p / (2p - 1) + 1 / (2 artanh(1 - 2p)))
  with their Taylor series near l = 0 (log 2 + l^2/12, 1/2 + l/12). Its mean is not sigmoid(l). These forms
  hold for any logit; torch.distributions.ContinuousBernoulli clamps p to [1.2e-7, 1 - 1.2e-7] in float32, which
  freezes log C at 2.77 with zero gradient for |l| > 16 (cb_log_norm's docstring).
- gaussian: N(x; sigmoid(l), sigma^2) with one learned log sigma shared by all pixels.
Every term is in nats per image (sum over pixels and latents, mean over the batch). Validation and evaluation use
the full lambda: a KL warm-up changes the training objective only, so epochs compare under one objective.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from aecli import metrics, schema
from aecli.models.base import IMAGE_SHAPE, MEAN_IMAGE_CLAMP, Autoencoder, bernoulli_nll
CB_SERIES = 0.1  # |l| below which the continuous Bernoulli's closed forms give way to their Taylor series
COLLAPSED_KL = 1.0  # nats per image: a whole KL below this is posterior collapse (the code says < 1.5 bits)


def cb_log_norm(logits: torch.Tensor) -> torch.Tensor:
    """log C(l) of the continuous Bernoulli, elementwise, for any logit l (Loaiza-Ganem & Cunningham 2019, Eq. 7).

    log C(l) = log(l / tanh(l/2)) = log|l| - log(-expm1(-|l|)) + log1p(exp(-|l|))   (tanh(a/2) = (1 - e^-a)/(1 + e^-a))
             = log 2 + l^2/12 - 7 l^4/1440 + O(l^6)                                  for |l| < CB_SERIES.
    Exact to float32 rounding over the whole line; it grows like log|l| and its gradient like 1/l.
    """
    a = logits.abs()
    near = a < CB_SERIES
    safe = torch.where(near, torch.ones_like(a), a)  # both branches are evaluated: keep the unused one finite
    closed = safe.log() - torch.log(-torch.expm1(-safe)) + torch.log1p(torch.exp(-safe))
    l2 = logits * logits
    series = math.log(2.0) + l2 / 12 - 7 * l2 * l2 / 1440
    return torch.where(near, series, closed)


def cb_mean(logits: torch.Tensor) -> torch.Tensor:
    """E[x] of the continuous Bernoulli with logits l, elementwise, for any l:

    E[x] = sigmoid(l) / tanh(l/2) - 1/l = 1/2 + (coth(l/2) - 2/l) / 2
         = 1/2 + l/12 - l^3/720 + O(l^5)                                  for |l| < CB_SERIES.
    """
    near = logits.abs() < CB_SERIES
    safe = torch.where(near, torch.ones_like(logits), logits)
    closed = 0.5 + 0.5 / torch.tanh(safe / 2) - 1 / safe
    series = 0.5 + logits / 12 - logits.pow(3) / 720
    return torch.where(near, series, closed).clamp(0.0, 1.0)


def cb_logits_of_mean(mean: torch.Tensor, iterations: int = 60) -> torch.Tensor:
    """The logits whose continuous-Bernoulli mean is `mean` (in (0, 1)), by bisection: cb_mean is increasing."""
    lo, hi = torch.full_like(mean, -1e4), torch.full_like(mean, 1e4)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        below = cb_mean(mid) < mean
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per example, summed over latent dimensions (Kingma & Welling, App. B)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """z = mu + sigma * eps with eps ~ N(0, I): a sample that gradients flow through (Sec. 2.4)."""
    return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)


@dataclass
class Options(schema.Options):
    likelihood: str = schema.choice("bernoulli", "continuous_bernoulli", "gaussian")  # p(x|z)
    kl_warmup_epochs: int = schema.integer(0, low=0)  # ramp the KL weight linearly from 0 to lambda over N epochs
    iw_samples: int = schema.integer(1, low=1)  # k: train on the k-sample importance weighted bound (1 = the ELBO)


class VAE(Autoencoder):
    name = "vae"
    Options = Options
    default_lambda = 1.0
    elbo = True

    def __init__(self, net, latent_dim, lam=None, image_shape=IMAGE_SHAPE, n_classes=10, **options):
        super().__init__(net, latent_dim, lam, image_shape, n_classes, **options)
        cond_dim = self.n_classes if self.conditional else 0
        self.encoder = net.encoder(self.image_shape, 2 * self.latent_dim, cond_dim=cond_dim)
        self.decoder = net.decoder(self.image_shape, self.latent_dim, cond_dim=cond_dim)
        if self.likelihood == "gaussian":
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
            return -bernoulli_nll(logits, x) + cb_log_norm(logits).flatten(1).sum(1)
        sigma = self.log_sigma.exp()
        sq = ((x - torch.sigmoid(logits)) / sigma).pow(2).flatten(1).sum(1)
        return -0.5 * sq - x[0].numel() * (self.log_sigma + 0.5 * math.log(2 * math.pi))

    def mean_image(self, logits):
        if self.likelihood == "continuous_bernoulli":
            return cb_mean(logits)
        return torch.sigmoid(logits)

    def mean_logits(self, mean_image):
        if self.likelihood == "continuous_bernoulli":
            return cb_logits_of_mean(mean_image.clamp(MEAN_IMAGE_CLAMP, 1 - MEAN_IMAGE_CLAMP))
        return super().mean_logits(mean_image)

    def loss(self, x, y=None):
        beta = self.kl_weight if self.training else self.lam  # validation: the configured objective
        if self.iw_samples > 1:
            return self.iw_loss(x, y, self.iw_samples, beta)
        c = self.condition(y)
        mu, logvar = self.posterior(x, c)
        z = reparameterize(mu, logvar)
        recon = -self.log_likelihood(self.decoder(z, c), x).mean()
        kl = gaussian_kl(mu, logvar).mean()
        return {"loss": recon + beta * kl, "recon": recon, "kl": kl}

    def iw_loss(self, x, y, k: int, beta) -> dict[str, torch.Tensor]:
        """-L_k, the k-sample importance weighted bound (module doc), averaged over the batch, with the gradient
        through the reparameterized samples; `recon` is the mean of -log p(x|h_i) over the samples, `kl` the
        closed-form KL (for the logs and the collapse check)."""
        log_px, log_ratio, kl = self.log_weight_terms(x, y, k)
        bound = metrics.iw_bound(log_px + beta * log_ratio).mean()
        return {"loss": -bound, "recon": -log_px.mean(), "kl": kl.mean()}

    def sample_posterior(self, x, y=None, generator=None):
        mu, logvar = self.posterior(x, self.condition(y))
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        return mu + torch.exp(0.5 * logvar) * eps

    def collapse_symptom(self, val_terms):
        kl = val_terms.get("kl")
        if kl is not None and kl < COLLAPSED_KL:
            return ("posterior_collapse", f"posterior collapse: KL(q(z|x) || p(z)) is {kl:.3g} nats per image, the "
                    f"codes tell the decoder almost nothing; try model.kl_warmup_epochs=5, a smaller lambda, or a "
                    f"longer run")
        return None

    def on_epoch_start(self, epoch: int) -> None:
        ramp = 1.0 if self.kl_warmup_epochs <= 0 else min(1.0, epoch / self.kl_warmup_epochs)
        self.kl_weight.fill_(self.lam * ramp)

    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor | None = None, k: int = 1) -> torch.Tensor:
        """log p(x|z_k) + log p(z_k) - log q(z_k|x) for k samples: [k, B] (for the ELBO and IWAE bounds).

        The k samples of the B images go through the decoder as one batch of k * B codes (one large matrix product
        per layer instead of k small ones: the IW bound with k = 5000 is dominated by these decoder passes)."""
        log_px, log_ratio, _ = self.log_weight_terms(x, y, k)
        return log_px + log_ratio

    def log_weight_terms(self, x, y, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For k reparameterized samples h = mu + sigma * eps of each of the B images: log p(x|h) and
        log p(h) - log q(h|x), [k, B] each, and the closed-form KL [B]. Differentiable (training uses them)."""
        c = self.condition(y)
        mu, logvar = self.posterior(x, c)
        eps = torch.randn((k, *mu.shape), device=mu.device, dtype=mu.dtype)
        z = mu + torch.exp(0.5 * logvar) * eps  # [k, B, latent_dim]
        log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(-1)
        log_qz = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).sum(-1)
        c_k = None if c is None else c.expand(k, *c.shape).flatten(0, 1)
        logits = self.decoder(z.flatten(0, 1), c_k)
        log_px = self.log_likelihood(logits, x.expand(k, *x.shape).flatten(0, 1)).view(k, -1)
        return log_px, log_pz - log_qz, gaussian_kl(mu, logvar)
