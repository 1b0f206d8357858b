"""The protocols that put aecli's numbers next to the papers' (docs/eval.md, docs/results.md), on constructed cases
(binarization: tests/test_data.py; dynamic draws resume exactly: tests/test_resume.py): the IW bound of a model whose
posterior is its prior (against the likelihood by quadrature), the Parzen window of a known Gaussian, the
contraction curve of a linear map, the first-layer filters, and eval.protocol=paper's settings."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from aecli import evaluate as ev
from aecli import metrics, parzen
from aecli.cli import config_dir
from aecli.data import Split
from aecli.datasets.mnist import MNIST
from aecli.errors import AecliError
from aecli.models.vae import VAE
from aecli.nets.conv import Conv
from aecli.nets.mlp import MLP
from aecli.plots import filter_images
from conftest import run_cli, tiny_overrides

# -- the IW bound -------------------------------------------------------------------------------------------
def prior_posterior_vae(a: torch.Tensor, b: torch.Tensor) -> VAE:
    """A VAE on 2x2 images with one latent whose encoder outputs mu = 0, logvar = 0 (q(z|x) = p(z) = N(0, 1)) and
    whose decoder gives pixel i the logit a_i z + b_i."""
    model = VAE(MLP([], "tanh"), latent_dim=1, image_shape=(1, 2, 2)).eval()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.zero_()
        model.decoder.out.weight.copy_(a.view(4, 1))
        model.decoder.out.bias.copy_(b)
    return model


def log_px_by_quadrature(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log p(x) = log integral N(z; 0, 1) prod_i Bernoulli(x_i; sigmoid(a_i z + b_i)) dz on a fine grid (float64)."""
    z = torch.linspace(-12, 12, 48001, dtype=torch.float64)
    logits = a.double()[None, :] * z[:, None] + b.double()[None, :]  # [Z, 4]
    xs = x.flatten(1).double()  # [B, 4]
    log_lik = (xs[:, None, :] * logits - nn.functional.softplus(logits)[None]).sum(-1)  # [B, Z]
    log_prior = -0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi)
    return torch.logsumexp(log_lik + log_prior, dim=1) + math.log(z[1] - z[0])


def test_iw_bound_of_a_model_whose_posterior_is_its_prior():
    """With q(z|x) = p(z) the weights are p(x|z_k): the k = 5000 bound is log p(x) up to its Monte Carlo error, the
    ELBO is E_p(z) log p(x|z), and with a decoder that ignores z both are exactly log p(x)."""
    x = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0]], dtype=torch.uint8).mul(255)
    split = Split(x.view(4, 1, 2, 2), None)
    a, b = torch.tensor([2.0, -1.5, 1.0, 0.5]), torch.tensor([0.3, -0.2, 0.8, -1.0])
    exact = log_px_by_quadrature(x.float() / 255, a, b).mean().item()
    torch.manual_seed(0)
    bounds = ev.likelihood_bounds(prior_posterior_vae(a, b), split, 4, k=5000, chunk=1000)
    assert bounds["iw_bound"] == pytest.approx(exact, abs=0.02)
    assert bounds["elbo"] < exact - 0.3  # the ELBO is E log p(x|z): looser by Jensen's gap
    constant = prior_posterior_vae(torch.zeros(4), b)  # p(x|z) = p(x): every weight is the likelihood itself
    flat = ev.likelihood_bounds(constant, split, 4, k=50, chunk=7)
    exact = log_px_by_quadrature(x.float() / 255, torch.zeros(4), b).mean().item()
    assert flat["iw_bound"] == pytest.approx(exact, abs=1e-4) and flat["elbo"] == pytest.approx(exact, abs=1e-4)


def test_batched_elbo_terms_equal_the_per_sample_terms():
    """elbo_terms decodes all k samples in one batch: each column is the log-weight of its own sample."""
    torch.manual_seed(0)
    model = VAE(MLP([16], "tanh"), latent_dim=3).eval()
    x = (torch.rand(5, 1, 28, 28) < 0.3).float()
    torch.manual_seed(1)
    log_w = model.elbo_terms(x, k=4)
    torch.manual_seed(1)
    eps = torch.randn(4, 5, 3)
    mu, logvar = model.posterior(x)
    for i in range(4):
        z = mu + torch.exp(0.5 * logvar) * eps[i]
        log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
        log_qz = -0.5 * (eps[i].pow(2) + logvar + math.log(2 * math.pi)).sum(1)
        assert torch.allclose(log_w[i], model.log_likelihood(model.decoder(z), x) + log_pz - log_qz, atol=1e-4)


# -- the Parzen window ------------------------------------------------------------------------------------
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


# -- the contraction curve and the filters -----------------------------------------------------------------
def test_contraction_of_a_linear_map_is_its_gain_at_every_radius():
    x = torch.rand(200, 1, 4, 4)
    assert metrics.contraction_ratios(lambda v: 0.5 * v.flatten(1), x, (0.1, 1.0, 10.0)) == pytest.approx([0.5] * 3)
    # a saturating code contracts more the farther one goes
    ratios = metrics.contraction_ratios(lambda v: torch.sigmoid(20 * v.flatten(1)), x, (0.01, 1.0, 10.0),
                                        torch.Generator().manual_seed(0))
    assert ratios[0] > ratios[1] > ratios[2]


