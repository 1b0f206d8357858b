"""aecli/models/sae.py: the sparse autoencoder's penalty against its formula."""

from __future__ import annotations

import math

import pytest
import torch

from aecli.models.sae import SAE
from conftest import as_net

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest

MLP = as_net({"name": "mlp", "hidden": [12, 8], "activation": "relu"})


def test_sae_kl_against_its_formula():
    model = SAE(MLP, 2, lam=3.0, rho=0.05)
    h = torch.tensor([[0.1, 0.5], [0.3, 0.7]])  # rho_hat = [0.2, 0.6]
    want = sum(0.05 * math.log(0.05 / r) + 0.95 * math.log(0.95 / (1 - r)) for r in (0.2, 0.6))
    assert model.sparsity_penalty(h).item() == pytest.approx(want, rel=1e-6)
    assert model.rho == 0.05
    l1 = SAE(MLP, 2, lam=3.0, sparsity="l1")
    assert l1.sparsity_penalty(h).item() == pytest.approx((0.6 + 1.0) / 2, rel=1e-6)
    # the loss adds lambda times that penalty of the sigmoid code's batch means
    x = torch.rand(16, 1, 28, 28)
    terms = model.loss(x)
    code = model.encode(x)
    assert 0 <= code.min() and code.max() <= 1
    rho_hat = code.mean(0)
    kl = (0.05 * torch.log(0.05 / rho_hat) + 0.95 * torch.log(0.95 / (1 - rho_hat))).sum()
    assert terms["sparsity"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["recon"].item() + 3.0 * kl.item(), rel=1e-5)
