"""aecli.models.aae: the prior's scale and the dropout the paper's MNIST likelihood setup needs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aecli.errors import AecliError
from aecli.models.aae import AAE
from aecli.nets.mlp import MLP


def test_the_gaussian_prior_has_the_configured_standard_deviation():
    model = AAE(MLP([32], "relu"), latent_dim=8, prior_std=5.0)
    z = model.sample_prior(20000, generator=torch.Generator().manual_seed(0))
    assert z.shape == (20000, 8)
    assert z.std(0).tolist() == pytest.approx([5.0] * 8, rel=0.03) and z.mean(0).abs().max() < 0.15
    d_real = model.mixture.sample(10).std()  # the discriminator's "real" codes come from the same prior
    assert d_real > 2
    unit = AAE(MLP([32], "relu"), latent_dim=8).sample_prior(20000, generator=torch.Generator().manual_seed(0))
    assert unit.std(0).tolist() == pytest.approx([1.0] * 8, rel=0.03)  # the default, as before


def test_dropout_in_the_encoder_and_decoder_only_while_training():
    model = AAE(MLP([64, 32], "relu"), latent_dim=4, dropout=0.5)
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
        AAE(MLP([8], "relu"), latent_dim=2, prior_std=0)
    with pytest.raises(AecliError, match="model.prior_std=5 is for prior=gaussian"):
        AAE(MLP([8], "relu"), latent_dim=2, prior="mixture", prior_std=5.0)
