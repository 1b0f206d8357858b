"""The contract every model meets (aecli/models/base.py): each model x net trains, is measured alike and samples."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from aecli.sampling import draw_samples
from aecli.loop import Trainer
from conftest import MODELS, NETS, REPO, load_data, tiny_overrides

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


def compose_cfg(overrides: list[str]):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides)


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
    # val_recon is the same measure for every model: the Bernoulli NLL of the mean reconstruction, here computed
    # apart from the trainer (float64, all validation images at once, torch's own cross-entropy)
    x, y = shared_data.val.batch(torch.arange(len(shared_data.val)))
    with torch.no_grad():
        probs = trainer.model.eval().reconstruct(x, y).double().clamp(1e-6, 1 - 1e-6)
    nats = F.binary_cross_entropy(probs, x.double(), reduction="sum").item() / len(x)
    assert trainer.state.rows[-1]["val_recon"] == pytest.approx(nats, rel=1e-5)
    images, nrow = draw_samples(trainer.model, 20, seed=0)
    assert images.shape[1:] == (1, 28, 28) and torch.isfinite(images).all()
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0
    assert len(images) == 20 and (nrow == 2 if model == "cvae" else True)  # cvae: one row per class


def test_sgd_is_momentum_0_9_in_closed_form():
    """trainer.optimizer=sgd: with a constant gradient c, v1 = c and v2 = 0.9 c + c, so after two steps
    p = p0 - lr (1 + 1.9) c (weight decay 0)."""
    from aecli.models.base import make_optimizer

    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    c = torch.tensor([0.5, 3.0])
    opt = make_optimizer([p], 0.1, "sgd")
    for _ in range(2):
        opt.zero_grad()
        (c * p).sum().backward()
        opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, -2.0]) - 0.1 * 2.9 * c)
