"""The one trainer every model goes through: the loop. Its parts are built by aecli/build.py, its checkpoints are
the checkpointer's (aecli/checkpointing.py), what a resume restores is the resume state's (aecli/resume.py), and
the run around it is the job's (aecli/job.py).

    for epoch:                       model.on_epoch_start(epoch)
        for idx in batcher:          x, y = train[idx]  (uint8 on the device -> float per batch)
            terms = model.train_step(x, y, optimizers, grad_clip)  # the model's hook: one or several phases
            sums += terms x images                                  # on the device: no host sync
            at step 1 and every log_every steps: read the running mean once  # the only syncs in the loop (CUDA)
        validate, look for collapse, write the row, the images, last.pt and best.pt, then call the epoch hooks

Never lose a run (docs/robustness.md): Ctrl-C or SIGTERM finishes the step, writes last.pt and exits 130 or 143; a
NaN, infinite or diverged loss stops the run within a step and never reaches a checkpoint (aecli/health.py).

The trainer sums nothing itself: it logs whatever terms the model returns. `val_recon` is measured the same way for
every model (Bernoulli cross-entropy of the mean reconstruction, nats per image), so runs compare across models.
"""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable
from pathlib import Path

import torch
from omegaconf import DictConfig

from aecli.build import build_parts
from aecli.checkpoint import find_checkpoint, load_checkpoint
from aecli.checkpointing import Checkpointer
from aecli.config import check_run_settings, validate
from aecli.data import Data
from aecli.health import code_spread, collapse_symptoms
from aecli.paths import aecli_command
from aecli.progress import EpochProgress, epoch_line, start_line
from aecli.resume import LoopState, resume_config, set_rng_state
from aecli.rundir import LAST, RunDir
from aecli.signals import Interrupted, StopSignals
from aecli.validation import evaluate_split, loss_terms

log = logging.getLogger("aecli")


def running_means(sums: dict[str, torch.Tensor], images: int) -> dict[str, float]:
    """The mean of every term over the images so far: one read from the device."""
    return dict(zip(sums, (torch.stack(list(sums.values())) / images).tolist())) if sums else {}


