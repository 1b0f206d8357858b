"""aecli.evaluate, the eval pictures and `aecli sample mode=...`: end to end on a tiny vae run, and every model
of conf/model through `evaluate` (its capabilities decide its metrics)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from aecli import evaluate as ev
from aecli import parzen
from aecli.data import Split
from aecli.errors import AecliError
from aecli.models.vae import VAE
from aecli.nets.conv import Conv
from aecli.nets.mlp import MLP
from aecli.plots import filter_images
from conftest import MODELS, REPO, as_net, load_data, run_cli, tiny_overrides

# small sizes so an eval takes seconds (the classifier and pixel floors are cached under the data root)
FAST_EVAL = {"eval.test_images": 1000, "eval.probe_train_images": 1000, "eval.jacobian_images": 50,
             "eval.iw_samples": 100, "eval.iw_images": 40, "eval.mmd_images": 500, "eval.frechet_images": 1000,
             "eval.label_samples": 20}
ALWAYS = {"recon_bce", "recon_mse", "psnr", "probe_acc", "knn_acc", "pixel_probe_acc", "pixel_knn_acc",
          "jacobian_fro", "classifier_acc", "frechet", "frechet_floor", "test_images"}


@pytest.fixture(scope="module")
def vae_run(data_root, tmp_path_factory) -> tuple[Path, str]:
    """A tiny vae trained with eval.at_end=true: (its run folder, the train command's output)."""
    cwd = tmp_path_factory.mktemp("eval")
    r = run_cli("train", *tiny_overrides(data_root, epochs=2, **{"eval.at_end": "true", **FAST_EVAL},
                                         **{"hydra.run.dir": "run"}), cwd=cwd)
    assert r.returncode == 0, r.stderr[-2000:]
    return cwd / "run", r.stdout


@pytest.fixture(scope="module")
def small_data(data_root):
    """300 training and all 10000 test images of MNIST on the CPU, loaded once for the in-process tests."""
    return load_data("mnist", data_root, limit=300, val_size=100)


@pytest.mark.slow
def test_train_at_end_writes_eval_json_and_a_summary(vae_run):
    run, out = vae_run
    m = json.loads((run / "eval.json").read_text())
    assert ALWAYS | {"elbo", "iw_bound", "iw_samples", "mmd"} <= set(m)
    assert m["model"] == "vae" and m["data"] == "mnist" and m["test_images"] == 1000 and m["iw_samples"] == 100
    # a barely trained model: between a perfect and a uniform (784 ln 2 = 543.4 nats) reconstruction
    assert 50 < m["recon_bce"] < 545
    assert m["psnr"] == pytest.approx(10 * math.log10(784 / m["recon_mse"]), rel=1e-6)  # PSNR from the same MSE
    assert m["elbo"] < 0 and m["iw_bound"] >= m["elbo"] and m["iw_bound"] - m["elbo"] < 50
    assert m["recon_bce"] > -m["elbo"] - 60  # the ELBO's reconstruction term is most of it early on
    assert 0.1 <= m["probe_acc"] <= 1 and 0.1 <= m["knn_acc"] <= 1
    assert m["pixel_probe_acc"] > 0.8 and m["pixel_knn_acc"] > 0.8 and m["classifier_acc"] > 0.9
    assert m["frechet"] > m["frechet_floor"] > 0 and m["jacobian_fro"] > 0 and math.isfinite(m["mmd"])
    summary = [line for line in out.splitlines() if line.startswith("finished in")][-1]
    assert f"recon_bce {ev.fmt(m['recon_bce'])}" in summary and "iw_bound" in summary and "frechet" in summary
    for picture in ("plots/codes.png", "plots/loss.png", "images/eval_recon.png", "images/eval_interpolation.png",
                    "images/eval_samples.png"):
        assert (run / picture).stat().st_size > 1000, picture


@pytest.mark.slow
def test_eval_command_repeats_the_at_end_numbers(vae_run):
    run, _ = vae_run
    at_end = json.loads((run / "eval.json").read_text())
    r = run_cli("eval", f"run={run}", "device=cpu", cwd=run.parent)  # the run's own checkpoint, seed, sizes
    assert r.returncode == 0, r.stderr[-2000:]
    assert "iw_bound" in r.stdout and "frechet" in r.stdout  # the table
    again = json.loads((run / "eval.json").read_text())
    for key in ALWAYS | {"mmd"}:  # the same checkpoint, seed and sizes: the same numbers
        assert again[key] == pytest.approx(at_end[key], rel=1e-5, abs=1e-6), key
    # other settings never replace eval.json: they get a file of their own, named in the table's title
    other = run_cli("eval", f"run={run}", "iw_samples=20", "seed=3", "device=cpu", cwd=run.parent)
    assert other.returncode == 0 and "eval_best_seed3_iw20.json" in other.stdout
    assert json.loads((run / "eval_best_seed3_iw20.json").read_text())["iw_samples"] == 20
    assert json.loads((run / "eval.json").read_text()) == again


@pytest.mark.slow
def test_eval_refuses_bad_settings_in_one_line(vae_run):
    with pytest.raises(AecliError) as e:
        ev.eval_command(str(vae_run[0]), iw_samples=0, device="cpu")
    assert str(e.value) == "eval.iw_samples=0 is not allowed: it must be an integer >= 1"
    with pytest.raises(AecliError, match="eval.knn_k=0"):
        ev.eval_settings({"knn_k": 0})
    with pytest.raises(AecliError, match="eval.bogus is not an eval setting"):
        ev.eval_settings({"bogus": 1})


def test_iw_bound_tightens_with_more_samples(small_data):
    """A vae whose posterior is narrower than its decoder can explain (log-variance -3): the k-sample bound rises
    from the ELBO (k = 1) as k grows (Burda et al. 2015, Theorem 1)."""
    from aecli.models.vae import VAE

    torch.manual_seed(0)
    model = VAE(as_net({"name": "mlp", "hidden": [32], "activation": "relu"}), latent_dim=4).eval()
    model.init_output(small_data.train.mean_image())
    with torch.no_grad():
        model.encoder.out.bias[4:] = -3.0  # log sigma^2 of q(z|x)
    torch.manual_seed(0)
    bounds = {k: ev.likelihood_bounds(model, small_data.test, 64, k, chunk=50) for k in (1, 10, 200)}
    assert bounds[1]["iw_bound"] == pytest.approx(bounds[1]["elbo"])  # one sample: the bound is the ELBO
    iw = [bounds[k]["iw_bound"] for k in (1, 10, 200)]
    assert iw == sorted(iw) and iw[-1] > bounds[200]["elbo"] + 0.1


@pytest.mark.slow
def test_sample_modes_write_grids_of_the_right_shape(vae_run, tmp_path):
    from aecli.runs import load_trained as load_run
    from aecli.sampling import STEPS, interpolation_images, pick_pairs, sample_command

    run, _ = vae_run
    # save_grid draws 28-pixel images at 2x with 4-pixel padding, under a title line; traversals label each row
    from aecli.plots import GRID_FONT

    title = GRID_FONT + 12
    size = lambda rows, labels=0: (labels + STEPS * 56 + (STEPS + 1) * 4, title + rows * 56 + (rows + 1) * 4)  # noqa: E731
    path = sample_command(str(run), n=16, mode="interpolate", device="cpu", out=str(tmp_path / "i.png"))
    assert Image.open(path).size == size(2)
    path = sample_command(str(run), n=64, mode="traverse", device="cpu", out=str(tmp_path / "t.png"))
    width, height = Image.open(path).size  # 8 rows asked, one per latent dimension: latent_dim=4, each labelled
    assert height == size(4)[1] and width > size(4)[0] + 10
    with pytest.raises(AecliError, match="mode='sideways' is not allowed"):
        sample_command(str(run), mode="sideways", device="cpu")
    # the strip's ends are the reconstructions of the two test images
    model, _, _ = load_run(str(run), device="cpu")
    x, y = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(20) % 10
    strip = interpolation_images(model, x, y, rows=3, seed=5)
    a, b = pick_pairs(y, 3, False, torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.allclose(strip[::STEPS], model.reconstruct(x[a]), atol=1e-5)
        assert torch.allclose(strip[STEPS - 1::STEPS], model.reconstruct(x[b]), atol=1e-5)


CAPABILITY_KEYS = {  # declared capability -> the keys it adds
    "elbo": {"elbo", "iw_bound"}, "denoising": {"denoised_psnr", "noisy_psnr"},
    "sparse_code": {"mean_activation", "off_fraction"}, "native_prior": {"mmd"}, "conditional": {"label_acc"},
}


@pytest.mark.parametrize("name", MODELS)
def test_every_model_gets_the_metrics_its_capabilities_say(name, data_root, small_data):
    """Each model of conf/model, untrained (its code prior fitted), through `evaluate` on small sizes."""
    from hydra import compose, initialize_config_dir

    from aecli.config import build_model
    from aecli.prior_fit import fit_code_prior

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}", "net.hidden=[32,16]", "latent_dim=3"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    data = small_data
    fit_code_prior(model, data.train)
    s = ev.eval_settings({"test_images": 300, "probe_train_images": 300, "jacobian_images": 20, "iw_samples": 10,
                          "iw_images": 20, "mmd_images": 100, "frechet_images": 300, "label_samples": 10})
    out, (z, y) = ev.evaluate(model, data, s)
    expected = set(ALWAYS)
    for capability, keys in CAPABILITY_KEYS.items():
        if model.code_prior == "native" if capability == "native_prior" else getattr(model, capability):
            expected |= keys
    assert expected <= set(out), expected - set(out)
    unexpected = set().union(*CAPABILITY_KEYS.values()) - expected
    assert not unexpected & set(out)
    if name == "pca":  # z = V^T (x - m) with orthonormal V: J = V^T, ||J||_F = sqrt(latent_dim) for every x
        assert out["jacobian_fro"] == pytest.approx(math.sqrt(3), rel=1e-4)
    assert z.shape == (300, 3) and all(math.isfinite(v) for v in out.values() if isinstance(v, float) and v != math.inf)


def test_mmd_compares_posterior_samples_with_the_prior():
    """A vae whose posterior is N(0, I) for every image has an aggregate posterior equal to the prior: MMD^2 ~ 0.
    The posterior means (all 0) scored 0.03 against N(0, I) before: that compared the wrong distribution."""
    from aecli.data import Split
    from aecli.models.vae import VAE

    model = VAE(as_net({"name": "mlp", "hidden": [16], "activation": "relu"}), latent_dim=4).eval()
    with torch.no_grad():
        for p in model.encoder.parameters():
            p.zero_()  # mu = 0, logvar = 0: q(z|x) = N(0, I)
    split = Split(torch.randint(0, 256, (2000, 1, 28, 28), dtype=torch.uint8), torch.zeros(2000, dtype=torch.long))
    g = torch.Generator().manual_seed(0)
    z = ev.posterior_samples(model, split, 2000, g)
    prior = model.sample_prior(2000, generator=g)
    assert abs(ev.metrics.mmd_gaussian(z, prior)) < 0.003
    means = ev.encode_split(model, split, 2000)[0]
    assert ev.metrics.mmd_gaussian(means, prior) > 0.02


def test_the_cvae_code_under_evaluation_never_sees_the_label():
    """The probe and the kNN read the label-free code (the posterior mean averaged over all labels). On blank images
    all a code could know is the label: feeding the true label into the encoder, as before, lets a linear probe
    read it back perfectly; the label-free code leaves the probe at chance."""
    from aecli.data import Split
    from aecli.metrics import probe_accuracy
    from aecli.models.cvae import CVAE

    torch.manual_seed(0)
    model = CVAE(as_net({"name": "mlp", "hidden": [64], "activation": "relu"}), latent_dim=8).eval()
    g = torch.Generator().manual_seed(1)
    images = torch.zeros(3000, 1, 28, 28, dtype=torch.uint8)
    labels = torch.randint(0, 10, (3000,), generator=g)
    split = Split(images, labels)
    z, y = ev.encode_split(model, split, 3000)
    assert torch.equal(z, ev.encode_split(model, Split(images, labels.roll(1)), 3000)[0])  # labels never used
    label_free = probe_accuracy(z[:2000], y[:2000], z[2000:], y[2000:])
    x = images.float() / 255
    with torch.no_grad():
        leaky = model.encode(x, labels)
    leaked = probe_accuracy(leaky[:2000], y[:2000], leaky[2000:], y[2000:])
    assert label_free < 0.15 and leaked > 0.95, (label_free, leaked)


def prior_posterior_vae(a: torch.Tensor, b: torch.Tensor) -> VAE:
    """A VAE on 2x2 images with one latent whose encoder outputs mu = 0, logvar = 0 (q(z|x) = p(z) = N(0, 1)) and
    whose decoder gives pixel i the logit a_i z + b_i."""
    model = VAE(MLP(hidden=[], activation="tanh"), latent_dim=1, image_shape=(1, 2, 2)).eval()
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



def test_first_layer_filters_are_the_mlp_weight_rows():
    model = VAE(MLP(hidden=[30], activation="tanh"), latent_dim=2)
    w = ev.first_layer_weight(model)
    assert w is model.encoder.hidden[0].weight and w.shape == (30, 784)
    images = filter_images(w, (1, 28, 28), n=20)
    assert images.shape == (20, 1, 28, 28) and images.min() >= 0 and images.max() <= 1
    row = w[3].detach()
    assert torch.allclose(images[3].flatten(), 0.5 + 0.5 * row / row.abs().max())
    assert ev.first_layer_weight(VAE(Conv(channels=[8, 16]), latent_dim=2)) is None  # conv: no filters picture



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



@pytest.mark.slow
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


def test_every_evaluation_stage_says_what_it_does_and_its_time(small_data, caplog):
    """Not a terminal: one line per stage when it ends (on a terminal, a rich line for each), so a long evaluation
    is never silent."""
    torch.manual_seed(0)
    model = VAE(MLP(hidden=[32], activation="relu"), latent_dim=3).eval()
    s = ev.eval_settings({"test_images": 300, "probe_train_images": 300, "jacobian_images": 20, "iw_samples": 10,
                          "iw_images": 20, "mmd_images": 100, "frechet_images": 300})
    with caplog.at_level("INFO", logger="aecli"):
        ev.evaluate(model, small_data, s)
    stages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("eval: ")]
    for what in ("reconstructions and codes of 300 test images", "encoder Jacobian (20 images)",
                 "ELBO and IW bound (10 samples of each image)", "MMD of 100 posterior samples",
                 "linear probe and 5-NN on the codes of 300 training images", "Fréchet distance of 300 samples"):
        assert any(line.startswith(f"eval: {what}") and line.endswith("s") for line in stages), (what, stages)


