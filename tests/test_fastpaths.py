"""The fast paths give the losses of the plain path: device-accumulated means, the fused optimizer, bf16 autocast,
torch.compile, the direct IDX reader, and a start-up that imports nothing heavy before it is needed.

Never timings (those are benchmarks/throughput.py's job); on a GPU, the hot loop also makes no host sync.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from aecli.cli import config_dir
from aecli.models.base import make_optimizer
from aecli.train import Trainer

from conftest import CUDA, REPO, load_data, tiny_overrides


def compose_tiny(data_root, **kw):
    # 256 images in batches of 64: four steps an epoch
    over = tiny_overrides(data_root, **{"data.limit": 256, "batch_size": 64, "data.val_size": 128,
                                        "trainer.progress": "lines", **kw})
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=over)


@pytest.fixture(scope="module")
def shared_data(data_root):
    return load_data("mnist", data_root, torch.device("cpu"), download=False, limit=256, val_size=128)


def trainer_on(shared_data, cfg, tmp_path, name="run") -> Trainer:
    threads = torch.get_num_threads()
    trainer = Trainer(cfg, tmp_path / name, data=shared_data)
    torch.set_num_threads(threads)  # tiny_overrides asks for one thread; leave the session as it was
    return trainer


def one_epoch(trainer: Trainer, record: list | None = None) -> dict[str, float]:
    """Train one epoch; with `record`, also keep every step's terms read on the host (the plain path)."""
    if record is not None:
        step = trainer.model.train_step

        def recording(x, y, optimizers, grad_clip=None):
            terms = step(x, y, optimizers, grad_clip)
            record.append({k: v.item() for k, v in terms.items()})
            return terms
        trainer.model.train_step = recording
    trainer.state.epoch += 1
    trainer.model.on_epoch_start(trainer.state.epoch)
    means, _ = trainer.train_epoch()
    return means


@pytest.mark.parametrize("model", ["vae", "aae"])
def test_device_accumulated_means_equal_the_mean_of_per_step_items(model, data_root, shared_data, tmp_path):
    # the loop sums terms on the device and reads them once an epoch; a seed reads .item() every step
    trainer = trainer_on(shared_data, compose_tiny(data_root, model=model), tmp_path)
    steps: list[dict] = []
    means = one_epoch(trainer, steps)
    assert len(steps) == 4 and set(means) == set(steps[0])
    for k in means:
        plain = sum(s[k] for s in steps) / len(steps)
        assert means[k] == pytest.approx(plain, rel=1e-6, abs=1e-6), k
    assert steps[0]["loss"] != steps[-1]["loss"]  # the steps differ: the mean is not one value repeated


def test_fused_adamw_follows_the_plain_loop(data_root, shared_data):
    # the fused CPU kernel (make_optimizer's choice) against torch's default single-tensor loop, 20 steps
    x = shared_data.train.batch(torch.arange(64))[0]
    losses = {}
    for name, fused in (("plain", False), ("fused", True)):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.LeakyReLU(),
                                  torch.nn.Linear(64, 784))
        opt = (make_optimizer(net.parameters(), 1e-3, "adamw", 0.01) if fused else
               torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01, foreach=False, fused=False))
        assert bool(opt.defaults["fused"]) == fused
        trace = []
        for _ in range(20):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), x.flatten(1))
            loss.backward()
            opt.step()
            trace.append(loss.item())
        losses[name] = torch.tensor(trace)
    assert losses["plain"][-1] < 0.8 * losses["plain"][0]  # it learns
    torch.testing.assert_close(losses["fused"], losses["plain"], rtol=1e-5, atol=1e-6)


def test_bf16_autocast_gives_the_fp32_losses_within_bf16_precision(data_root, shared_data, tmp_path):
    means = {}
    for precision in ("fp32", "bf16"):
        trainer = trainer_on(shared_data, compose_tiny(data_root, **{"trainer.precision": precision}),
                             tmp_path, precision)
        means[precision] = one_epoch(trainer)
    for k in ("loss", "recon"):
        # bf16 keeps 8 bits of mantissa: the matmuls differ by ~0.4%, the losses by a little less
        assert means["bf16"][k] == pytest.approx(means["fp32"][k], rel=0.02), k
    assert means["bf16"]["loss"] != means["fp32"]["loss"]  # autocast did run in bf16


