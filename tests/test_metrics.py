"""aecli.metrics on constructed cases whose answers are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from aecli import metrics


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- reconstruction ------------------------------------------------------------------------------------
def test_identity_map_has_zero_error_and_infinite_psnr():
    x = torch.rand(8, 1, 28, 28, generator=gen())
    assert metrics.squared_error(x, x).abs().max().item() == 0.0
    assert metrics.psnr(0.0) == math.inf


def test_psnr_of_a_known_error():
    x = 0.2 + 0.6 * torch.rand(4, 1, 28, 28, generator=gen())
    sse = metrics.squared_error(x + 0.1, x)  # every pixel off by 0.1: 784 * 0.01 per image
    assert sse.tolist() == pytest.approx([7.84] * 4, rel=1e-5)
    assert metrics.psnr(sse.mean().item() / 784) == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)


# -- likelihood bounds ---------------------------------------------------------------------------------
def test_iw_bound_is_at_least_the_elbo_and_tightens_toward_log_mean_weight():
    """log w ~ N(0, 1): ELBO = E[log w] = 0, log E[w] = 1/2 (log-normal mean), IW_k rises from 0 to 1/2."""
    log_w = torch.randn(1000, 200, generator=gen(1), dtype=torch.float64)
    elbo = metrics.elbo(log_w)
    iw = {k: metrics.iw_bound(log_w[:k]) for k in (1, 10, 100, 1000)}
    assert (iw[1000] >= elbo - 1e-12).all()  # image by image, for the same samples (Jensen)
    assert torch.allclose(iw[1], log_w[0])  # one sample: the bound is that sample's log weight
    means = [iw[k].mean().item() for k in (1, 10, 100, 1000)]
    assert means == sorted(means) and means[-1] - means[0] > 0.3
    assert elbo.mean().item() == pytest.approx(0.0, abs=0.01)
    assert means[-1] == pytest.approx(0.5, abs=0.03)


def test_iw_bound_of_equal_weights_is_exact():
    log_w = torch.full((50, 3), -7.25)
    assert torch.allclose(metrics.iw_bound(log_w), torch.full((3,), -7.25))


# -- distances between distributions ---------------------------------------------------------------------
def test_frechet_distance_is_zero_to_itself_and_grows_with_noise():
    a = torch.randn(2000, 8, generator=gen(2)) @ torch.randn(8, 8, generator=gen(3))
    assert metrics.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    noise = torch.randn(a.shape, generator=gen(4))
    d = [metrics.frechet_distance(a, a + s * noise) for s in (0.1, 0.5, 1.0, 2.0)]
    assert d == sorted(d) and d[0] > 0


def test_frechet_distance_closed_forms():
    """A mean shift m adds ||m||^2; scaling by 2 gives tr(S + 4S - 2 (4 S^2)^(1/2)) = tr(S)."""
    a = torch.randn(3000, 5, generator=gen(5)) * torch.tensor([1.0, 2.0, 0.5, 3.0, 1.5])
    m = torch.tensor([1.0, -2.0, 0.0, 0.5, 3.0])
    assert metrics.frechet_distance(a, a + m) == pytest.approx(m.pow(2).sum().item(), rel=1e-6)
    trace = torch.cov(a.double().T).trace().item()
    assert metrics.frechet_distance(a - a.mean(0), 2 * (a - a.mean(0))) == pytest.approx(trace, rel=1e-6)


def test_mmd_is_near_zero_for_one_distribution_and_large_for_a_shift():
    a, b = torch.randn(1000, 4, generator=gen(6)), torch.randn(1000, 4, generator=gen(7))
    assert abs(metrics.mmd_gaussian(a, b)) < 0.01
    assert metrics.mmd_gaussian(a, b + 1.0) > 0.1
    assert metrics.mmd_gaussian(a, b + 1.0) < metrics.mmd_gaussian(a, b + 2.0)


# -- representations -------------------------------------------------------------------------------------
def test_probe_on_random_codes_is_near_chance_and_on_informative_codes_near_perfect():
    y_train, y_test = torch.randint(10, (2000,), generator=gen(8)), torch.randint(10, (1000,), generator=gen(9))
    random_acc = metrics.probe_accuracy(torch.randn(2000, 16, generator=gen(10)), y_train,
                                        torch.randn(1000, 16, generator=gen(11)), y_test)
    assert 0.05 < random_acc < 0.16
    centres = 3 * torch.randn(10, 16, generator=gen(12))
    z_train = centres[y_train] + torch.randn(2000, 16, generator=gen(13))
    z_test = centres[y_test] + torch.randn(1000, 16, generator=gen(14))
    assert metrics.probe_accuracy(z_train, y_train, z_test, y_test) > 0.97


def test_knn_ties_go_to_the_tied_class_whose_member_is_nearest():
    """k=5: the nearest neighbour is class 2 (distance 1), class 1 (distances 2, 3) and class 0 (4, 5) tie on two
    votes; class 1's member is nearer, so 1 wins (before, the tie went to the lowest index, 0)."""
    z_train = torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]])
    y_train = torch.tensor([2, 1, 1, 0, 0])
    assert metrics.knn_accuracy(z_train, y_train, torch.zeros(1, 1), torch.tensor([1]), k=5, n_classes=3) == 1.0
    # mirrored labels: the tie now goes to class 0, whose member is the nearer one
    assert metrics.knn_accuracy(z_train, torch.tensor([2, 0, 0, 1, 1]), torch.zeros(1, 1), torch.tensor([0]),
                                k=5, n_classes=3) == 1.0
    # a strict majority still wins over a nearer single neighbour
    assert metrics.knn_accuracy(z_train, torch.tensor([2, 1, 1, 1, 0]), torch.zeros(1, 1), torch.tensor([1]),
                                k=5, n_classes=3) == 1.0