def test_a_stage_on_a_terminal_is_a_rich_line_that_fills():
    from aecli.progress import StageProgress

    with StageProgress("eval: counting", total=4, bar=True) as bar:
        assert bar._progress.live.is_started
        for _ in range(4):
            bar.advance()
    assert bar._progress.tasks[0].completed == 4 and bar._progress.tasks[0].finished
    assert not bar._progress.live.is_started  # stopped: the line stays, ticked


def test_a_dozen_labelled_images_evaluate_without_a_nan_or_a_traceback(tmp_path):
    """Twelve labelled images leave one test image: the Fréchet distance (a covariance) ended in LinAlgError and the
    MMD in nan. Every number is finite now, and what one image cannot give is skipped with its reason."""
    import json

    import numpy as np

    from aecli.api import train

    g = np.random.default_rng(0)
    np.savez(tmp_path / "dozen.npz", x=(g.random((12, 16, 16)) > 0.5).astype(np.float32), y=np.arange(12) % 3)
    threads = torch.get_num_threads()
    try:
        run = train(["data=images", f"data.path={tmp_path / 'dozen.npz'}", "epochs=1", "net.hidden=[16]",
                     "latent_dim=2", "device=cpu", "trainer.num_threads=1", "trainer.progress=lines",
                     "eval.finetune_epochs=2", f"eval.cache_dir={tmp_path / 'cache'}"], tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    record = json.loads((run / "eval.json").read_text())
    numbers = {k: v for k, v in record.items() if isinstance(v, float)}
    assert numbers and all(math.isfinite(v) for v in numbers.values()), numbers
    assert set(record["skipped"]) == {"mmd", "frechet"} and "at least 2 test images" in record["skipped"]["mmd"]
    assert 0 <= record["finetune_acc"] <= 1 and 0 <= record["scratch_acc"] <= 1  # fine-tuned on the few there are


def test_the_table_shows_the_parzen_estimate_with_its_error_and_the_fine_tuning_beside_its_floor(capsys,
                                                                                                  monkeypatch):
    """The AAE's paper number, parzen_ll, was in eval.json but not in the table an evaluation prints."""
    monkeypatch.setenv("COLUMNS", "200")
    ev.print_table({"parzen_ll": 331.11, "parzen_se": 1.629, "finetune_acc": 0.9851, "scratch_acc": 0.9802}, "t")
    out = capsys.readouterr().out
    assert "331.1 ± 1.629" in out and "0.9802 (from scratch)" in out
    assert ev.headline({"test_parzen_ll": 331.11, "test_recon_bce": 87.5}) == "recon_bce 87.5, parzen_ll 331.1"


def test_an_evaluation_with_other_settings_writes_a_file_of_its_own():
    """`aecli eval run=... finetune_epochs=100` (or iw_samples, seed, another checkpoint) never replaces eval.json."""
    best, last = Path("checkpoints/best.pt"), Path("checkpoints/last.pt")
    assert ev.eval_file(best, True, None, 0) == "eval.json"
    assert ev.eval_file(best, True, None, 0, 100) == "eval_best_seed0_ft100.json"
    assert ev.eval_file(last, False, 5000, 3, 10) == "eval_last_seed3_iw5000_ft10.json"
