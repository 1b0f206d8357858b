"""Every model learns: a model that runs is not a model that learns.

Each model x net at the model's own defaults trains for a short budget on real MNIST images and must end well
below the mean image's reconstruction cost; a model whose codes carry nothing (the sigmoid-code collapse this
suite once missed: val_recon 213 against the mean image's 213) fails here. The budget: 2 epochs of 4,000
images at batch 64 (125 steps) on the default mlp and a half-width conv (16, 32 channels); measured, the worst
model ends at 0.76 of the mean image's val_recon, so LEARNED = 0.85 leaves a margin of 0.09.
"""

from __future__ import annotations


import pytest
import torch
from hydra import compose, initialize_config_dir

from aecli.config import build_model
from aecli.models.base import bernoulli_nll_of_probs
from aecli.health import mean_image_recon
from aecli.loop import Trainer
from conftest import MODELS, NETS, REPO, load_data

LEARNED = 0.85  # val_recon at most this fraction of the mean image's after the budget
BUDGET = {"data.limit": 4000, "data.val_size": 1000, "epochs": 2, "batch_size": 64}
SMALL_NET = {"conv": ["net.channels=[16,32]"]}  # the conv cae's exact Jacobian costs 16 backward passes a step


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture(scope="module")
def budget_data(data_root):
    return load_data("mnist", data_root, limit=BUDGET["data.limit"], val_size=BUDGET["data.val_size"])


def trained(model_overrides: list[str], net: str, data, data_root, tmp_path) -> Trainer:
    cfg = compose_cfg([f"data.root={data_root}", *(f"{k}={v}" for k, v in BUDGET.items()), f"net={net}",
                       *SMALL_NET.get(net, []), *model_overrides, "device=cpu", "eval.at_end=false",
                       "trainer.num_threads=1"])
    trainer = Trainer(cfg, tmp_path, data=data)
    trainer.fit()
    return trainer


@pytest.mark.slow  # two epochs of every model on 4,000 images
@pytest.mark.real_data  # the margin was measured on real digits
@pytest.mark.parametrize("net", NETS)
@pytest.mark.parametrize("model", [*MODELS, "ae-sigmoid"])
def test_every_model_learns(model, net, budget_data, data_root, tmp_path):
    """The reconstruction beats the mean image by a margin, and the last epoch flags no collapse, at the model's
    defaults (ae-sigmoid: the ae with a sigmoid code, which stayed at the mean image before the decoder started
    there). An early epoch may flag a passing collapse (a vae's KL under 1 nat after 62 steps): that is true then."""
    overrides = ["model=ae", "model.code_activation=sigmoid"] if model == "ae-sigmoid" else [f"model={model}"]
    trainer = trained(overrides, net, budget_data, data_root, tmp_path)
    baseline = mean_image_recon(budget_data.val, budget_data.train.mean_image())
    last = trainer.state.rows[-1]
    assert last["val_recon"] <= LEARNED * baseline, (last["val_recon"], baseline)
    assert last["collapse"] == "", last["collapse"]


def test_a_fresh_decoder_reconstructs_the_mean_image(budget_data):
    """init_output starts every model's decoder at the training split's mean image: its output bias holds the
    mean's logits, and the first reconstruction costs about the mean image's 212 nats, not a gray image's 544."""
    mean = budget_data.train.mean_image()
    baseline = mean_image_recon(budget_data.val, mean)
    x, y = budget_data.val.batch(torch.arange(500))
    for model in (m for m in MODELS if m != "pca"):  # pca: fitted in closed form, no decoder to start
        for net in NETS:
            torch.manual_seed(0)
            m = build_model(compose_cfg([f"model={model}", f"net={net}"])).eval()
            m.init_output(mean)
            bias = m.decoder.out.bias if net == "mlp" else m.decoder.bias
            torch.testing.assert_close(bias.detach().view(-1), m.mean_logits(mean).view(-1))
            with torch.no_grad():
                recon = bernoulli_nll_of_probs(m.reconstruct(x, y), x).mean().item()
            assert recon == pytest.approx(baseline, rel=0.1), (model, net, recon, baseline)
