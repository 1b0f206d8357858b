"""The contractive penalty against autograd: ||J_f(x)||_F^2 of the whole encoder, exact and estimated."""

from __future__ import annotations

import pytest
import torch

from aecli.models import cae
from aecli.models.cae import CAE
from aecli.nets import ACTIVATIONS, activation, activation_slope
from aecli.nets.mlp import MLP
from conftest import as_net

ENCODERS = {
    # name: (net, latent_dim, code activation)
    "one_sigmoid_layer": ({"name": "mlp", "hidden": [], "activation": "relu"}, 6, "sigmoid"),
    "deep_mlp": ({"name": "mlp", "hidden": [20, 12], "activation": "tanh"}, 5, "sigmoid"),
    "conv": ({"name": "conv", "channels": [2, 3], "activation": "elu"}, 5, "tanh"),
    "overcomplete_jacfwd": ({"name": "conv", "channels": [2, 3], "activation": "softplus"}, 800, "none"),
    # the chain rule (every mlp with hidden layers): every activation, every code activation, three hidden
    # layers, a first layer wider than the image (no Gram matrix), more codes than pixels
    "three_hidden_leaky_relu": ({"name": "mlp", "hidden": [24, 16, 12], "activation": "leaky_relu"}, 5, "tanh"),
    "relu_relu_code": ({"name": "mlp", "hidden": [20, 12], "activation": "relu"}, 5, "relu"),
    "elu": ({"name": "mlp", "hidden": [14], "activation": "elu"}, 4, "sigmoid"),
    "gelu": ({"name": "mlp", "hidden": [14, 9], "activation": "gelu"}, 4, "none"),
    "silu": ({"name": "mlp", "hidden": [14], "activation": "silu"}, 4, "tanh"),
    "sigmoid": ({"name": "mlp", "hidden": [14], "activation": "sigmoid"}, 4, "sigmoid"),
    "softplus_wide_first_layer": ({"name": "mlp", "hidden": [800, 7], "activation": "softplus"}, 4, "sigmoid"),
    "overcomplete_mlp": ({"name": "mlp", "hidden": [10], "activation": "softplus"}, 800, "none"),
}
CHAIN_RULE = [name for name, (net, _, _) in ENCODERS.items() if net["name"] == "mlp" and net["hidden"]]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def make_cae(name: str, jacobian: str = "exact", projections: int = 1) -> CAE:
    net, latent_dim, code = ENCODERS[name]
    torch.manual_seed(0)
    return CAE(as_net(net), latent_dim, lam=0.1, jacobian=jacobian, projections=projections,
               code_activation=code).double()


def autograd_frobenius(model: CAE, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """||J||_F^2 per image from torch.autograd.functional.jacobian, one image at a time."""
    return torch.stack([torch.autograd.functional.jacobian(lambda xi: model.encode(xi[None])[0], xi,
                                                           create_graph=create_graph).pow(2).sum() for xi in x])


@pytest.mark.parametrize("name", list(ENCODERS))
def test_exact_penalty_equals_autograd_jacobian(name):
    model = make_cae(name)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    assert model.one_sigmoid_layer == (name == "one_sigmoid_layer")  # the closed form is used only there
    assert model.chain_rule == (name in CHAIN_RULE)
    z, got = model.contraction(x)
    want = autograd_frobenius(model, x)
    assert got.shape == (3,)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=0)
    torch.testing.assert_close(z, model.encode(x))  # the code comes from the same forward pass
    # and the loss reports the batch mean of it
    assert model.loss(x)["contraction"].item() == pytest.approx(want.mean().item(), rel=1e-4)


@pytest.mark.parametrize("name", ["one_sigmoid_layer", "deep_mlp", "conv", "three_hidden_leaky_relu", "silu",
                                  "softplus_wide_first_layer"])
def test_exact_penalty_gradient_equals_autograd(name):
    """Training differentiates the penalty itself: its parameter gradient matches autograd's double backward."""
    model = make_cae(name)
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    params = [p for p in model.encoder.parameters()]
    got = torch.autograd.grad(model.contraction(x)[1].sum(), params)
    want = torch.autograd.grad(autograd_frobenius(model, x, create_graph=True).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-10)


def test_chunks_change_nothing(monkeypatch):
    """On the CPU the chain rule runs over chunks of images; 2 images a chunk (3 chunks for 5) gives the same
    penalties and parameter gradients as one chunk."""
    model = make_cae("three_hidden_leaky_relu")
    x = torch.rand(5, 1, 28, 28, dtype=torch.float64)
    params = list(model.encoder.parameters())
    whole = model.contraction(x)[1]
    want = torch.autograd.grad(whole.sum(), params)
    monkeypatch.setattr(cae, "CPU_JACOBIAN_ROWS", 2 * model.latent_dim)
    chunked = model.contraction(x)[1]
    torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=0)
    for g, w in zip(torch.autograd.grad(chunked.sum(), params), want):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", ["deep_mlp", "conv"])
