"""The VAE's math: the closed-form KL against Monte Carlo, the stable Bernoulli term, the ELBO pieces."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aecli.models.base import bernoulli_nll
from aecli.models.vae import VAE, gaussian_kl

NET = {"name": "mlp", "hidden": [32], "activation": "relu"}


def test_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5) * 0.5
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    z = q.sample((50_000,))
    mc = (q.log_prob(z) - p.log_prob(z)).sum(-1).mean(0)
    closed = gaussian_kl(mu, logvar)
    torch.testing.assert_close(closed, mc, rtol=0.04, atol=0.04)
    torch.testing.assert_close(closed, torch.distributions.kl_divergence(q, p).sum(-1))


def test_bernoulli_nll_is_the_summed_cross_entropy_and_stable():
    logits = torch.tensor([[[[-200.0, 0.0, 3.0, 200.0]]]])
    x = torch.tensor([[[[1.0, 0.5, 0.0, 0.0]]]])
    nll = bernoulli_nll(logits, x)
    assert torch.isfinite(nll).all()
    expected = 200.0 + math.log(2) + (3.0 + math.log1p(math.exp(-3.0))) + 200.0
    assert abs(nll.item() - expected) < 1e-4
    probs = torch.sigmoid(torch.tensor([[0.3, -1.2]]))
    assert abs(bernoulli_nll(torch.tensor([[0.3, -1.2]]), torch.tensor([[1.0, 0.0]])).item()
               - F.binary_cross_entropy(probs, torch.tensor([[1.0, 0.0]]), reduction="sum").item()) < 1e-5


def test_loss_is_recon_plus_lambda_kl_per_image():
    torch.manual_seed(0)
    model = VAE(NET, latent_dim=4, lam=3.0)
    x = torch.rand(8, 1, 28, 28)
    torch.manual_seed(1)
    terms = model.loss(x)
    assert set(terms) == {"loss", "recon", "kl"}
    torch.testing.assert_close(terms["loss"], terms["recon"] + 3.0 * terms["kl"])
    # recon is in nats per image: 784 pixels of uniform data cost several hundred nats for an untrained decoder
    assert 300 < terms["recon"].item() < 1500
    # and it is what one reparameterized sample gives
    torch.manual_seed(1)
    mu, logvar = model.posterior(x)
    z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
    torch.testing.assert_close(terms["recon"], bernoulli_nll(model.decoder(z), x).mean())


def test_kl_warmup_ramps_lambda():
    model = VAE(NET, latent_dim=2, lam=2.0, kl_warmup_epochs=4)
    weights = []
    for epoch in range(1, 7):
        model.on_epoch_start(epoch)
        weights.append(model.kl_weight.item())
    assert weights == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def test_elbo_terms_average_to_minus_the_loss_at_lambda_one():
    torch.manual_seed(0)
    model = VAE(NET, latent_dim=3, lam=1.0)
    x = torch.rand(4, 1, 28, 28).repeat(1000, 1, 1, 1)
    with torch.no_grad():
        elbo = model.elbo_terms(x, k=2).mean()
        loss = model.loss(x)["loss"]
    assert abs(elbo.item() + loss.item()) < 0.01 * abs(loss.item())


def test_likelihoods_give_finite_terms_and_valid_means():
    x = torch.rand(4, 1, 28, 28)
    for likelihood in ("bernoulli", "continuous_bernoulli", "gaussian"):
        model = VAE(NET, latent_dim=2, lam=1.0, likelihood=likelihood)
        terms = model.loss(x)
        assert all(torch.isfinite(v) for v in terms.values())
        rec = model.reconstruct(x)
        assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
