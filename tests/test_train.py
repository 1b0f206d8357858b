"""The trainer's numbers: epoch means weighted by images, divergence caught like a NaN, collapse said and kept,
and the optimized metric a sweep receives."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from hydra import compose, initialize_config_dir

from aecli.cli import config_dir
from aecli.errors import AecliError
from aecli.models.base import bernoulli_nll
from aecli.job import optimized_value
from aecli.train import Trainer

from conftest import load_data, run_cli, tiny_overrides


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