class Trainer:
    """Trains `cfg.model` on `cfg.data`, writing everything into `run_dir`.

    `data`: the loaded data set, when the caller has it; `stop_at_step`: act as if SIGTERM arrived during that step
    (the resume tests' hook; the job reads it from AECLI_STOP_AT_STEP); `epoch_hooks`: called with each epoch's row
    once its metrics.csv row and last.pt are written (a search's pruner raises aecli.errors.Pruned from one)."""

    def __init__(self, cfg: DictConfig, run_dir: Path, multirun: bool = False, data: Data | None = None,
                 stop_at_step: int = 0, epoch_hooks: list[Callable[[dict], None]] = ()):
        validate(cfg)
        self.cfg, self.run_dir, self.stop_at_step = cfg, Path(run_dir), stop_at_step
        self.epoch_hooks = list(epoch_hooks)
        self.parts = p = build_parts(cfg, self.run_dir, multirun, data)
        self.device, self.data, self.model, self.optimizers, self.batcher = p.device, p.data, p.model, p.optimizers, \
            p.batcher
        self.writer, self.logger, self.guard, self.autocast = p.writer, p.logger, p.guard, p.autocast
        self.checkpoints = Checkpointer(cfg, p)
        self.signals = StopSignals()
        self.state, self.pending_rng = LoopState(), None  # pending: RNG states to restore once the epoch begins
        self.check_every_step = self.device.type == "cpu"  # free on the CPU; a host sync on CUDA
        self.warnings: list[str] = []  # collapse warnings, one per symptom and epoch (status.json keeps them)

    @classmethod
    def resume(cls, cfg: DictConfig, run_dir: Path, overrides: list[str] = (), **kwargs) -> Trainer:
        """A trainer in the state of `cfg.resume` (a run folder, whose last.pt is used, or a checkpoint)."""
        path = find_checkpoint(cfg.resume, "last")
        ckpt = load_checkpoint(path)
        trainer = cls(resume_config(cfg, ckpt, path, list(overrides)), run_dir, **kwargs)
        trainer.state, trainer.pending_rng = trainer.checkpoints.restore(ckpt, path)
        return trainer

    def fit(self) -> float:
        """Train to `cfg.epochs`; returns the best val_loss."""
        cfg, state = self.cfg, self.state
        self.writer.prepare()
        log.info(start_line(self.model, cfg, self.data, self.device, self.parts.baseline, self.run_dir))
        if state.step == 0 and state.partial is None:  # a new run: the decoder starts at the mean image
            self.model.init_output(self.parts.mean_image)
        check_run_settings(cfg, terms=loss_terms(self.model, self.data.val))
        with self.signals.caught():
            while (state.epoch < cfg.epochs or state.partial is not None) and not state.stopped_early:
                partial, state.partial = state.partial, None
                state.epoch += partial is None  # a new epoch, unless one goes on
                self.model.on_epoch_start(state.epoch)
                if self.pending_rng is not None:
                    set_rng_state(self.pending_rng, self.device)
                    self.pending_rng = None
                row = self.end_epoch(*self.train_epoch(partial))
                if self.signals.received:  # arrived during validation: last.pt of this epoch is written
                    raise self.interrupted(f"at the end of epoch {state.epoch}")
                for hook in self.epoch_hooks:  # a search's pruner may raise Pruned: it goes out as it is
                    hook(row)
        self.writer.loss_plot(state.rows, f"{self.model.name} on {self.data.name}", self.model.loss_units,
                              state.best_epoch)
        log.info(f"done: best val_loss {state.best_val:.4f} (epoch {state.best_epoch}); run folder {self.run_dir}")
        return state.best_val

    def train_epoch(self, partial: dict | None = None) -> tuple[dict[str, float], EpochProgress]:
        """One pass over the batcher (or the rest of one, continuing a mid-epoch checkpoint's `partial`).

        The epoch's means weigh every batch by its images, so a short last batch counts for what it holds."""
        model, state, log_every, steps = self.model, self.state, self.cfg.trainer.log_every, len(self.batcher)
        model.train()
        sums: dict[str, torch.Tensor] = {}  # sum over batches of (the batch's mean term) x (its images)
        count = 0
        progress = EpochProgress(state.epoch, self.cfg.epochs, steps, self.parts.bar)
        if partial is not None:
            sums = {k: v.to(self.device) for k, v in partial["sums"].items()}
            count, progress.images = partial["count"], partial["images"]
            progress.start -= partial["seconds"]
        with progress:
            for idx in self.batcher:
                x, y = self.data.train.batch(idx)
                self.parts.schedule.apply(state.step + 1, state.epoch)
                with self.autocast():
                    terms = model.train_step(x, y, self.optimizers, self.cfg.trainer.grad_clip)
                for k, v in terms.items():
                    sums[k] = sums[k] + v.float() * len(idx) if k in sums else v.float() * len(idx)
                count += 1
                state.step += 1
                self.guard.update(terms, state.step)
                progress.step(len(idx))
                logged = count % log_every == 0
                if self.check_every_step or logged:
                    self.guard.check(state.epoch)
                if logged or (progress.bar and (count == 1 or self.check_every_step)):
                    running = running_means(sums, progress.images)
                    progress.show_loss(running["loss"])
                    if logged:
                        self.logger.log_step(state.step, running)
                stopping = self.signals.received or state.step == self.stop_at_step
                if stopping or (self.checkpoints.due() and count < steps):  # by time, in the middle of an epoch
                    self.checkpoints.save(state, LAST, partial={"sums": {k: v.cpu() for k, v in sums.items()},
                                                                "count": count, "images": progress.images,
                                                                "seconds": progress.seconds})
                if stopping:  # stop_at_step: as if SIGTERM arrived
                    raise self.interrupted(f"after step {state.step} (epoch {state.epoch}, batch {count}/{steps})")
            self.guard.check(state.epoch)
        return running_means(sums, progress.images), progress

    def interrupted(self, where: str) -> Interrupted:
        return self.signals.interrupted(f"{where}: wrote {RunDir(self.run_dir).last}; continue with: "
                                        f"{aecli_command()} train resume={shlex.quote(str(self.run_dir))}")

    def end_epoch(self, train_terms: dict[str, float], progress: EpochProgress) -> dict:
        """Validate, write the epoch's row, grids and checkpoints; returns the row."""
        model, data, state, p = self.model, self.data, self.state, self.parts
        seconds = progress.seconds
        if model.fit_sets_weights:
            p.prior.fit(state.epoch, state.step)
        val = evaluate_split(model, data.val)
        self.guard.check_validation(val, state.epoch, state.step)
        # val_recon is the comparable number (the same measure for every model); the model's own
        # reconstruction term, in its own likelihood's units, is kept as val_recon_term.
        val["recon_term"] = val.pop("recon", None)
        row = {"epoch": state.epoch, "step": state.step, "train_loss": train_terms["loss"], "val_loss": val["loss"],
               "val_recon": val.pop("recon_bce")}
        row.update({f"train_{k}": v for k, v in train_terms.items() if k != "loss"})
        row.update({f"val_{k}": v for k, v in val.items() if k != "loss" and v is not None})
        row.update({"seconds": round(seconds, 3), "images_per_s": round(progress.images / max(seconds, 1e-9), 1)})
        symptoms = collapse_symptoms(model, val, row["val_recon"], p.baseline, code_spread(model, data.val),
                                     state.step)
        for _, symptom in symptoms:
            log.warning(f"collapse after epoch {state.epoch}: {symptom}")
            self.warnings.append(f"epoch {state.epoch}: {symptom}")
        row["collapse"] = " ".join(name for name, _ in symptoms)  # the symptoms' names; empty when healthy
        row["lr"] = p.schedule.rate(state.step, state.epoch)  # at the epoch's last step
        state.stopped_early = p.schedule.end_epoch(row)
        state.rows.append(row)
        self.writer.epoch(row, state.rows)
        last = state.epoch >= self.cfg.epochs or state.stopped_early
        if last or state.epoch % self.cfg.trainer.images_every == 0:
            p.prior.fit(state.epoch, state.step)
            self.writer.images(model, data, state.epoch, self.cfg.seed)
        improved = row["val_loss"] < state.best_val
        if improved:
            state.best_val, state.best_epoch = row["val_loss"], state.epoch
        # the hooks see this epoch's last.pt on disk (a pruner may end the run)
        self.checkpoints.end_epoch(state, improved, now=last or bool(self.signals.received or self.epoch_hooks))
        log.info(epoch_line(row, self.cfg.epochs))
        return row
