"""aecli.models.aae: its three phases and optimizers, and the prior's scale and the dropout of the paper's MNIST
likelihood setup."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aecli.errors import AecliError
from aecli.models.aae import AAE
from aecli.nets.mlp import MLP
from conftest import as_net

NET = as_net({"name": "mlp", "hidden": [12, 8], "activation": "relu"})


def test_the_gaussian_prior_has_the_configured_standard_deviation():
    model = AAE(MLP(hidden=[32], activation="relu"), latent_dim=8, prior_std=5.0)
    z = model.sample_prior(20000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (20000, 8)
    assert z.std(0).tolist() == pytest.approx([5.0] * 8, rel=0.03) and z.mean(0).abs().max() < 0.15
    d_real = model.mixture.sample(10).std()  # the discriminator's "real" codes come from the same prior
    assert d_real > 2
    unit = AAE(MLP(hidden=[32], activation="relu"), latent_dim=8).sample_prior(20000, generator=torch.Generator().manual_seed(0))
    assert unit.std(0).tolist() == pytest.approx([1.0] * 8, rel=0.03)  # the default, as before


def test_dropout_in_the_encoder_and_decoder_only_while_training():
    model = AAE(MLP(hidden=[64, 32], activation="relu"), latent_dim=4, dropout=0.5)
    drops = [m for m in [*model.encoder.modules(), *model.decoder.modules()] if isinstance(m, nn.Dropout)]
    assert len(drops) == 4 and all(m.p == 0.5 for m in drops)
    assert not any(isinstance(m, nn.Dropout) for m in model.discriminator.modules())
    x = torch.rand(16, 1, 28, 28)
    model.train()
    torch.manual_seed(0)
    a = model.encode(x)
    torch.manual_seed(1)
    assert not torch.equal(a, model.encode(x))  # a fresh mask every pass
    model.eval()
    assert torch.equal(model.encode(x), model.encode(x))
    with pytest.raises(AecliError, match="model.prior_std=0 is not allowed"):
        AAE(MLP(hidden=[8], activation="relu"), latent_dim=2, prior_std=0)
    with pytest.raises(AecliError, match="model.prior_std=5 is for prior=gaussian"):
        AAE(MLP(hidden=[8], activation="relu"), latent_dim=2, prior="mixture", prior_std=5.0)


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _changed(model, before):
    return {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(p, before[n])}


def test_aae_phases_change_only_their_parameters():
    torch.manual_seed(0)
    model = AAE(NET, 4, lam=1.0, prior="mixture", disc_hidden=[16])
    opts = model.configure_optimizers(1e-2)
    x = torch.rand(16, 1, 28, 28)
    before = _snapshot(model)
    model.reconstruction_phase(x, opts)
    assert _changed(model, before) == {"encoder", "decoder"}
    before = _snapshot(model)
    model.discriminator_phase(x, opts)
    assert _changed(model, before) == {"discriminator"}
    before = _snapshot(model)
    model.generator_phase(x, opts)
    assert _changed(model, before) == {"encoder"}
    terms = model.train_step(x, None, opts)
    assert {"loss", "recon", "gen", "disc_loss", "disc_acc"} <= set(terms)
    assert 0 <= terms["disc_acc"].item() <= 1
    val = model.loss(x)
    assert val["loss"].item() == pytest.approx(val["recon"].item() + val["gen"].item(), rel=1e-6)


def test_aae_optimizers_decay_the_encoder_once_and_slow_the_regularization():
    model = AAE(NET, 4, lam=1.0, reg_lr=0.1)
    opts = model.configure_optimizers(2e-3, "adamw", weight_decay=0.01)
    encoder = {id(p) for p in model.encoder.parameters()}
    decays = {name: [g["weight_decay"] for g in o.param_groups if encoder & {id(p) for p in g["params"]}]
              for name, o in opts.items()}
    assert decays == {"ae": [0.01], "disc": [], "gen": [0.0]}  # the encoder's decay once per batch
    lrs = {name: o.param_groups[0]["lr"] for name, o in opts.items()}
    assert lrs == {"ae": 2e-3, "disc": pytest.approx(2e-4), "gen": pytest.approx(2e-4)}
    betas = {name: o.param_groups[0]["betas"] for name, o in opts.items()}
    assert betas == {"ae": (0.9, 0.999), "disc": (0.5, 0.999), "gen": (0.5, 0.999)}
