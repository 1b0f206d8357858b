"""The parts a training run is made of, built from its config in one place: the device, the data, the model, its
optimizers and schedule, the batcher, the logger and the run writer, the loss guard, the prior fit, and the mean
image's val_recon (the collapse baseline). The trainer (aecli/loop.py) only runs them.
"""

from __future__ import annotations

import logging
import math
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig

from aecli.cores import threads_for
from aecli.config import build_dataset, build_model, resolve_device
from aecli.data import Batcher, Data
from aecli.errors import AecliError
from aecli.health import LossGuard, mean_image_recon
from aecli.loggers import make_logger
from aecli.prior_fit import PriorFit
from aecli.progress import interactive
from aecli.schedule import Schedule
from aecli.writer import RunWriter

log = logging.getLogger("aecli")


@dataclass
class Parts:
    device: torch.device
    data: Data
    model: torch.nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    schedule: Schedule  # the learning rate and early stopping
    batcher: Batcher
    logger: object  # aecli/loggers.py
    writer: RunWriter
    guard: LossGuard
    prior: PriorFit
    mean_image: torch.Tensor  # the training split's mean image: a new run's decoder starts there
    baseline: float  # the mean image's val_recon (collapse)
    bar: bool  # a progress bar, else one line per epoch
    matmul_precision: str
    precision: str  # trainer.precision: fp32, or bf16 (autocast)

    def autocast(self):
        """The context each training step runs in: bfloat16 autocast under trainer.precision=bf16."""
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()


def build_parts(cfg: DictConfig, run_dir: Path, multirun: bool = False, data: Data | None = None) -> Parts:
    """Every part of the run of `cfg`, checked (aecli.config.validate); `data`: the loaded data set, when the
    caller has it."""
    device = resolve_device(cfg.device.type)
    precision = set_matmul_precision(cfg.trainer.matmul_precision, device)
    threads = threads_for(cfg.trainer.num_threads)  # null | N | auto (aecli/cores.py)
    if threads:
        torch.set_num_threads(threads)
    mode = cfg.trainer.progress
    bar = mode == "bar" or (mode == "auto" and interactive() and not multirun)
    data = data if data is not None else build_dataset(cfg).load(device)
    data.seed_binarization(cfg.seed)  # data.binarize=dynamic: the run's own draws of binary images
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, data.image_shape, data.n_classes).to(device)
    if model.conditional and not data.labeled:
        raise AecliError(f"model={model.name} needs class labels and data {data.name} has none: give labelled "
                         f"images (data.path with labels) or an unconditional model")
    warn_at_start(cfg, model, data)
    optimizers = model.configure_optimizers(cfg.lr, cfg.trainer.optimizer, cfg.trainer.weight_decay)
    batcher = Batcher(len(data.train), cfg.batch_size, device, seed=cfg.seed)
    schedule = Schedule(cfg, optimizers, len(batcher))
    if cfg.trainer.compile:  # the loss, forward and (AOTAutograd) backward, as fused kernels; weights untouched
        model.loss = torch.compile(model.loss)
    logger = make_logger(cfg, Path(run_dir))  # logger=csv|tensorboard|... (aecli/loggers.py)
    mean_image = data.train.mean_image()
    return Parts(device, data, model, optimizers, schedule, batcher, logger, RunWriter(Path(run_dir), logger),
                 LossGuard(device, cfg.lr), PriorFit(model, data), mean_image, mean_image_recon(data.val, mean_image),
                 bar, precision, cfg.trainer.precision)


def warn_at_start(cfg: DictConfig, model, data: Data) -> None:
    """One warning per setting known not to do what it says (the run goes on)."""
    if model.start_warning():
        log.warning(model.start_warning())
    pixels = math.prod(data.image_shape)
    if cfg.latent_dim > pixels:
        n_params = sum(p.numel() for p in model.parameters())
        log.warning(f"latent_dim={cfg.latent_dim} is larger than the {pixels} pixels of an image: the code can "
                    f"copy the image ({n_params:,} parameters); an overcomplete code needs a regularizer")
    if cfg.batch_size > len(data.train):
        log.warning(f"batch_size={cfg.batch_size} is larger than the {len(data.train)} training images: "
                    f"each epoch is one step of {len(data.train)} images")
    if "lambda" in model.ignores and cfg["lambda"] != 0:
        log.warning(f"model={model.name} ignores lambda={cfg['lambda']}: it has no regularizer weight "
                    f"(README.md, Models)")


def set_matmul_precision(setting: str, device: torch.device) -> str:
    """trainer.matmul_precision: how float32 matmuls are computed (torch.set_float32_matmul_precision). `highest`
    is full float32; `high` lets CUDA use TF32 (10-bit mantissa inputs, float32 sums: about 1e-3 relative error
    per product, 2x to 8x the matmul speed on Ampere and later); `medium` allows bfloat16. auto: high on CUDA,
    highest on the CPU (where it changes nothing on most processors)."""
    precision = ("high" if device.type == "cuda" else "highest") if setting == "auto" else setting
    torch.set_float32_matmul_precision(precision)
    return precision
