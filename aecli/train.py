"""The one trainer every model goes through.

    for epoch:                       model.on_epoch_start(epoch)
        for idx in batcher:          x, y = train[idx]  (uint8 on the device -> float per batch)
            terms = model.train_step(x, y, optimizers)       # the model's hook: one or several phases
            sums += terms                                     # on the device: no host sync
            every log_every steps: read the running mean once  # the only syncs in the loop
        validate, fit the code prior, write metrics.csv, images, last.pt and best.pt

The trainer sums nothing itself: it logs whatever terms the model returns. `val_recon` is measured the
same way for every model (Bernoulli cross-entropy of the mean reconstruction, nats per image), so runs
compare across models.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from omegaconf import DictConfig

from aecli.checkpoint import save_atomic
from aecli.config import build_model, plain, resolve_device, validate
from aecli.data import Batcher, Data, Split, load_data
from aecli.errors import AecliError
from aecli.models.base import bernoulli_nll_of_probs
from aecli.plots import plot_losses, recon_pairs, save_grid
from aecli.progress import EpochProgress, interactive
from aecli.sampling import draw_samples

log = logging.getLogger("aecli")

EVAL_BATCH = 1000  # images per forward pass when validating
PRIOR_FIT_IMAGES = 10000  # training images whose codes fit a code prior (models without one)


class NonFiniteLoss(AecliError):
    exit_code = 3


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)


@torch.no_grad()
def evaluate_split(model, split: Split, batch_size: int = EVAL_BATCH) -> dict[str, float]:
    """Mean of every loss term over a split, plus `recon`: the Bernoulli NLL of the mean reconstruction."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for start in range(0, len(split), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split)), device=split.images.device)
        x, y = split.batch(idx)
        terms = dict(model.loss(x, y))
        terms["recon_bce"] = bernoulli_nll_of_probs(model.reconstruct(x, y), x).mean()
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach().float() * len(idx)
    model.train(was_training)
    return {k: (v / len(split)).item() for k, v in sums.items()}


@torch.no_grad()
def fit_code_prior(model, split: Split) -> None:
    """Give models without a prior one fitted to their training codes (see the model's `fit_prior`)."""
    if not hasattr(model, "fit_prior"):
        return
    was_training = model.training
    model.eval()
    x, y = split.batch(torch.arange(min(len(split), PRIOR_FIT_IMAGES), device=split.images.device))
    model.fit_prior(x, y)
    model.train(was_training)