def test_first_layer_filters_are_the_mlp_weight_rows():
    model = VAE(MLP([30], "tanh"), latent_dim=2)
    w = ev.first_layer_weight(model)
    assert w is model.encoder.hidden[0].weight and w.shape == (30, 784)
    images = filter_images(w, (1, 28, 28), n=20)
    assert images.shape == (20, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    row = w[3].detach()
    assert torch.allclose(images[3].flatten(), 0.5 + 0.5 * row / row.abs().max())
    assert ev.first_layer_weight(VAE(Conv([8, 16]), latent_dim=2)) is None  # conv: no filters picture


# -- eval.protocol=paper --------------------------------------------------------------------------------
def test_paper_protocol_settings():
    fast, paper = ev.eval_settings(), ev.eval_settings({"protocol": "paper"})
    assert (fast.protocol, fast.iw_samples, fast.classifier, fast.parzen_samples) == ("fast", 1000, "mlp", None)
    assert (paper.iw_samples, paper.iw_images, paper.test_images, paper.probe_train_images) == (5000, None, None, None)
    assert (paper.classifier, paper.parzen_samples, paper.frechet_images) == ("cnn", 10000, 10000)
    assert ev.eval_settings({"protocol": "paper"}, iw_samples=100).iw_samples == 100  # given on `aecli eval`
    kept = ev.eval_settings({"protocol": "paper", "iw_images": 10, "classifier": "mlp"})  # a run's own sizes stay
    assert (kept.iw_images, kept.iw_samples, kept.classifier) == (10, 5000, "cnn")  # mlp is the fast default
    assert ev.eval_settings(protocol="paper").iw_samples == 5000
    with pytest.raises(AecliError, match="eval.protocol='exact' is not allowed: it must be one of fast, paper"):
        ev.eval_settings({"protocol": "exact"})
    with pytest.raises(AecliError, match="eval.classifier='big' is not allowed"):
        ev.eval_settings({"classifier": "big"})


# -- the reproductions' configs ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(p.stem for p in (config_dir() / "experiment").glob("paper_*.yaml")))
def test_paper_experiments_compose_and_build(name):
    from aecli.config import build_model, validate

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"experiment={name}"])
    validate(cfg)
    model = build_model(cfg)
    assert cfg.eval.protocol == "paper" and ev.eval_settings(cfg.eval).iw_samples == 5000
    if name.startswith("paper_vae"):
        assert (cfg.data.binarize, list(cfg.net.hidden), cfg.latent_dim, cfg.net.activation) == \
            ("dynamic", [200, 200], 50, "tanh")
    assert ev.first_layer_weight(model) is not None  # every reproduction draws its filters


# -- the paper classifier and what an evaluation records -----------------------------------------------------
def test_cnn_classifier_trains_to_its_target_and_is_cached(data_root, tmp_path, monkeypatch):
    from aecli import classifier
    from aecli.data import Data

    full = MNIST(root=str(data_root), download=False).load(torch.device("cpu"))
    small = Data("mnist", full.classes, full.image_shape, full.train.head(2000), full.val.head(500),
                 full.test.head(500), full.train_all.head(2000), key="mnist_small")
    monkeypatch.setitem(classifier.TARGET_ACCURACY, "mnist", 0.85)
    net, test_acc = classifier.load_paper_classifier(small, torch.device("cpu"), str(tmp_path))
    saved = torch.load(tmp_path / "mnist_small_classifier_cnn_v1.pt", weights_only=True)
    assert saved["val_acc"] >= 0.85 and saved["epochs"] < classifier.CNN_MAX_EPOCHS and test_acc > 0.8
    assert net.features(small.test.batch(torch.arange(5))[0]).shape == (5, classifier.CNN_FEATURE_DIM)
    again, acc = classifier.load_paper_classifier(small, torch.device("cpu"), str(tmp_path))  # from the cache
    assert acc == test_acc and torch.equal(again.head.weight, net.head.weight)


def test_an_evaluation_records_its_protocol_and_draws_the_curves(data_root, tmp_path):
    sizes = {"eval.at_end": "true", "eval.test_images": 500, "eval.probe_train_images": 500, "eval.iw_samples": 50,
             "eval.iw_images": 20, "eval.frechet_images": 500, "eval.mmd_images": 200, "eval.jacobian_images": 20,
             "eval.parzen_samples": 300, "eval.contraction_images": 100, "data.binarize": "dynamic",
             "hydra.run.dir": "run"}
    r = run_cli("train", *tiny_overrides(data_root, **sizes), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    run = tmp_path / "run"
    e = __import__("json").loads((run / "eval.json").read_text())
    assert (e["protocol"], e["binarize"], e["iw_samples"], e["iw_images"], e["probe_train_images"]) == \
        ("fast", "dynamic", 50, 20, 500)
    assert e["classifier"] == "v2e1" and 0 < e["classifier_acc"] <= 1 and e["iw_bound"] >= e["elbo"]
    assert len(e["contraction"]) == len(e["contraction_radii"]) == len(ev.CONTRACTION_RADII)
    assert math.isfinite(e["parzen_ll"]) and e["parzen_sigma"] in parzen.SIGMAS and e["parzen_se"] > 0
    assert (run / "plots" / "filters.png").is_file() and (run / "plots" / "contraction.png").is_file()