def test_knn_accuracy():
    y_train, y_test = torch.randint(10, (2000,), generator=gen(15)), torch.randint(10, (500,), generator=gen(16))
    assert 0.05 < metrics.knn_accuracy(torch.randn(2000, 8, generator=gen(17)), y_train,
                                       torch.randn(500, 8, generator=gen(18)), y_test, k=5) < 0.16
    centres = 10 * torch.eye(10)
    assert metrics.knn_accuracy(centres[y_train] + torch.randn(2000, 10, generator=gen(19)), y_train,
                                centres[y_test] + torch.randn(500, 10, generator=gen(20)), y_test, k=5) == 1.0
    # a 1-1 tie between labels 3 (nearer) and 7 goes to the nearer neighbour
    z_train, labels = torch.tensor([[1.0], [2.0]]), torch.tensor([3, 7])
    assert metrics.knn_accuracy(z_train, labels, torch.tensor([[0.0]]), torch.tensor([3]), k=2) == 1.0
    assert metrics.knn_accuracy(z_train, labels, torch.tensor([[3.0]]), torch.tensor([7]), k=2) == 1.0


def test_jacobian_norm_of_a_linear_map_is_the_weights_norm():
    w = torch.randn(784, 5, generator=gen(21))
    x = torch.rand(7, 1, 28, 28, generator=gen(22))
    norms = metrics.jacobian_frobenius(lambda v, y: v.flatten(1) @ w, x, chunk=3)
    assert torch.allclose(norms, torch.full((7,), w.norm().item()), rtol=1e-5)
    # with a label held fixed: f(x, y) = (y + 1) W^T x has norm (y + 1) ||W||_F
    y = torch.arange(7)
    norms = metrics.jacobian_frobenius(lambda v, yy: (v.flatten(1) @ w) * (yy[:, None] + 1), x, y, chunk=4)
    assert torch.allclose(norms, (y + 1) * w.norm(), rtol=1e-5)


def test_jacobian_norm_of_a_deep_encoder_matches_autograd():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.Tanh(), torch.nn.Linear(32, 6))
    x = torch.rand(5, 1, 28, 28, generator=gen(23))
    norms = metrics.jacobian_frobenius(lambda v, y: net(v), x)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(lambda v: net(v[None])[0], x[i])
        assert norms[i].item() == pytest.approx(jac.norm().item(), rel=1e-5)


def test_activation_stats():
    codes = torch.tensor([[0.0, 0.5, 0.04, 1.0], [0.02, 0.5, 0.04, 0.0]])  # unit means 0.01, 0.5, 0.04, 0.5
    mean, off = metrics.activation_stats(codes, threshold=0.05)
    assert mean == pytest.approx((0.01 + 0.5 + 0.04 + 0.5) / 4)
    assert off == pytest.approx(0.5)


def test_principal_components_find_the_line_the_codes_lie_on():
    t = torch.randn(500, generator=gen(24))
    direction = torch.tensor([1.0, 2.0, -2.0, 0.0])
    z = t[:, None] * direction / 3 + torch.tensor([5.0, 0.0, 1.0, -1.0])
    p = metrics.principal_components(z)
    assert p.shape == (500, 2)
    assert p[:, 0].abs().tolist() == pytest.approx((t - t.mean()).abs().tolist(), abs=1e-4)
    assert p[:, 1].abs().max().item() < 1e-4
    assert torch.equal(metrics.principal_components(z[:, :2]), z[:, :2])  # two dimensions: the codes themselves


def test_contraction_of_a_linear_map_is_its_gain_at_every_radius():
    x = torch.rand(200, 1, 4, 4)
    assert metrics.contraction_ratios(lambda v: 0.5 * v.flatten(1), x, (0.1, 1.0, 10.0)) == pytest.approx([0.5] * 3)
    # a saturating code contracts more the farther one goes
    ratios = metrics.contraction_ratios(lambda v: torch.sigmoid(20 * v.flatten(1)), x, (0.01, 1.0, 10.0),
                                        torch.Generator().manual_seed(0))
    assert ratios[0] > ratios[1] > ratios[2]


def test_mmd_of_posterior_means_at_zero_against_the_prior_is_the_closed_form():
    """docs/eval.md: the means of a posterior equal to N(0, I) everywhere (all at 0) against N(0, I) samples. With
    k(u, v) = exp(-||u - v||^2 / (2 D)): E k(0, 0) = 1, E k(0, z) = (1 + 1/D)^(-D/2), E k(z, z') = (1 + 2/D)^(-D/2),
    so MMD^2 = 1 + (1 + 2/D)^(-D/2) - 2 (1 + 1/D)^(-D/2) = 0.1584 at D = 16 (not 0.03); N(0, I) against itself: 0."""
    d = 16
    closed = 1 + (1 + 2 / d) ** (-d / 2) - 2 * (1 + 1 / d) ** (-d / 2)
    assert closed == pytest.approx(0.1584, abs=1e-4)
    z = torch.randn(4000, d, generator=gen(1))
    assert metrics.mmd_gaussian(torch.zeros(4000, d), z) == pytest.approx(closed, abs=0.005)
    assert abs(metrics.mmd_gaussian(torch.randn(4000, d, generator=gen(2)), z)) < 0.002
