"""What a run prints while it trains: the bar's running loss from the first step, the start and epoch lines."""

from __future__ import annotations

import pytest

from aecli.progress import EpochProgress, epoch_line
from aecli.loop import Trainer

from test_resume import compose_tiny, fast_data, shared_data  # noqa: F401  (fixtures)


@pytest.mark.parametrize("cpu", [True, False])
def test_the_bar_shows_the_running_loss_from_the_first_step(cpu, data_root, fast_data, tmp_path, monkeypatch):
    """An epoch of fewer than log_every (50) steps showed `loss -` throughout. Now the running mean is shown after
    the first step: then every step on the CPU (reading is free there), and only at the sync points (step 1, every
    log_every) where reading is a host sync (CUDA)."""
    shown = []
    monkeypatch.setattr(EpochProgress, "show_loss", lambda self, value: shown.append((self.images, value)))
    trainer = Trainer(compose_tiny(data_root, epochs=1, **{"trainer.progress": "bar"}), tmp_path / "run")
    trainer.check_every_step = cpu  # False: as on CUDA
    trainer.fit()
    assert [images for images, _ in shown] == ([64, 128, 192, 256] if cpu else [64])
    assert shown[-1][1] == pytest.approx(trainer.state.rows[0]["train_loss"]) if cpu else shown[0][1] > 0


def test_the_epoch_line_names_every_term():
    row = {"epoch": 2, "step": 8, "train_loss": 200.0, "val_loss": 190.5, "val_recon": 180.25, "collapse": "",
           "seconds": 1.5, "images_per_s": 2000.0}
    assert epoch_line(row, 5) == ("epoch 2/5  train_loss 200  val_loss 190.5  val_recon 180.2  2,000 img/s  1.5s")
