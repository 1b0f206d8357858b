"""The run writer: what a training run leaves in its folder, and what it hands its loggers.

    metrics.csv                     one row per epoch, rewritten whole after each (README, "What a run writes")
    images/recon_epoch_NNN.png      a fixed validation batch, inputs above their reconstructions
    images/samples_epoch_NNN.png    samples from the model's prior (one row per class for a conditional model)
    checkpoints/last.pt, best.pt    written atomically (aecli.checkpoint.save_atomic)
    plots/loss.png                  the curves, when training ends

The trainer decides what and when; this module only writes.
"""

from __future__ import annotations

from pathlib import Path

import torch

from aecli.checkpoint import save_atomic
from aecli.plots import class_rows, plot_losses, recon_labels, recon_pairs, save_grid
from aecli.rundir import RunDir, write_metrics
from aecli.sampling import draw_samples

RECON_IMAGES = 32  # validation images in each epoch's reconstruction grid
SAMPLES = 64  # samples in each epoch's sample grid


class RunWriter:
    def __init__(self, run_dir: Path, logger):
        self.run_dir = Path(run_dir)
        self.run = RunDir(run_dir)
        self.logger = logger

    def prepare(self) -> None:
        for folder in (self.run.checkpoints, self.run.images, self.run.plots):
            folder.mkdir(parents=True, exist_ok=True)

    def epoch(self, row: dict, rows: list[dict]) -> None:
        """An epoch's row: to the loggers, and metrics.csv rewritten with every row so far (columns in first-seen
        order, so a model whose terms change keeps every column)."""
        self.logger.log_epoch(row["epoch"], row)
        write_metrics(self.run_dir, rows)

    @torch.no_grad()
    def images(self, model, data, epoch: int, seed: int) -> None:
        """The epoch's reconstruction and sample grids, as PNGs and to the loggers."""
        was_training = model.training
        model.eval()
        split = data.val
        x, y = split.batch(torch.arange(min(RECON_IMAGES, len(split)), device=split.images.device))
        recon = recon_pairs(x, model.reconstruct(x, y))
        name = f"{model.name} on {data.name}, epoch {epoch}"
        save_grid(recon, self.run.images / f"recon_epoch_{epoch:03d}.png",
                  title=f"{name}: validation images and their reconstructions", row_labels=recon_labels(len(recon)))
        samples, nrow = draw_samples(model, SAMPLES, seed=seed)
        save_grid(samples, self.run.images / f"samples_epoch_{epoch:03d}.png", nrow=nrow,
                  title=f"{name}: samples from the prior", row_labels=class_rows(nrow, len(samples),
                                                                                 data.classes if model.conditional else None))
        self.logger.log_images(epoch, {"recon": recon, "samples": samples})
        model.train(was_training)

    def checkpoint(self, state: dict, *names: str) -> None:
        """The same checkpoint under each name (last.pt, best.pt): serialized once, each file written atomically."""
        save_atomic(state, *(self.run.checkpoints / name for name in names))

    def loss_plot(self, rows: list[dict], title: str, units: str, best_epoch: int) -> None:
        plot_losses(rows, self.run.plots / "loss.png", title=title, units=units, best_epoch=best_epoch)
