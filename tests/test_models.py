"""The model zoo: each model's math against its formula, and every model x net trains and samples."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir

from aecli.config import build_model, validate
from aecli.errors import AecliError
from aecli.models.ae import AE
from aecli.models.dae import DAE
from aecli.models.pca import PCA
from aecli.models.prior import GaussianMixture
from aecli.models.sae import SAE
from aecli.sampling import draw_samples, sample_command
from aecli.train import Trainer, evaluate_split
from conftest import MODELS, NETS, REPO, as_net, load_data, run_cli, tiny_overrides

MLP = as_net({"name": "mlp", "hidden": [12, 8], "activation": "relu"})
CONV = as_net({"name": "conv", "channels": [4, 6], "activation": "relu"})


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest, and LAPACK's threads crawl on an oversubscribed machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


# -- sae ------------------------------------------------------------------------------------------------
def test_sae_kl_against_its_formula():
    model = SAE(MLP, 2, lam=3.0, rho=0.05)
    h = torch.tensor([[0.1, 0.5], [0.3, 0.7]])  # rho_hat = [0.2, 0.6]
    want = sum(0.05 * math.log(0.05 / r) + 0.95 * math.log(0.95 / (1 - r)) for r in (0.2, 0.6))
    assert model.sparsity_penalty(h).item() == pytest.approx(want, rel=1e-6)
    assert model.rho == 0.05
    l1 = SAE(MLP, 2, lam=3.0, sparsity="l1")
    assert l1.sparsity_penalty(h).item() == pytest.approx((0.6 + 1.0) / 2, rel=1e-6)
    # the loss adds lambda times that penalty of the sigmoid code's batch means
    x = torch.rand(16, 1, 28, 28)
    terms = model.loss(x)
    code = model.encode(x)
    assert 0 <= code.min() and code.max() <= 1
    rho_hat = code.mean(0)
    kl = (0.05 * torch.log(0.05 / rho_hat) + 0.95 * torch.log(0.95 / (1 - rho_hat))).sum()
    assert terms["sparsity"].item() == pytest.approx(kl.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx(terms["recon"].item() + 3.0 * kl.item(), rel=1e-5)


# -- dae ------------------------------------------------------------------------------------------------
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


# -- ae: tied weights, L2, layer matching ---------------------------------------------------------------
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


# -- aae ------------------------------------------------------------------------------------------------
def test_aae_mixture_prior_is_a_ring_of_ten():
    prior = GaussianMixture.ring(10, 3)
    z = prior.sample(20000, torch.Generator().manual_seed(0))
    radius = z[:, :2].norm(dim=1)
    assert radius.mean().item() == pytest.approx(4.0, abs=0.1)
    nearest = (z[:, None, :] - prior.mu[None]).norm(dim=2).argmin(1)
    assert torch.bincount(nearest, minlength=10).min().item() > 1800  # all ten used, about equally


# -- pca and the fitted code prior ---------------------------------------------------------------------
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


def test_gaussian_mixture_em_recovers_clusters():
    g = torch.Generator().manual_seed(0)
    z = torch.cat([torch.randn(600, 2, generator=g) * 0.3 + torch.tensor([3.0, 0.0]),
                   torch.randn(200, 2, generator=g) * 0.5 - torch.tensor([0.0, 3.0])])
    gm = GaussianMixture(2, 2)
    gm.fit(z)
    order = gm.mu[:, 0].argsort(descending=True)
    torch.testing.assert_close(gm.mu[order], torch.tensor([[3.0, 0.0], [0.0, -3.0]]), atol=0.08, rtol=0)
    torch.testing.assert_close(gm.log_pi[order].exp(), torch.tensor([0.75, 0.25]), atol=0.01, rtol=0)
    torch.testing.assert_close(gm.var[order].sqrt(), torch.tensor([[0.3, 0.3], [0.5, 0.5]]), atol=0.05, rtol=0)
    # the fitted prior travels in the state dict, so a checkpoint samples from it
    model, restored = AE(MLP, 2), AE(MLP, 2)
    model.mixture.fit(z)  # ten components on two clusters: still a density of the codes
    assert model.mixture.log_prob(z).mean() > gm.log_prob(z).mean() - 0.05
    restored.load_state_dict(model.state_dict())
    assert torch.equal(restored.mixture.mu, model.mixture.mu) and torch.equal(restored.mixture.var, model.mixture.var)


# -- every model x net: one epoch on 512 images, val_recon measured alike, samples ---------------------------
# (whether each model learns is tests/test_learning.py's question)
@pytest.fixture(scope="module")
def shared_data(data_root):
    return load_data("mnist", data_root, limit=512, val_size=256)


@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_samples_and_measures_val_recon_alike(model, net, data_root, shared_data, tmp_path):
    extra = {"model.jacobian": "estimate", "model.projections": 2} if model == "cae" and net == "conv" else {}
    cfg = compose_cfg(tiny_overrides(data_root, net=net, model=model, batch_size=64, lr=3e-3, **extra))
    trainer = Trainer(cfg, tmp_path, data=shared_data)
    trainer.fit()
    assert math.isfinite(trainer.state.rows[-1]["val_loss"])
    # val_recon is the same measure for every model: the Bernoulli NLL of the mean reconstruction
    assert trainer.state.rows[-1]["val_recon"] == pytest.approx(
        evaluate_split(trainer.model, shared_data.val)["recon_bce"], rel=1e-5)
    images, nrow = draw_samples(trainer.model, 20, seed=0)
    assert images.shape[1:] == (1, 28, 28) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0
    assert len(images) == 20 and (nrow == 2 if model == "cvae" else True)  # cvae: one row per class


def test_build_refuses_bad_model_options(data_root):
    for bad in ("model.noise=blur", "model.level=1.5"):
        with pytest.raises(AecliError, match=bad.split("=")[0]):
            validate(compose_cfg(tiny_overrides(data_root, model="dae") + [bad]))
    with pytest.raises(AecliError, match="tied=true needs a net whose decoder can share the encoder's weights"):
        build_model(compose_cfg(tiny_overrides(data_root, net="conv", model="ae") + ["model.tied=true"]))


# -- end to end: the CLI trains and samples -------------------------------------------------------------
def test_cli_trains_and_samples_two_models(data_root, tmp_path):
    out = run_cli("train", "-m", *tiny_overrides(data_root, net="conv", model="aae,sae"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    runs = {torch.load(p, weights_only=False)["config"]["model"]["_target_"].split(".")[-1]: p.parent.parent
            for p in tmp_path.glob("outputs/multirun/*/*/*/checkpoints/best.pt")}
    assert set(runs) == {"AAE", "SAE"}
    for name, run_dir in runs.items():
        sample = run_cli("sample", f"run={run_dir}", "n=16", "seed=1", cwd=tmp_path) if name == "AAE" else None
        if sample is not None:
            assert sample.returncode == 0, sample.stderr[-2000:]
        else:  # the same command in-process, to keep the test short
            sample_command(str(run_dir), n=16, seed=1, device="cpu")
        assert (run_dir / "images" / "samples_seed1.png").is_file()
