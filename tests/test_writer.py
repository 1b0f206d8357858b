"""The run writer (aecli/writer.py): what a training run leaves in its folder."""

from __future__ import annotations

from aecli import rundir
from aecli.writer import RunWriter


class Recorder:
    """A logger that keeps what it was handed."""

    def __init__(self):
        self.epochs = []

    def log_epoch(self, epoch, row):
        self.epochs.append((epoch, dict(row)))


def test_metrics_csv_keeps_every_column_in_first_seen_order(tmp_path):
    """A model whose terms change between epochs (an aae's discriminator joins at epoch 2) keeps every column;
    each epoch rewrites the file whole, and the loggers get each row."""
    logger = Recorder()
    writer = RunWriter(tmp_path, logger)
    writer.prepare()
    run = rundir.RunDir(tmp_path)
    assert run.checkpoints.is_dir() and run.images.is_dir() and run.plots.is_dir()
    rows = [{"epoch": 1, "val_loss": 5.0}]
    writer.epoch(rows[0], rows)
    rows.append({"epoch": 2, "val_loss": 4.0, "val_disc": 0.7})
    writer.epoch(rows[1], rows)
    assert run.metrics.read_text().splitlines() == ["epoch,val_loss,val_disc", "1,5.0,", "2,4.0,0.7"]
    assert [e for e, _ in logger.epochs] == [1, 2]
