"""aecli/models/ae.py: tied weights, the L2 and layer-matching terms."""

from __future__ import annotations

import pytest
import torch

from aecli.errors import AecliError
from aecli.models.ae import AE
from conftest import as_net

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest

MLP = as_net({"name": "mlp", "hidden": [12, 8], "activation": "relu"})
CONV = as_net({"name": "conv", "channels": [4, 6], "activation": "relu"})


def test_tied_weights_share_storage():
    tied, untied = AE(MLP, 4, tied=True), AE(MLP, 4)
    enc, dec = tied.encoder.linears, tied.decoder.linears
    for d, e in zip(dec, reversed(enc)):
        assert d.weight is e.weight and d.weight.data_ptr() == e.weight.data_ptr()
    n_weights = sum(lin.weight.numel() for lin in untied.decoder.linears)
    assert sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters()) == n_weights
    # a training step moves the one tensor: the decoder still applies exactly the encoder's W^T
    opt = tied.configure_optimizers(1e-2)
    tied.train_step(torch.rand(8, 1, 28, 28), None, opt)
    h = torch.randn(3, 12)
    torch.testing.assert_close(dec[-1](h), h @ enc[0].weight + dec[-1].bias)
    with pytest.raises(AecliError, match="net=mlp"):
        AE(CONV, 4, tied=True)


def test_ae_l2_and_layer_match_terms():
    torch.manual_seed(0)
    model = AE(MLP, 4, lam=0.01, layer_match=0.5).eval()
    x = torch.rand(5, 1, 28, 28)
    terms = model.loss(x)
    weights = [m.weight for m in [*model.encoder.linears, *model.decoder.linears]]
    l2 = sum(w.pow(2).sum() for w in weights)
    assert terms["l2"].item() == pytest.approx(l2.item(), rel=1e-6)
    e1, e2, e3 = model.encoder.linears
    d1, d2, d3 = model.decoder.linears
    h1 = torch.relu(e1(x.flatten(1)))
    h2 = torch.relu(e2(h1))
    g2 = torch.relu(d1(e3(h2)))  # the decoder's first activation mirrors the encoder's last
    g1 = torch.relu(d2(g2))
    match = ((h2 - g2) ** 2).mean() + ((h1 - g1) ** 2).mean()
    assert terms["layer_match"].item() == pytest.approx(match.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["recon"].item() + 0.01 * l2.item() + 0.5 * match.item(),
                                                 rel=1e-5)
    conv = AE(CONV, 4, layer_match=1.0)  # conv mirrors too: 4x14x14 <-> 4x14x14, 6x7x7 <-> 6*49
    assert conv.loss(x)["layer_match"].item() > 0
