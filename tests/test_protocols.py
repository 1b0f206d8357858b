"""The protocols that put aecli's numbers next to the papers' (docs/eval.md, docs/results.md), on constructed cases:
binarization (its mean is the pixel intensity; dynamic draws resume exactly), the IWAE schedule and the paper
experiments' configs. (The IW bound, the Parzen window, the contraction curve, the filters and eval.protocol=paper
are tested beside their modules: test_evaluate.py, test_parzen.py, test_metrics.py, test_models_vae.py.)"""

from __future__ import annotations

import types

import pytest
import torch
from hydra import compose, initialize_config_dir

import aecli.train as train_mod
from aecli import evaluate as ev
from aecli.cli import config_dir
from aecli.data import BINARIZE_SEEDS, DynamicBinarization, Split, binarize_once, binarized_splits
from aecli.datasets.mnist import MNIST
from aecli.train import Interrupted, Trainer
from conftest import run_cli, tiny_overrides

LEVELS = torch.tensor([0, 1, 64, 128, 200, 254, 255], dtype=torch.uint8)


# -- binarization ---------------------------------------------------------------------------------------
def grey_images(n: int = 2000) -> torch.Tensor:
    """n images [n, 1, 1, 7]: each pixel one of LEVELS."""
    return LEVELS.view(1, 1, 1, -1).repeat(n, 1, 1, 1)


def test_dynamic_binarization_is_binary_and_its_mean_is_the_pixel_intensity():
    split = Split(grey_images(), None, DynamicBinarization(torch.device("cpu"), seed=0))
    idx = torch.arange(len(split))
    draws = torch.stack([split.batch(idx)[0] for _ in range(20)])  # 40,000 draws of each level
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    p = LEVELS.double() / 255
    mean = draws.double().mean((0, 1, 2, 3))
    se = (p * (1 - p) / draws[..., 0].numel()).sqrt()
    assert (mean - p).abs().max() <= 4 * se.max() + 1e-12, (mean, p)
    assert mean[0] == 0 and mean[-1] == 1  # black stays black, white stays white
    assert not torch.equal(split.batch(idx)[0], split.batch(idx)[0])  # a fresh draw for every batch


def test_dynamic_draws_follow_the_seed_and_its_state():
    a, b = (DynamicBinarization(torch.device("cpu"), seed=3) for _ in range(2))
    x = grey_images(10).float() / 255
    assert torch.equal(a(x), b(x))
    state = a.state_dict()
    first = a(x)
    a.load_state_dict(state)
    assert torch.equal(a(x), first) and not torch.equal(a(x), first)


def test_static_binarization_is_fixed_and_its_mean_is_the_pixel_intensity():
    images = grey_images(20000)
    once = binarize_once(images, seed=5)
    assert torch.equal(once, binarize_once(images, seed=5)) and not torch.equal(once, binarize_once(images, seed=6))
    assert set(once.unique().tolist()) == {0, 255}
    p = LEVELS.double() / 255
    mean = once.double().div(255).mean((0, 1, 2))
    assert (mean - p).abs().max() <= 4 * (0.25 / len(images)) ** 0.5


def test_binarized_splits_share_their_fixed_images_and_only_dynamic_training_varies():
    images, test = grey_images(300), grey_images(50)
    cpu = torch.device("cpu")
    static = binarized_splits(images, None, (test, None), 100, None, cpu, "static")
    dynamic = binarized_splits(images, None, (test, None), 100, 150, cpu, "dynamic")
    for name in ("val", "test"):  # the same fixed draws under both modes
        assert torch.equal(static[name].images, dynamic[name].images)
        assert static[name].binarizer is None and dynamic[name].binarizer is None
    assert torch.equal(static["train_all"].images, dynamic["fixed_train"].images)  # what evaluation reads
    assert torch.equal(static["val"].images, binarize_once(images, BINARIZE_SEEDS["train"])[200:])
    assert dynamic["train"].binarizer is dynamic["train_all"].binarizer and len(dynamic["train"]) == 150
    assert torch.equal(dynamic["train_all"].images, images[:200])  # grey levels, drawn per batch
    none = binarized_splits(images, None, (test, None), 100, None, cpu, "none")
    assert torch.equal(none["val"].images, images[200:]) and none["binarize"] == "none"


