"""aecli/models/dae.py: the corruption's statistics, and the clean input scored."""

from __future__ import annotations

import math

import pytest
import torch

from aecli.models.dae import DAE
from conftest import as_net

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest

MLP = as_net({"name": "mlp", "hidden": [12, 8], "activation": "relu"})


def test_dae_corruption_statistics():
    torch.manual_seed(0)
    x = 0.2 + 0.8 * torch.rand(200, 1, 28, 28)  # no pixel is 0 or 1 before corruption
    n = x.numel()
    masked = DAE(MLP, 2, noise="masking", level=0.3).corrupt(x)
    assert (masked == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert torch.equal(masked[masked != 0], x[masked != 0])  # the rest untouched
    noisy = DAE(MLP, 2, noise="gaussian", level=0.2).corrupt(x) - x
    assert noisy.std().item() == pytest.approx(0.2, rel=0.01)
    assert abs(noisy.mean().item()) < 3 * 0.2 / math.sqrt(n)
    sp = DAE(MLP, 2, noise="salt_pepper", level=0.4).corrupt(x)
    hit = (sp == 0) | (sp == 1)
    assert hit.float().mean().item() == pytest.approx(0.4, abs=0.005)
    assert (sp[hit] == 1).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.equal(sp[~hit], x[~hit])


def test_dae_scores_the_clean_input():
    torch.manual_seed(0)
    model = DAE(MLP, 2, noise="masking", level=1.0)  # every pixel masked: the code sees only zeros
    x = torch.rand(8, 1, 28, 28)
    logits = model.decode(model.encode(torch.zeros_like(x)))
    want = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum") / 8
    assert model.loss(x)["recon"].item() == pytest.approx(want.item(), rel=1e-5)
