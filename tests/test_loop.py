"""The trainer's numbers: epoch means weighted by images, divergence caught like a NaN, collapse said and kept,
and the optimized metric a sweep receives."""

from __future__ import annotations

import csv
import functools
import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from aecli.paths import config_dir
from aecli.errors import AecliError
from aecli.models.base import bernoulli_nll, make_optimizer
from aecli.job import optimized_value
from aecli.loop import Trainer

from conftest import CUDA, load_data, run_cli, tiny_overrides


def compose_tiny(data_root, **kw):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=tiny_overrides(data_root, **kw))


@pytest.fixture(scope="module")
def odd_data(data_root):
    """513 training images: batches of 128, 128, 128, 128 and 1."""
    return load_data("mnist", data_root, torch.device("cpu"), download=False, limit=513, val_size=256)


def trainer_on(data, cfg, path) -> Trainer:
    return Trainer(cfg, path, data=data)


def test_epoch_means_weigh_every_image_once(data_root, odd_data, tmp_path):
    """train_loss is the mean over images: a last batch of one image counts 1/513, not 1/5 (the mean of the
    five batch means was off by several nats here). lr=1e-12 keeps the weights, so each image's loss is known."""
    trainer = trainer_on(odd_data, compose_tiny(data_root, model="ae", lr=1e-12, **{"net.hidden": "[32]"}), tmp_path)
    batches = []
    step = trainer.model.train_step
    trainer.model.train_step = lambda x, y, opts, clip: batches.append(len(x)) or step(x, y, opts, clip)
    trainer.fit()
    assert batches == [128, 128, 128, 128, 1]
    x, _ = odd_data.train.batch(torch.arange(513))
    with torch.no_grad():
        per_image = bernoulli_nll(trainer.model.decode(trainer.model.encode(x)), x)
    assert trainer.state.rows[0]["train_loss"] == pytest.approx(per_image.mean().item(), rel=1e-5)


