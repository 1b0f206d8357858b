"""The fit of a fitted code prior (aecli/prior_fit.py): once per state of the weights, never from the training
stream."""

from __future__ import annotations

import torch

from aecli.data import Data, binarized_splits
from aecli.prior_fit import PriorFit
from conftest import as_net


def test_the_prior_fit_reads_the_fixed_draw_and_leaves_the_training_stream_alone():
    """Under data.binarize=dynamic the fit once drew its images through the training binarizer, so whether a
    checkpoint was due (a wall-clock decision) changed every later batch (issue 21)."""
    from aecli.models.ae import AE

    images = torch.randint(0, 256, (40, 1, 4, 4), dtype=torch.uint8)
    splits = binarized_splits(images, None, (images[:5], None), 10, None, torch.device("cpu"), "dynamic")
    data = Data("grey", None, (1, 4, 4), **splits)
    model = AE(as_net({"name": "mlp", "hidden": [8], "activation": "relu"}), 2, image_shape=(1, 4, 4))
    before = data.binarization_state()["generator"]
    fits = []
    model.fit_prior = lambda x, y=None: fits.append(x.clone())
    prior = PriorFit(model, data)
    prior.fit(1, 4)
    prior.fit(1, 4)  # the same weights: fitted once
    assert torch.equal(data.binarization_state()["generator"], before)  # no draw from the training stream
    assert len(fits) == 1 and torch.equal(fits[0], data.fixed_train.batch(torch.arange(30))[0])
    prior.fit(2, 8)
    assert len(fits) == 2 and torch.equal(fits[1], fits[0])  # the same fixed images every time
