"""aecli.parzen: the Parzen-window log-likelihood on constructed cases (one sample, a known Gaussian)."""

from __future__ import annotations

import math

import torch

from aecli import parzen


def test_parzen_of_one_sample_is_the_gaussian_density():
    center, x = torch.tensor([[0.2, 0.4, 0.6]]), torch.tensor([[0.3, 0.1, 0.9], [0.2, 0.4, 0.6]])
    got = parzen.log_density(x, center, (0.5,))[0]
    want = torch.distributions.Normal(center[0], 0.5).log_prob(x).sum(1)
    assert torch.allclose(got.float(), want, atol=1e-5)


def test_parzen_estimate_of_a_known_gaussian():
    """Samples of N(0, I) in 2-D: the window widths' grid is searched on validation points, and the test
    log-likelihood is the Gaussian's, E log N(x; 0, I) = -log(2 pi) - 1, up to the window's bias (sigma^2 / 2 at
    most here) and the standard error it reports."""
    g = torch.Generator().manual_seed(0)
    samples, val, test = (torch.randn(n, 2, generator=g) for n in (10000, 1000, 2000))
    r = parzen.parzen_log_likelihood(samples, val, test, sigmas=(0.01, 0.1, 0.3, 3.0))
    truth = -math.log(2 * math.pi) - 1
    assert r["parzen_sigma"] in (0.1, 0.3)  # too narrow overfits the samples, too wide blurs the Gaussian
    assert abs(r["parzen_ll"] - truth) < 0.05 + 3 * r["parzen_se"], r
    assert 0.01 < r["parzen_se"] < 0.05  # the std of log N(x; 0, I) is 1: 1 / sqrt(2000)