@pytest.mark.slow
def test_collapse_is_said_and_kept_in_metrics_and_status(data_root, tmp_path):
    """A run whose code says nothing (lr 1e-7: nothing moves) warns at each epoch end and records the symptom in
    metrics.csv and status.json."""
    proc = run_cli("train", *tiny_overrides(data_root, model="ae", lr=1e-7, epochs=2), "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    assert out.count("collapse after epoch") == 2 and "no better than the mean image" in out
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert [r["collapse"] for r in rows] == ["mean_image", "mean_image"]
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "ok" and len(status["warnings"]) == 2 and "epoch 2:" in status["warnings"][1]
    assert status["optimized"] == {"val_recon": pytest.approx(float(rows[-1]["val_recon"]))}


def test_optimized_metric_is_read_at_the_best_epoch_and_checked_before_training(data_root, tmp_path):
    rows = [{"epoch": 1, "val_loss": 5.0, "val_recon": 9.0}, {"epoch": 2, "val_loss": 4.0, "val_recon": 9.5}]
    assert optimized_value("val_recon", rows, 2, {}) == 9.5  # the best checkpoint's epoch, not the smallest value
    assert optimized_value("test_probe_acc", rows, 2, {"test_probe_acc": 0.9}) == 0.9
    assert optimized_value("test_probe_acc", rows, 2, {}) is None
    with pytest.raises(AecliError, match="optimized_metric=test_probe_acc .* eval.at_end=true"):
        Trainer(compose_tiny(data_root, optimized_metric="test_probe_acc"), tmp_path)
    with pytest.raises(AecliError, match="optimized_metric=test_nope is not a test metric"):
        Trainer(compose_tiny(data_root, optimized_metric="test_nope", **{"eval.at_end": "true"}), tmp_path)
    trainer = Trainer(compose_tiny(data_root, model="vae", optimized_metric="val_kld"), tmp_path / "run")
    with pytest.raises(AecliError, match="optimized_metric=val_kld is not a column this model writes: allowed "
                                         "val_recon, val_loss, train_loss, val_kl"):
        trainer.fit()
    assert not (tmp_path / "run" / "metrics.csv").exists()  # refused before the first epoch


def test_an_epoch_hook_runs_after_the_row_and_last_pt_and_its_pruned_goes_out_untouched(data_root, odd_data, tmp_path):
    """A search's pruner raises Pruned from an epoch hook: each hook runs with the epoch's row in metrics.csv and
    its last.pt on disk (checkpoint_every_s waits for no hook), and fit() lets the very exception out."""
    from aecli.checkpoint import load_checkpoint
    from aecli.errors import Pruned

    seen, stop = [], Pruned("trial 3 pruned at epoch 2")

    def pruner(row):
        seen.append((row["epoch"], len((tmp_path / "metrics.csv").read_text().splitlines()) - 1,
                     load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"]))
        if row["epoch"] == 2:
            raise stop

    cfg = compose_tiny(data_root, model="ae", epochs=4, **{"trainer.checkpoint_every_s": 1e9})
    with pytest.raises(Pruned) as e:
        Trainer(cfg, tmp_path, data=odd_data, epoch_hooks=[lambda row: None, pruner]).fit()
    assert e.value is stop
    assert seen == [(1, 1, 1), (2, 2, 2)]


# -- the fast paths give the losses of the plain path: device-accumulated means, the fused optimizer, bf16
# autocast, torch.compile; on a GPU the hot loop makes no host sync (never timings: benchmarks/throughput.py) ---
def compose_four_steps(data_root, **kw):
    # 256 images in batches of 64: four steps an epoch
    over = tiny_overrides(data_root, **{"data.limit": 256, "batch_size": 64, "data.val_size": 128,
                                        "trainer.progress": "lines", **kw})
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=over)


@pytest.fixture(scope="module")
def four_steps_data(data_root):
    return load_data("mnist", data_root, torch.device("cpu"), download=False, limit=256, val_size=128)


def trainer_of(four_steps_data, cfg, tmp_path, name="run") -> Trainer:
    threads = torch.get_num_threads()
    trainer = Trainer(cfg, tmp_path / name, data=four_steps_data)
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
def test_device_accumulated_means_equal_the_mean_of_per_step_items(model, data_root, four_steps_data, tmp_path):
    # the loop sums terms on the device and reads them once an epoch; a seed reads .item() every step
    trainer = trainer_of(four_steps_data, compose_four_steps(data_root, model=model), tmp_path)
    steps: list[dict] = []
    means = one_epoch(trainer, steps)
    assert len(steps) == 4 and set(means) == set(steps[0])
    for k in means:
        plain = sum(s[k] for s in steps) / len(steps)
        assert means[k] == pytest.approx(plain, rel=1e-6, abs=1e-6), k
    assert steps[0]["loss"] != steps[-1]["loss"]  # the steps differ: the mean is not one value repeated


def test_fused_adamw_follows_the_plain_loop(data_root, four_steps_data):
    # the fused CPU kernel (make_optimizer's choice) against torch's default single-tensor loop, 20 steps
    x = four_steps_data.train.batch(torch.arange(64))[0]
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


def test_bf16_autocast_gives_the_fp32_losses_within_bf16_precision(data_root, four_steps_data, tmp_path):
    means = {}
    for precision in ("fp32", "bf16"):
        trainer = trainer_of(four_steps_data, compose_four_steps(data_root, **{"trainer.precision": precision}),
                             tmp_path, precision)
        means[precision] = one_epoch(trainer)
    for k in ("loss", "recon"):
        # bf16 keeps 8 bits of mantissa: the matmuls differ by ~0.4%, the losses by a little less
        assert means["bf16"][k] == pytest.approx(means["fp32"][k], rel=0.02), k
    assert means["bf16"]["loss"] != means["fp32"]["loss"]  # autocast did run in bf16


def test_compiled_loss_gives_the_eager_losses(data_root, four_steps_data, tmp_path, monkeypatch):
    # trainer.compile=true wraps the model's loss in torch.compile. Inductor's C++ code generation takes
    # minutes on this 2-core CPU, so the test compiles with the aot_eager backend: Dynamo's trace and
    # AOTAutograd's forward/backward graphs (what compile changes in the step), the same RNG stream.
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", functools.partial(compile_, backend="aot_eager", dynamic=False))
    means, states = {}, {}
    for flag in ("false", "true"):
        torch._dynamo.reset()
        trainer = trainer_of(four_steps_data, compose_four_steps(data_root, **{"trainer.compile": flag}), tmp_path, flag)
        assert ("loss" in vars(trainer.model)) == (flag == "true")  # the instance's loss is the compiled one
        means[flag] = one_epoch(trainer)
        states[flag] = trainer.model.state_dict()
    assert states["true"].keys() == states["false"].keys()  # checkpoints do not change shape
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1  # the step ran through a compiled graph
    for k in means["false"]:
        assert means["true"][k] == pytest.approx(means["false"][k], rel=1e-5, abs=1e-5), k
    for k in states["false"]:
        torch.testing.assert_close(states["true"][k], states["false"][k], rtol=1e-4, atol=1e-5)


@CUDA
@pytest.mark.parametrize("model", ["vae", "aae"])
def test_cuda_hot_loop_makes_no_host_sync(model, data_root, tmp_path):
    # data, batch order, the fused optimizer and the running sums all stay on the GPU: a sync would raise
    cfg = compose_four_steps(data_root, model=model, device="cuda", **{"trainer.precision": "bf16"})
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
        trainer = Trainer(compose_four_steps(data_root, device="cuda", **extra), tmp_path / name)
        assert all(o.defaults["fused"] for o in trainer.optimizers.values())
        means[name] = one_epoch(trainer)
    for name in ("bf16", "compiled"):  # inductor draws its own random numbers: a tolerance, not equality
        assert means[name]["loss"] == pytest.approx(means["plain"]["loss"], rel=0.03), name
