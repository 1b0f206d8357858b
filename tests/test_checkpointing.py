"""When a run writes its checkpoints (aecli/checkpointing.py): by epoch or by time, best.pt right either way, and
the cadence never changes the run."""

from __future__ import annotations

import torch
from hydra import compose, initialize_config_dir

from aecli.checkpoint import load_checkpoint
from aecli.checkpointing import cpu_copy
from aecli.paths import config_dir
from aecli.loop import Trainer

from conftest import tiny_overrides
from test_resume import compose_tiny, fast_data, same_state, shared_data, without_timing  # noqa: F401  (fixtures)


def test_checkpoints_by_time_leave_the_run_unchanged_and_best_pt_right(data_root, fast_data, tmp_path, monkeypatch):
    """checkpoint_every_s=1e9 writes last.pt and best.pt once, at the end (best.pt from its epoch's copy in memory);
    a tiny interval writes last.pt after every step, mid-epoch; both end with the weights of the default run."""
    def trained(name, *extra):
        cfg = compose_tiny(data_root, "epochs=3", "model=ae", *extra)
        trainer = Trainer(cfg, tmp_path / name)
        writes = []
        save = trainer.writer.checkpoint
        monkeypatch.setattr(trainer.writer, "checkpoint", lambda state, *names: (writes.append(
            (state["epoch"], state["step"], names)), save(state, *names)))
        trainer.fit()
        return trainer, writes

    every_epoch, writes = trained("default")
    assert [w[2] for w in writes].count(("last.pt",)) + [w[2] for w in writes].count(("last.pt", "best.pt")) == 3
    rarely, writes = trained("rare", "trainer.checkpoint_every_s=1e9")
    best_epoch = rarely.state.best_epoch
    assert [(w[0], w[2]) for w in writes] == ([(3, ("last.pt", "best.pt"))] if best_epoch == 3 else
                                              [(best_epoch, ("best.pt",)), (3, ("last.pt",))])
    often, writes = trained("often", "trainer.checkpoint_every_s=1e-9")
    assert [w[1] for w in writes if w[2] == ("last.pt",) and w[1] % 4] == [1, 2, 3, 5, 6, 7, 9, 10, 11]  # mid-epoch
    for trainer in (rarely, often):
        same_state(every_epoch.model.state_dict(), trainer.model.state_dict())
        assert without_timing(trainer.state.rows) == without_timing(every_epoch.state.rows)
        best = load_checkpoint(trainer.run_dir / "checkpoints" / "best.pt")
        same_state(best["model"], load_checkpoint(every_epoch.run_dir / "checkpoints" / "best.pt")["model"])
    grids = sorted(p.name for p in (tmp_path / "default" / "images").glob("recon_*"))
    assert len(grids) == 3


def test_a_checkpoint_interval_leaves_a_dynamically_binarized_run_unchanged(data_root, tmp_path):
    """The fitted prior (model=ae) was fitted on images drawn through the training binarizer whenever a checkpoint
    was due, a wall-clock decision: with checkpoint_every_s set, val_loss at epochs 4 to 6 differed from the run
    without it (issue 21). The prior fit now reads the fixed draw and the training stream is the run's alone."""
    from aecli.datasets.mnist import MNIST

    data = MNIST(root=str(data_root), download=False, limit=64, val_size=128,
                 binarize="dynamic").load(torch.device("cpu"))
    threads = torch.get_num_threads()
    rows = {}
    try:
        for every in ("null", "1000000"):
            over = tiny_overrides(data_root, **{"model": "ae", "data.binarize": "dynamic", "data.limit": 64,
                                                "data.val_size": 128, "batch_size": 64, "lr": 0.01, "epochs": 10,
                                                "trainer.images_every": 5, "trainer.checkpoint_every_s": every,
                                                "trainer.progress": "lines"})
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                trainer = Trainer(compose(config_name="config", overrides=over), tmp_path / every, data=data)
            trainer.fit()
            rows[every] = without_timing(trainer.state.rows)
    finally:
        torch.set_num_threads(threads)
    assert [r["val_loss"] for r in rows["1000000"]] == [r["val_loss"] for r in rows["null"]]
    assert rows["1000000"] == rows["null"]


def test_a_copy_for_later_shares_nothing():
    state = {"model": {"w": torch.ones(2, requires_grad=True)}, "rows": [{"a": 1}], "pair": (torch.zeros(1), 2)}
    copy = cpu_copy(state)
    state["model"]["w"].data.fill_(5)
    state["rows"][0]["a"] = 2
    assert copy["model"]["w"].tolist() == [1.0, 1.0] and not copy["model"]["w"].requires_grad
    assert copy["rows"] == [{"a": 1}] and isinstance(copy["pair"], tuple)
