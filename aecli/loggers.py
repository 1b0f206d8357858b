"""Where a run's numbers go besides metrics.csv (which the trainer always writes): `logger=` in conf/logger/.

    logger=csv          metrics.csv only: the hooks below do nothing
    logger=tensorboard  TensorBoard event files in the run folder: the running train terms every
                        `trainer.log_every` steps (step/*), every metrics.csv column per epoch (epoch/*), the
                        reconstruction and sample grids per epoch (images/*), and at the end the
                        hyperparameters with the final metrics (the HPARAMS tab). `tensorboard --logdir outputs/`

The trainer calls the hooks with numbers it has already read from the device: a logger adds no host sync.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from aecli.errors import AecliError


class Logger:
    """logger=csv: the trainer writes metrics.csv itself, so every hook is a no-op."""

    def log_step(self, step: int, terms: dict[str, float]) -> None:
        """Running means of the training terms at optimizer step `step`."""

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        """The epoch's metrics.csv row."""

    def log_images(self, epoch: int, grids: dict[str, Any]) -> None:
        """Image batches [N, 1, 28, 28] in [0, 1] by name (recon, samples)."""

    def close(self, metrics: dict[str, float]) -> None:
        """The run ended; `metrics`: its final numbers (best val_loss, the test metrics when eval ran)."""


class TensorBoardLogger(Logger):
    def __init__(self, run_dir: Path, hparams: dict[str, Any], flush_secs: int = 30):
        try:  # torch.utils.tensorboard needs the tensorboard package: an optional extra
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise AecliError("logger=tensorboard needs TensorBoard, which is not installed: "
                             "pip install 'aecli[tensorboard]' (or uv sync --extra tensorboard), or use logger=csv") from None
        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=flush_secs)
        self.hparams = hparams

    def log_step(self, step: int, terms: dict[str, float]) -> None:
        for k, v in terms.items():
            self.writer.add_scalar(f"step/train_{k}", v, step)

    def log_epoch(self, epoch: int, row: dict[str, float]) -> None:
        for k, v in row.items():
            if k not in ("epoch", "step") and isinstance(v, (int, float)):
                self.writer.add_scalar(f"epoch/{k}", v, epoch)

    def log_images(self, epoch: int, grids: dict[str, Any]) -> None:
        from torchvision.utils import make_grid

        for name, images in grids.items():
            grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=8, padding=2, pad_value=1.0)
            self.writer.add_image(f"images/{name}", grid, epoch)

    def close(self, metrics: dict[str, float]) -> None:
        """Hyperparameters with the final metrics, in this run's own event file (HPARAMS tab)."""
        from torch.utils.tensorboard.summary import hparams

        final = {f"final/{k}": float(v) for k, v in flatten(metrics).items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
        for summary in hparams(self.hparams, final):
            self.writer.file_writer.add_summary(summary)
        for k, v in final.items():
            self.writer.add_scalar(k, v)
        self.writer.close()


def flatten(node: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: {"net": {"hidden": [64]}} -> {"net.hidden": [64]}."""
    out: dict[str, Any] = {}
    for k, v in node.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as `a.b: value` pairs TensorBoard can show (lists and null as text)."""
    from aecli.config import plain

    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in flatten(plain(cfg)).items()}


def make_logger(cfg: DictConfig, run_dir: Path) -> Logger:
    name = cfg.logger.name
    if name == "csv":
        return Logger()
    if name == "tensorboard":
        return TensorBoardLogger(run_dir, flat_hparams(cfg), flush_secs=cfg.logger.flush_secs)
    raise AecliError(f"logger={name} is not a logger aecli knows: allowed csv, tensorboard")
