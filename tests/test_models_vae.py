"""The VAE's math: the closed-form KL against Monte Carlo, the stable Bernoulli term, the ELBO pieces."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from aecli import metrics
from aecli.models.base import bernoulli_nll
from aecli.models.vae import VAE, cb_log_norm, cb_mean, gaussian_kl
from aecli.nets.mlp import MLP
from conftest import as_net

NET = as_net({"name": "mlp", "hidden": [32], "activation": "relu"})


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


# -- continuous Bernoulli: the stable forms against float64 -----------------------------------------------------
def reference_log_norm(l: torch.Tensor) -> torch.Tensor:
    """log C(l) = log(l / tanh(l/2)) in float64 (exact there for |l| > 1e-6; log 2 at 0)."""
    return torch.where(l.abs() < 1e-6, torch.full_like(l, math.log(2)), torch.log(l / torch.tanh(l / 2)))


def reference_mean(l: torch.Tensor) -> torch.Tensor:
    """E[x] = sigmoid(l) / tanh(l/2) - 1/l in float64 (its series 1/2 + l/12 within 1e-3 of 0)."""
    return torch.where(l.abs() < 1e-3, 0.5 + l / 12, torch.sigmoid(l) / torch.tanh(l / 2) - 1 / l)


def test_continuous_bernoulli_forms_match_float64_over_all_logits():
    l64 = torch.cat([torch.linspace(-100, 100, 20001, dtype=torch.float64),
                     torch.tensor([-1e-5, 1e-5, 0.0999, 0.1, 0.1001], dtype=torch.float64)])
    l32 = l64.float()
    torch.testing.assert_close(cb_log_norm(l32).double(), reference_log_norm(l32.double()), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cb_mean(l32).double(), reference_mean(l32.double()), atol=2e-6, rtol=0)
    # torch's float32 distribution freezes log C at 2.769 beyond |l| ~ 16; the stable form keeps growing like log|l|
    l = torch.tensor([20.0, 40.0, -60.0])
    torch_log_norm = torch.distributions.ContinuousBernoulli(logits=l).log_prob(torch.full((3,), 0.5)) \
        - (0.5 * l - F.softplus(l))
    assert torch.allclose(torch_log_norm, torch.full((3,), 2.769), atol=1e-3)
    torch.testing.assert_close(cb_log_norm(l), torch.log(l.abs()), atol=1e-6, rtol=0)
    # gradients are finite everywhere, 1/l in the tails
    lg = torch.tensor([-80.0, -16.0, -1e-3, 0.0, 1e-3, 0.05, 16.0, 80.0], requires_grad=True)
    (grad,) = torch.autograd.grad(cb_log_norm(lg).sum(), lg)
    assert torch.isfinite(grad).all() and grad[-1].item() == pytest.approx(1 / 80, rel=1e-4)


def test_continuous_bernoulli_likelihood_is_the_density():
    """log p(x|l) = x l - softplus(l) + log C(l) integrates to 1 over [0, 1], for small and large logits."""
    model = VAE(NET, latent_dim=2, lam=1.0, likelihood="continuous_bernoulli")
    x = torch.linspace(0, 1, 200001, dtype=torch.float64)
    for logit in (-50.0, -3.0, 0.0, 0.4, 25.0):
        l = torch.full((1, len(x)), logit, dtype=torch.float64)
        density = torch.exp(-F.binary_cross_entropy_with_logits(l, x[None], reduction="none")
                            + cb_log_norm(l))
        assert torch.trapezoid(density[0], x).item() == pytest.approx(1.0, abs=2e-3), logit
    logits = torch.randn(3, 1, 28, 28) * 30
    xs = torch.rand(3, 1, 28, 28)
    want = (-F.binary_cross_entropy_with_logits(logits, xs, reduction="none") + reference_log_norm(logits.double()).float())
    torch.testing.assert_close(model.log_likelihood(logits, xs), want.flatten(1).sum(1), atol=1e-2, rtol=1e-5)


def test_the_decoder_starts_at_the_mean_for_every_likelihood():
    """mean_logits inverts each likelihood's mean: the continuous Bernoulli's too (its mean is not sigmoid(l))."""
    mean = torch.tensor([0.001, 0.02, 0.13, 0.5, 0.87, 0.999]).view(1, 1, 6)
    for likelihood in ("bernoulli", "continuous_bernoulli", "gaussian"):
        model = VAE(NET, latent_dim=2, lam=1.0, likelihood=likelihood)
        torch.testing.assert_close(model.mean_image(model.mean_logits(mean)), mean, atol=1e-5, rtol=1e-4)


def test_validation_uses_the_full_kl_weight_during_warm_up():
    """A KL warm-up ramps the training objective only; validation scores every epoch under lambda (before, val_loss
    used the ramped weight and best.pt went to an early epoch that was worse on the configured objective)."""
    torch.manual_seed(0)
    model = VAE(NET, latent_dim=3, lam=4.0, kl_warmup_epochs=4)
    model.on_epoch_start(1)
    x = torch.rand(16, 1, 28, 28)
    torch.manual_seed(1)
    train_terms = model.train().loss(x)
    torch.manual_seed(1)
    val_terms = model.eval().loss(x)
    torch.testing.assert_close(train_terms["loss"], train_terms["recon"] + 1.0 * train_terms["kl"])
    torch.testing.assert_close(val_terms["loss"], val_terms["recon"] + 4.0 * val_terms["kl"])


def test_posterior_samples_and_the_collapse_symptom():
    torch.manual_seed(0)
    model = VAE(NET, latent_dim=3, lam=1.0)
    x = torch.rand(4000, 1, 28, 28)
    with torch.no_grad():
        mu, logvar = model.posterior(x)
        z = model.sample_posterior(x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(((z - mu) / (0.5 * logvar).exp()).std(), torch.tensor(1.0), atol=0.02, rtol=0)
    assert model.collapse_symptom({"kl": 0.4})[0] == "posterior_collapse"
    assert model.collapse_symptom({"kl": 25.0}) is None


def test_batched_elbo_terms_equal_the_per_sample_terms():
    """elbo_terms decodes all k samples in one batch: each column is the log-weight of its own sample."""
    torch.manual_seed(0)
    model = VAE(MLP(hidden=[16], activation="tanh"), latent_dim=3).eval()
    x = (torch.rand(5, 1, 28, 28) < 0.3).float()
    torch.manual_seed(1)
    log_w = model.elbo_terms(x, k=4)
    torch.manual_seed(1)
    eps = torch.randn(4, 5, 3)
    mu, logvar = model.posterior(x)
    for i in range(4):
        z = mu + torch.exp(0.5 * logvar) * eps[i]
        log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
        log_qz = -0.5 * (eps[i].pow(2) + logvar + math.log(2 * math.pi)).sum(1)
        assert torch.allclose(log_w[i], model.log_likelihood(model.decoder(z), x) + log_pz - log_qz, atol=1e-4)


# -- the importance weighted autoencoder (model.iw_samples = k) -----------------------------------------------
def iwae(k: int, lam: float = 1.0) -> VAE:
    torch.manual_seed(0)
    return VAE(MLP(hidden=[16], activation="tanh"), latent_dim=3, lam=lam, iw_samples=k).train()


def test_the_k_sample_bound_is_an_independent_computation_of_burdas_eq_8():
    """-loss = mean_b log (1/k) sum_i p(x|h_i) p(h_i) / q(h_i|x), each density from torch.distributions, float64."""
    model, k = iwae(5), 5
    x = (torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    torch.manual_seed(7)
    loss = model.loss(x)["loss"]
    torch.manual_seed(7)
    eps = torch.randn(k, 4, 3)
    mu, logvar = (t.double() for t in model.posterior(x))
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64))
    bounds = []
    for b in range(4):
        log_w = []
        for i in range(k):
            h = mu[b] + torch.exp(0.5 * logvar[b]) * eps[i, b].double()
            logits = model.decoder(h.float()[None]).double()[0].flatten()
            log_px = torch.distributions.Bernoulli(logits=logits).log_prob(x[b].flatten().double()).sum()
            log_q = torch.distributions.Normal(q.loc[b], q.scale[b]).log_prob(h).sum()
            log_w.append(log_px + p.log_prob(h).sum() - log_q)
        log_w = torch.stack(log_w)
        bounds.append(math.log(torch.exp(log_w - log_w.max()).mean().item()) + log_w.max().item())
    assert -loss.item() == pytest.approx(sum(bounds) / 4, abs=1e-3)


def test_the_k_sample_bound_is_above_the_elbo_in_expectation_and_k1_is_the_elbo_exactly():
    x = (torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(3)) < 0.3).float()
    vae, k1, k5 = iwae(1), iwae(1), iwae(5)
    torch.manual_seed(11)
    plain = vae.loss(x)
    torch.manual_seed(11)
    one = k1.loss(x)
    assert all(torch.equal(plain[key], one[key]) for key in plain)  # k = 1 trains the VAE exactly
    k5.load_state_dict(vae.state_dict())
    with torch.no_grad():
        torch.manual_seed(12)
        elbo = -torch.stack([vae.loss(x)["loss"] for _ in range(200)]).mean()
        bound = -torch.stack([k5.loss(x)["loss"] for _ in range(200)]).mean()
    assert bound > elbo + 0.5  # an untrained model: q is far from the posterior, the bound much tighter
    log_w = vae.elbo_terms(x, k=1)
    assert torch.equal(metrics.iw_bound(log_w), log_w[0])  # L_1 is the one sample's log-weight


def test_the_iwae_gradient_goes_through_the_reparameterized_samples():
    """d(-L_k)/d theta = -sum_i w~_i d log w_i / d theta (Burda et al. eq. 14), w~ the normalized weights."""
    model = iwae(4)
    x = (torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(4)) < 0.3).float()
    torch.manual_seed(5)
    model.loss(x)["loss"].backward()
    got = model.encoder.out.weight.grad.clone()
    model.zero_grad()
    torch.manual_seed(5)
    log_w = model.elbo_terms(x, k=4)  # the same draws
    weights = torch.softmax(log_w.detach(), dim=0)
    (-(weights * log_w).sum(0).mean()).backward()
    assert got.abs().sum() > 0 and torch.allclose(got, model.encoder.out.weight.grad, atol=1e-5)