def test_mnist_binarized_keys_and_evaluation_view(data_root):
    grey = MNIST(root=str(data_root), download=False, val_size=5000).load(torch.device("cpu"))
    data = MNIST(root=str(data_root), download=False, val_size=5000, binarize="dynamic").load(torch.device("cpu"))
    assert (grey.key, data.key, data.binarize) == ("mnist", "mnist_binarized", "dynamic")
    idx = torch.arange(len(data.train))
    assert not torch.equal(data.train.batch(idx[:100])[0], data.train.batch(idx[:100])[0])
    assert torch.equal(data.val.batch(idx[:100])[0], data.val.batch(idx[:100])[0])
    fixed = data.evaluation()
    assert fixed.train_all.binarizer is None and torch.equal(fixed.train_all.batch(idx[:100])[0],
                                                             fixed.train_all.batch(idx[:100])[0])
    # the binary data's mean image is the grey data's: E[x_bin] = x
    assert (fixed.train_all.mean_image() - grey.train_all.mean_image()).abs().max() < 0.02


def test_a_bad_binarize_is_one_line(data_root, tmp_path):
    r = run_cli("train", *tiny_overrides(data_root), "data.binarize=yes", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "data.binarize='yes' is not allowed: data.binarize must be one of none, dynamic, static" in r.stderr


def test_resumed_dynamic_run_equals_uninterrupted(data_root, tmp_path, monkeypatch):
    """The binary draws continue where they stopped: mid-epoch and at an epoch's end (tests/test_resume.py's check)."""
    data = MNIST(root=str(data_root), download=False, limit=256, val_size=128,
                 binarize="dynamic").load(torch.device("cpu"))
    monkeypatch.setattr(train_mod, "build_dataset", lambda cfg: types.SimpleNamespace(load=lambda device: data))
    threads = torch.get_num_threads()

    def cfg(**extra):
        over = tiny_overrides(data_root, **{"data.limit": 256, "batch_size": 64, "epochs": 2, "data.val_size": 128,
                                            "trainer.progress": "lines", "data.binarize": "dynamic", **extra})
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(config_name="config", overrides=over)

    try:
        alone = Trainer(cfg(), tmp_path / "alone")
        alone.fit()
        for stop_at in (3, 4):
            run_dir = tmp_path / f"resumed{stop_at}"
            first = Trainer(cfg(), run_dir)
            first.stop_at_step = stop_at
            with pytest.raises(Interrupted):
                first.fit()
            data.train.batch(torch.arange(64))  # draws between the runs must not matter
            second = Trainer.resume(cfg(resume=str(run_dir)), run_dir, [])
            second.fit()
            for k, v in alone.model.state_dict().items():
                assert torch.equal(v, second.model.state_dict()[k]), (stop_at, k)
            assert [r["val_loss"] for r in second.state.rows] == [r["val_loss"] for r in alone.state.rows]
        other = Trainer(cfg(seed=1), tmp_path / "seed1")  # another seed draws other binary images
        other.fit()
        assert not torch.equal(other.model.state_dict()["encoder.out.weight"],
                               alone.model.state_dict()["encoder.out.weight"])
    finally:
        torch.set_num_threads(threads)


# -- the IW bound -------------------------------------------------------------------------------------------


# -- the Parzen window ------------------------------------------------------------------------------------


# -- the contraction curve and the filters -----------------------------------------------------------------


# -- eval.protocol=paper --------------------------------------------------------------------------------


# -- the reproductions' configs ----------------------------------------------------------------------------
def test_iwae_schedule_is_burdas():
    """lr * 10^(-i/7) for 3^i epochs, i = 0..7: 3,280 epochs (Burda et al. 2015, Sec. 5)."""
    from aecli.schedule import LrSchedule, iwae_stage

    ends = [sum(3 ** j for j in range(i + 1)) for i in range(8)]  # 1, 4, 13, ..., 3280
    assert ends[-1] == 3280
    for i, end in enumerate(ends):
        assert iwae_stage(end) == i and iwae_stage(end + 1) == i + 1
    assert LrSchedule("iwae").factor(step=1, epoch=5) == pytest.approx(10 ** (-2 / 7))


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
    if name in ("paper_ae_mnist", "paper_cae_mnist", "paper_dae_mnist"):  # Rifai et al.'s models: W' = W^T, sigmoid
        assert (cfg.model.tied, cfg.model.code_activation, list(cfg.net.hidden)) == (True, "sigmoid", [])
        assert model.decoder.out.weight is model.encoder.out.weight
    if name == "paper_iwae_mnist":
        assert cfg.model.iw_samples == 5 and cfg.data.binarize == "dynamic"
    if name == "paper_aae_mnist":
        assert (cfg.model.prior_std, cfg.latent_dim, list(cfg.net.hidden)) == (5.0, 8, [1200, 1200])


# -- the paper classifier and what an evaluation records -----------------------------------------------------


