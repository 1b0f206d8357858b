"""aecli/models/pca.py: the PCA baseline against the SVD's reconstruction."""

from __future__ import annotations

import pytest
import torch

from aecli.models.pca import PCA
from conftest import as_net

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest

MLP = as_net({"name": "mlp", "hidden": [12, 8], "activation": "relu"})


def test_pca_matches_svd_reconstruction():
    torch.manual_seed(0)
    basis = torch.randn(6, 784)
    x = (0.5 + 0.1 * torch.randn(300, 6) @ basis / 6 + 0.02 * torch.randn(300, 784)).clamp(0, 1).view(-1, 1, 28, 28)
    flat = x.flatten(1).double()
    mean = flat.mean(0)
    _, _, vh = torch.linalg.svd(flat - mean, full_matrices=False)
    want = (mean + (flat - mean) @ vh[:4].T @ vh[:4]).clamp(0, 1).float().view_as(x)
    fitted_at_once = PCA(MLP, 4)
    fitted_at_once.fit_prior(x)
    streamed = PCA(MLP, 4)
    for batch in x.split(64):  # what the trainer does: accumulate during the epoch, solve at its end
        streamed.train_step(batch, None, streamed.configure_optimizers(1e-3))
    streamed.fit_prior(x)
    for model in (fitted_at_once, streamed):
        torch.testing.assert_close(model.reconstruct(x), want, rtol=0, atol=1e-4)
        assert model.loss(x)["recon"].item() < PCA(MLP, 4).loss(x)["recon"].item()
    assert streamed.configure_optimizers(1e-3) == {}