def test_compiled_loss_gives_the_eager_losses(data_root, shared_data, tmp_path, monkeypatch):
    # trainer.compile=true wraps the model's loss in torch.compile. Inductor's C++ code generation takes
    # minutes on this 2-core CPU, so the test compiles with the aot_eager backend: Dynamo's trace and
    # AOTAutograd's forward/backward graphs (what compile changes in the step), the same RNG stream.
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(compile_, backend="aot_eager", dynamic=False))
    means, states = {}, {}
    for flag in ("false", "true"):
        torch._dynamo.reset()
        trainer = trainer_on(shared_data, compose_tiny(data_root, **{"trainer.compile": flag}), tmp_path, flag)
        assert ("loss" in vars(trainer.model)) == (flag == "true")  # the instance's loss is the compiled one
        means[flag] = one_epoch(trainer)
        states[flag] = trainer.model.state_dict()
    assert states["true"].keys() == states["false"].keys()  # checkpoints do not change shape
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the step ran through a compiled graph
    for k in means["false"]:
        assert means["true"][k] == pytest.approx(means["false"][k], rel=1e-5, abs=1e-5), k
    for k in states["false"]:
        torch.testing.assert_close(states["true"][k], states["false"][k], rtol=1e-4, atol=1e-5)


def test_direct_idx_read_equals_torchvision(data_root):
    from torchvision.datasets import FashionMNIST, MNIST

    from aecli.datasets.fashion_mnist import FashionMNIST as OurFashion
    from aecli.datasets.mnist import MNIST as OurMNIST

    for ours, cls in ((OurMNIST, MNIST), (OurFashion, FashionMNIST)):
        name = ours.name
        official = ours(root=str(data_root), download=False).read_official()
        (x, y), (x_test, y_test) = official["train"], official["test"]
        x, x_test = x.squeeze(1), x_test.squeeze(1)
        train, test = cls(str(data_root), train=True), cls(str(data_root), train=False)
        assert torch.equal(x, train.data) and torch.equal(y, train.targets), name
        assert torch.equal(x_test, test.data) and torch.equal(y_test, test.targets), name
        assert x.dtype == torch.uint8 and y.dtype == torch.int64


def test_start_up_imports_nothing_heavy_before_the_first_step(data_root):
    # what a run imports before its first step: the config, the model, the data. Not torchvision (only a
    # download needs it), not matplotlib (the loss plot at the end), not rich (only a terminal's bar).
    code = f"""
import sys
from hydra import compose, initialize_config_dir
from aecli.cli import config_dir
from aecli.train import Trainer
with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
    cfg = compose(config_name="config", overrides={tiny_overrides(data_root)!r})
trainer = Trainer(cfg, {str(data_root / "unused-run")!r})
heavy = [m for m in ("torchvision", "matplotlib", "rich", "PIL", "pandas", "scipy") if m in sys.modules]
print("HEAVY", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY []" in out.stdout, out.stdout


@CUDA
@pytest.mark.parametrize("model", ["vae", "aae"])
def test_cuda_hot_loop_makes_no_host_sync(model, data_root, tmp_path):
    # data, batch order, the fused optimizer and the running sums all stay on the GPU: a sync would raise
    cfg = compose_tiny(data_root, model=model, device="cuda", **{"trainer.precision": "bf16"})
    trainer = Trainer(cfg, tmp_path / model)
    assert trainer.data.train.images.is_cuda
    sums: dict[str, torch.Tensor] = {}
    batches = iter(trainer.batcher)
    first = next(batches)  # the epoch's permutation is drawn here, once an epoch: outside the steps
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for idx in [first, *batches]:
            x, y = trainer.data.train.batch(idx)
            with trainer.autocast():
                terms = trainer.model.train_step(x, y, trainer.optimizers)
            for k, v in terms.items():
                sums[k] = sums[k] + v.float() if k in sums else v.float()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert torch.isfinite(sums["loss"]).item()


@CUDA
def test_cuda_fast_paths_give_the_plain_losses(data_root, tmp_path):
    means = {}
    for name, extra in (("plain", {}), ("bf16", {"trainer.precision": "bf16"}),
                        ("compiled", {"trainer.compile": "true"})):
        trainer = Trainer(compose_tiny(data_root, device="cuda", **extra), tmp_path / name)
        assert all(o.defaults["fused"] for o in trainer.optimizers.values())
        means[name] = one_epoch(trainer)
    for name in ("bf16", "compiled"):  # inductor draws its own random numbers: a tolerance, not equality
        assert means[name]["loss"] == pytest.approx(means["plain"]["loss"], rel=0.03), name
