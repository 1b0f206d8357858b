"""Validation (aecli/validation.py): the mean of every term over a split, and the loss terms' names without a
draw from torch's RNG."""

from __future__ import annotations

import pytest
import torch

from aecli.data import Split
from aecli.validation import evaluate_split, loss_terms
from conftest import as_net


def test_split_means_weigh_every_image_and_naming_the_terms_draws_nothing():
    from aecli.models.vae import VAE

    torch.manual_seed(0)
    model = VAE(as_net({"name": "mlp", "hidden": [8], "activation": "relu"}), 2, image_shape=(1, 2, 2)).eval()
    split = Split(torch.randint(0, 256, (7, 1, 2, 2), dtype=torch.uint8), None)
    state = torch.get_rng_state()
    assert loss_terms(model, split) == ["recon", "kl"] and torch.equal(torch.get_rng_state(), state)
    whole = evaluate_split(model, split)
    in_threes = evaluate_split(model, split, batch_size=3)  # batches of 3, 3 and 1 image
    assert whole["kl"] == pytest.approx(in_threes["kl"], rel=1e-6)
    assert whole["recon_bce"] == pytest.approx(in_threes["recon_bce"], rel=1e-6)