class Trainer:
    """Trains `cfg.model` on `cfg.data`, writing everything into `run_dir`."""

    def __init__(self, cfg: DictConfig, run_dir: Path, multirun: bool = False):
        validate(cfg)
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.device = resolve_device(cfg.device.type)
        if cfg.trainer.num_threads:
            torch.set_num_threads(int(cfg.trainer.num_threads))
        mode = cfg.trainer.progress
        self.bar = mode == "bar" or (mode == "auto" and interactive() and not multirun)
        seed_everything(cfg.seed)
        self.model = build_model(cfg).to(self.device)
        self.optimizers = self.model.configure_optimizers(cfg.lr, cfg.trainer.optimizer, cfg.trainer.weight_decay)
        self.data: Data | None = None
        self.rows: list[dict] = []
        self.epoch = 0
        self.step = 0
        self.best_val = math.inf
        self.batcher: Batcher | None = None

    # -- set-up ------------------------------------------------------------------------------------
    def load_data(self) -> Data:
        d = self.cfg.data
        self.data = load_data(d.name, d.root, self.device, download=d.download, limit=d.limit, val_size=d.val_size)
        self.batcher = Batcher(len(self.data.train), self.cfg.batch_size, self.device, seed=self.cfg.seed)
        return self.data

    def autocast(self):
        if self.cfg.trainer.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    # -- the loop ----------------------------------------------------------------------------------
    def fit(self) -> float:
        if self.data is None:
            self.load_data()
        cfg = self.cfg
        for name in ("checkpoints", "images", "plots"):
            (self.run_dir / name).mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in self.model.parameters())
        log.info(f"model {self.model.name} ({n_params:,} parameters, net={cfg.net.name}, latent_dim={cfg.latent_dim}, "
                 f"lambda={cfg['lambda']}) on {self.device.type}; data {cfg.data.name}: {len(self.data.train)} train, "
                 f"{len(self.data.val)} val images; run folder {self.run_dir}")
        while self.epoch < cfg.epochs:
            self.epoch += 1
            self.model.on_epoch_start(self.epoch)
            train_terms, progress = self.train_epoch()
            row = self.end_epoch(train_terms, progress)
            log.info(self.epoch_line(row))
        plot_losses(self.rows, self.run_dir / "plots" / "loss.png", title=f"{self.model.name} on {cfg.data.name}")
        log.info(f"done: best val_loss {self.best_val:.4f} (epoch {self.best_epoch}); run folder {self.run_dir}")
        return self.best_val

    def train_epoch(self) -> tuple[dict[str, float], EpochProgress]:
        model, data, log_every = self.model, self.data, self.cfg.trainer.log_every
        model.train()
        sums: dict[str, torch.Tensor] = {}
        count = 0
        with EpochProgress(self.epoch, self.cfg.epochs, len(self.batcher), self.bar) as progress:
            for idx in self.batcher:
                x, y = data.train.batch(idx)
                with self.autocast():
                    terms = model.train_step(x, y, self.optimizers)
                for k, v in terms.items():
                    sums[k] = sums[k] + v.float() if k in sums else v.float()
                count += 1
                self.step += 1
                progress.step(len(idx))
                if count % log_every == 0:
                    running = self.check_finite({k: v.item() / count for k, v in sums.items()})
                    progress.show_loss(running["loss"])
            means = self.check_finite({k: v.item() / max(count, 1) for k, v in sums.items()})
        return means, progress

    def check_finite(self, means: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in means.items() if not math.isfinite(v)]
        if not bad:
            return means
        raise NonFiniteLoss(f"the loss term {bad[0]!r} became {means[bad[0]]} by step {self.step} "
                            f"(epoch {self.epoch}): training stopped, the last good checkpoint is kept; "
                            f"try a lower lr (now {self.cfg.lr})")

    def end_epoch(self, train_terms: dict[str, float], progress: EpochProgress) -> dict:
        model, data = self.model, self.data
        seconds = progress.seconds
        fit_code_prior(model, data.train)
        val = evaluate_split(model, data.val)
        row = {"epoch": self.epoch, "step": self.step, "train_loss": train_terms["loss"], "val_loss": val["loss"],
               "val_recon": val.pop("recon_bce")}
        row.update({f"train_{k}": v for k, v in train_terms.items() if k != "loss"})
        row.update({f"val_{k}": v for k, v in val.items() if k != "loss"})
        row.update({"seconds": round(seconds, 3), "images_per_s": round(progress.images / max(seconds, 1e-9), 1)})
        self.rows.append(row)
        self.write_metrics()
        self.write_images()
        improved = row["val_loss"] < self.best_val
        if improved:
            self.best_val, self.best_epoch = row["val_loss"], self.epoch
        state = self.checkpoint()
        save_atomic(state, self.run_dir / "checkpoints" / "last.pt")
        if improved:
            save_atomic(state, self.run_dir / "checkpoints" / "best.pt")
        return row

    # -- outputs -----------------------------------------------------------------------------------
    def epoch_line(self, row: dict) -> str:
        terms = "  ".join(f"{k} {v:.4g}" for k, v in row.items() if k.startswith(("train_", "val_")))
        return f"epoch {row['epoch']}/{self.cfg.epochs}  {terms}  {row['images_per_s']:,.0f} img/s  {row['seconds']:.1f}s"

    def write_metrics(self) -> None:
        fields: list[str] = []
        for r in self.rows:
            fields += [k for k in r if k not in fields]
        path = self.run_dir / "metrics.csv"
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)

    @torch.no_grad()
    def write_images(self) -> None:
        model, images = self.model, self.run_dir / "images"
        model.eval()
        x, y = self.data.val.batch(torch.arange(min(32, len(self.data.val)), device=self.device))
        save_grid(recon_pairs(x, model.reconstruct(x, y)), images / f"recon_epoch_{self.epoch:03d}.png")
        samples, nrow = draw_samples(model, 64, seed=self.cfg.seed)
        save_grid(samples, images / f"samples_epoch_{self.epoch:03d}.png", nrow=nrow)
        model.train()

    def checkpoint(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "epoch": self.epoch,
            "step": self.step,
            "best_val": self.best_val,
            "config": plain(self.cfg),
            "metrics": self.rows,
            "batcher": self.batcher.state_dict(),
            "rng": {"cpu": torch.get_rng_state(),
                    **({"cuda": torch.cuda.get_rng_state()} if self.device.type == "cuda" else {})},
        }


def train(cfg: DictConfig, run_dir: Path, multirun: bool = False) -> float:
    """Train one run; returns the best validation loss (what a sweeper minimizes)."""
    start = time.perf_counter()
    trainer = Trainer(cfg, run_dir, multirun=multirun)
    best = trainer.fit()
    if cfg.eval.at_end:
        from aecli.evaluate import evaluate_trained

        evaluate_trained(trainer)
    log.info(f"finished in {time.perf_counter() - start:.1f}s")
    return best
