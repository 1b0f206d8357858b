"""aecli.api: a run's encode, decode and reconstruct take the shapes a user hands them, or say what they take."""

from __future__ import annotations

import pytest
import torch

from aecli.api import Run
from aecli.errors import AecliError
from aecli.models.vae import VAE
from aecli.nets.mlp import MLP


def a_run(image_shape=(1, 28, 28), latent_dim: int = 3) -> Run:
    """A Run around an untrained model, without a run folder."""
    run = Run.__new__(Run)
    run.model = VAE(MLP([16], "relu"), latent_dim=latent_dim, image_shape=image_shape).eval()
    run.device = torch.device("cpu")
    return run


def test_images_of_the_run_shape_with_or_without_batch_and_channel():
    run = a_run()
    x = torch.rand(5, 1, 28, 28)
    z = run.encode(x)
    assert z.shape == (5, 3)
    assert torch.equal(run.encode(x[:, 0]), z) and torch.allclose(run.encode(x[0, 0]), z[:1], atol=1e-6)
    assert torch.allclose(run.encode(x[0]), z[:1], atol=1e-6) and run.reconstruct(x[0, 0]).shape == (1, 1, 28, 28)
    assert run.decode(z[0]).shape == (1, 1, 28, 28) and run.decode(z).shape == (5, 1, 28, 28)


def test_a_wrong_shape_is_one_line_naming_both():
    run = a_run()
    with pytest.raises(AecliError, match=r"images of shape \[32, 32\] do not fit this run: it takes \[N, 1, 28, 28\] "
                                         r"or \[1, 28, 28\], or \[N, 28, 28\] / \[28, 28\] for its one channel"):
        run.encode(torch.rand(32, 32))
    with pytest.raises(AecliError, match=r"images of shape \[2, 3, 28, 28\] do not fit"):
        run.reconstruct(torch.rand(2, 3, 28, 28))
    with pytest.raises(AecliError, match=r"codes of shape \[4, 5\] do not fit this run: it takes \[N, 3\] or \[3\]"):
        run.decode(torch.rand(4, 5))
    rgb = a_run((3, 8, 8))  # three channels: no channel-less shapes
    assert rgb.encode(torch.rand(3, 8, 8)).shape == (1, 3)
    with pytest.raises(AecliError, match=r"images of shape \[8, 8\] do not fit this run: it takes \[N, 3, 8, 8\] or "
                                         r"\[3, 8, 8\]$"):
        rgb.encode(torch.rand(8, 8))