def test_loss_gradient_equals_separate_passes(name):
    """The code for the reconstruction comes from the penalty's forward pass; the loss's gradient (encoder and
    decoder) equals that of R(x, g(f(x))) + lambda * ||J||^2 written out with autograd's Jacobian."""
    model = make_cae(name)
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    got = torch.autograd.grad(model.loss(x)["loss"], list(model.parameters()))
    want_loss = (model.recon_nll(model.decode(model.encode(x)), x).mean()
                 + 0.1 * autograd_frobenius(model, x, create_graph=True).mean())
    want = torch.autograd.grad(want_loss, list(model.parameters()))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("name", ["deep_mlp", "conv"])
def test_estimate_is_unbiased(name):
    """The mean of ||J^T v||^2 over many v ~ N(0, I) converges to ||J||_F^2 (relative s.d. here < 2%)."""
    exact = make_cae(name)
    estimate = make_cae(name, jacobian="estimate", projections=2000)
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    want = exact.contraction(x)[1]
    torch.manual_seed(1)
    got = estimate.contraction(x, create_graph=False)[1]
    torch.testing.assert_close(got, want, rtol=0.05, atol=0)
    # a single projection is a noisy draw, yet it trains: the loss reaches the encoder's weights
    one = make_cae(name, jacobian="estimate", projections=1)
    terms = one.loss(x)
    terms["contraction"].backward()
    assert terms["contraction"].item() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in one.encoder.parameters() if p.dim() > 1)


def test_validation_runs_without_grad():
    """evaluate_split calls loss under no_grad: both Jacobian modes still give the value."""
    x = torch.rand(4, 1, 28, 28, dtype=torch.float64)
    for name, jacobian in (("conv", "exact"), ("deep_mlp", "exact"), ("conv", "estimate")):
        model = make_cae(name, jacobian=jacobian, projections=4)
        with torch.no_grad():
            terms = model.loss(x)
        assert not terms["loss"].requires_grad and torch.isfinite(terms["loss"])
        assert terms["loss"].item() == pytest.approx(terms["recon"].item() + 0.1 * terms["contraction"].item())


@pytest.mark.parametrize("blocks", [1, 3, 4])
def test_symmetric_gram_blocks(blocks, monkeypatch):
    """GramTrace's backward builds the symmetric dq/dG = sum_b dq_b M_b^T M_b from its upper block triangle: any
    number of blocks (3 does not divide 20) gives the full product, and the same parameter gradients."""
    monkeypatch.setattr(cae, "GRAM_BLOCKS", blocks)
    m = torch.randn(6, 3, 20, dtype=torch.float64)
    dq = torch.tensor([0.5, -2.0, 1.0, 3.0, -0.25, 1.5], dtype=torch.float64)[:, None, None]
    a, b = (dq * m).flatten(0, 1), m.flatten(0, 1)
    torch.testing.assert_close(cae.symmetric_gram(a, b), a.mT @ b, rtol=1e-12, atol=1e-12)
    model = make_cae("deep_mlp")  # first layer 20 wide: the Gram matrix path
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    params = list(model.encoder.parameters())
    got = torch.autograd.grad(model.contraction(x)[1].sum(), params)
    want = torch.autograd.grad(autograd_frobenius(model, x, create_graph=True).sum(), params)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("name", [*ACTIVATIONS, "identity"])
def test_closed_form_slopes_equal_autograd(name):
    """activation_slope (the chain rule's D_l and S) against autograd, for every activation a net or a code may use,
    and its own derivative too where the slope varies (the penalty's gradient flows through it)."""
    act = torch.nn.Identity() if name == "identity" else activation(name)
    a = torch.linspace(-6, 6, 1001, dtype=torch.float64).requires_grad_(True)
    a = a[a.detach().abs() > 1e-6]  # away from the kinks of relu and leaky_relu
    (want,) = torch.autograd.grad(act(a).sum(), a, create_graph=True)
    got = activation_slope(act, a)
    torch.testing.assert_close(got, want)
    if want.requires_grad:
        (want2,) = torch.autograd.grad(want.sum(), a, allow_unused=True, materialize_grads=True)
        if got.requires_grad:
            (got2,) = torch.autograd.grad(got.sum(), a)
            torch.testing.assert_close(got2, want2)
        else:  # a piecewise-constant slope is detached: its true derivative is 0 away from the kinks
            assert not want2.any()


def test_a_tied_cae_shares_one_weight_and_its_penalty_is_still_exact():
    """model.tied (Rifai et al.'s CAE): the decoder is W^T of the encoder's W, one tensor; the closed-form
    ||J_f||_F^2 and its gradient agree with autograd through the shared weight."""
    torch.manual_seed(0)
    model = CAE(MLP(hidden=[], activation="relu"), latent_dim=20, lam=1.0, tied=True, code_activation="sigmoid")
    assert model.decoder.out.weight is model.encoder.out.weight
    assert sum(p.numel() for p in model.parameters()) == 784 * 20 + 20 + 784
    x = torch.rand(6, 1, 28, 28)
    _, penalty = model.contraction(x)
    jac = torch.autograd.functional.jacobian(lambda v: model.encode(v.view(1, 1, 28, 28))[0], x[0].flatten())
    assert penalty[0].item() == pytest.approx(jac.pow(2).sum().item(), rel=1e-4)
    model.loss(x)["loss"].backward()
    assert model.encoder.out.weight.grad.abs().sum() > 0
