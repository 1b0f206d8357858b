"""aecli/models/prior.py: the fitted code prior's EM, the mixture carried by checkpoints, the AAE's ring of ten."""

from __future__ import annotations

import pytest
import torch

from aecli.models.ae import AE
from aecli.models.prior import GaussianMixture
from conftest import as_net

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest

MLP = as_net({"name": "mlp", "hidden": [12, 8], "activation": "relu"})


def test_gaussian_mixture_em_recovers_clusters():
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(600, 2, generator=g) * 0.3 + torch.tensor([3.0, 0.0]),
                   torch.randn(200, 2, generator=g) * 0.5 - torch.tensor([0.0, 3.0])])
    gm = GaussianMixture(2, 2)
    gm.fit(z)
    order = gm.mu[:, 0].argsort(descending=True)
    torch.testing.assert_close(gm.mu[order], torch.tensor([[3.0, 0.0], [0.0, -3.0]]), atol=0.08, rtol=0)
    torch.testing.assert_close(gm.log_pi[order].exp(), torch.tensor([0.75, 0.25]), atol=0.01, rtol=0)
    torch.testing.assert_close(gm.var[order].sqrt(), torch.tensor([[0.3, 0.3], [0.5, 0.5]]), atol=0.05, rtol=0)
    # the fitted prior travels in the state dict, so a checkpoint samples from it
    model, restored = AE(MLP, 2), AE(MLP, 2)
    model.mixture.fit(z)  # ten components on two clusters: still a density of the codes
    assert model.mixture.log_prob(z).mean() > gm.log_prob(z).mean() - 0.05
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.mixture.mu, model.mixture.mu) and torch.equal(restored.mixture.var, model.mixture.var)


def test_aae_mixture_prior_is_a_ring_of_ten():
    prior = GaussianMixture.ring(10, 3)
    z = prior.sample(20000, torch.Generator().manual_seed(0))
    radius = z[:, :2].norm(dim=1)
    assert radius.mean().item() == pytest.approx(4.0, abs=0.1)
    nearest = (z[:, None, :] - prior.mu[None]).norm(dim=2).argmin(1)
    assert torch.bincount(nearest, minlength=10).min().item() > 1800  # all ten used, about equally
