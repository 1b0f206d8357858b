"""aecli.finetune: the encoder fine-tuned with a softmax layer on the labels (Rifai et al. 2011's Table 1 protocol),
on real MNIST images, and through `evaluate` with eval.finetune_epochs."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from aecli import evaluate as ev
from aecli.config import build_model
from aecli.finetune import finetune
from aecli.prior_fit import fit_code_prior
from conftest import REPO, load_data


@pytest.fixture(scope="module")
def data(data_root):
    """300 training, 100 validation and 10000 test images of MNIST."""
    return load_data("mnist", data_root, limit=300, val_size=100)


def cae(hidden: int = 64):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["model=cae", "net.hidden=[]", f"latent_dim={hidden}"])
    torch.manual_seed(0)
    return build_model(cfg).eval()


def test_no_epoch_scores_the_zero_softmax_layer(data):
    """The new softmax layer starts at zero: every logit equal, every image given class 0. With no epoch of
    fine-tuning the test accuracy is the fraction of test images labelled 0."""
    test = data.test.head(1000)
    out = finetune(cae(), data.train, data.val, test, 10, epochs=0, lr=0.05)
    assert out["epoch"] == 0 and out["acc"] == pytest.approx((test.labels == 0).float().mean().item())


def test_fine_tuning_learns_the_labels_and_leaves_the_run_untouched(data):
    """20 epochs on 300 images (60 steps) take the classifier from chance to well above it; the run's model is a copy's
    starting point only: its weights do not change."""
    model = cae()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = finetune(model, data.train, data.val, data.test.head(2000), 10, epochs=20, lr=0.5)
    assert out["acc"] > 0.6 and 1 <= out["epoch"] <= 20  # chance: 0.1
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_epoch_kept_is_the_network_of_that_epoch(data):
    """Early stopping keeps the weights of the epoch of best validation accuracy: the same fine-tuning stopped at
    that epoch scores the same test accuracy (lr 1.0 makes later epochs worse, so the best comes early)."""
    test = data.test.head(2000)
    longer = finetune(cae(), data.train, data.val, test, 10, epochs=5, lr=1.0, seed=3)
    stopped = finetune(cae(), data.train, data.val, test, 10, epochs=longer["epoch"], lr=1.0, seed=3)
    assert stopped["epoch"] == longer["epoch"] and stopped["acc"] == longer["acc"]


def test_evaluate_reports_the_fine_tuned_and_the_scratch_accuracy_once_cached(data, tmp_path):
    """eval.finetune_epochs=1: eval.json's finetune_acc and finetune_epoch, and scratch_acc, the same network from a
    random start, computed once per data set and architecture (floors.json)."""
    model = cae(16)
    fit_code_prior(model, data.train)
    s = ev.eval_settings({"test_images": 300, "probe_train_images": 300, "jacobian_images": 20,
                          "frechet_images": 300, "finetune_epochs": 1, "cache_dir": str(tmp_path)})
    out, _ = ev.evaluate(model, data, s)
    assert {"finetune_acc", "finetune_epoch", "scratch_acc"} <= set(out) and 0.1 < out["finetune_acc"] <= 1
    floors = json.loads((tmp_path / "floors.json").read_text())
    assert [v["scratch_acc"] for k, v in floors.items() if " scratch CAE " in k] == [out["scratch_acc"]]
    assert "finetune_acc" not in ev.evaluate(model, data, ev.eval_settings({**s.__dict__, "finetune_epochs": 0}))[0]


def test_the_scratch_network_is_cached_per_network_not_per_run(data, tmp_path):
    """Two cae runs that differ only in lambda share the from-scratch number; an ae with another code activation
    (the same parameter shapes, another network) gets its own."""
    calls = []

    def fake_finetune(model, **kwargs):
        calls.append(type(model).__name__)
        return {"acc": 0.5, "epoch": 1, "val_acc": 0.5}

    s = ev.eval_settings({"finetune_epochs": 1})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ev, "finetune", fake_finetune)
        for overrides in (["model=cae", "lambda=1"], ["model=cae", "lambda=10"], ["model=ae"],
                          ["model=ae", "model.code_activation=sigmoid"]):
            with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
                cfg = compose("config", overrides=[*overrides, "net.hidden=[]", "latent_dim=8"])
            ev.fine_tuned(build_model(cfg), data, s, 0, tmp_path)
    assert len(calls) == 4 + 3  # each run fine-tuned once; from scratch: cae once, ae once per code activation
