"""When a run writes its checkpoints, what they hold, and a run restored from one.

trainer.checkpoint_every_s = None: last.pt after every epoch, best.pt with it when the epoch improved val_loss.
With an interval: last.pt when that long has passed (mid-epoch too), at the last epoch and at every epoch's end
when the trainer has epoch hooks (they may end the run); an improving epoch in between waits as a copy in memory
(`best_snapshot`), written as best.pt with the next last.pt. What a checkpoint
holds and how a resume restores it is the resume state's (aecli/resume.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from aecli.config import plain
from aecli.resume import LoopState, checkpoint_dict, restore
from aecli.rundir import BEST, CHECKPOINTS, LAST

log = logging.getLogger("aecli")


def cpu_copy(value):
    """`value` with new containers throughout and every tensor a detached copy on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return type(value)((k, cpu_copy(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(cpu_copy(v) for v in value)
    return value


class Checkpointer:
    """The checkpoints of one run (module doc), built on the run's parts (aecli/build.py)."""

    def __init__(self, cfg: DictConfig, parts):
        self.cfg, self.parts = cfg, parts
        self.every_s = cfg.trainer.checkpoint_every_s
        self.last_saved = time.monotonic()
        self.best_snapshot: dict | None = None

    def due(self) -> bool:
        """trainer.checkpoint_every_s: whether that long has passed since last.pt was written."""
        return self.every_s is not None and time.monotonic() - self.last_saved >= self.every_s

    def state(self, loop: LoopState, partial: dict | None = None) -> dict:
        """What a checkpoint holds now; `partial`: the epoch's sums so far (a mid-epoch checkpoint)."""
        p = self.parts
        return checkpoint_dict(p.model, p.optimizers, loop, plain(self.cfg), p.batcher, p.device, p.data,
                               p.logger.state_dict(), partial, p.schedule.state_dict())

    def save(self, loop: LoopState, *names: str, partial: dict | None = None) -> None:
        """Write the checkpoint under each name, atomically; never one with non-finite weights. An epoch's
        checkpoint holds a prior fitted to its weights (a mid-epoch one keeps the last fit)."""
        p = self.parts
        p.guard.check_weights(p.model, loop.epoch, loop.step)
        if partial is None:
            p.prior.fit(loop.epoch, loop.step)
        checkpoint = self.state(loop, partial)
        if self.best_snapshot is not None and BEST not in names:  # an improving epoch waited for this checkpoint
            p.writer.checkpoint(self.best_snapshot, BEST)
        self.best_snapshot = None
        p.writer.checkpoint(checkpoint, *names)  # serialized once for every name
        self.last_saved = time.monotonic()
        where = f"epoch {loop.epoch}" if partial is None else f"step {loop.step}"
        p.guard.kept = f"{CHECKPOINTS}/{LAST} ({where}) is kept"

    def end_epoch(self, loop: LoopState, improved: bool, now: bool) -> None:
        """After an epoch: last.pt (and best.pt when it `improved`) when due or `now` (the last epoch, a signal),
        else the improving epoch's copy in memory until the next checkpoint."""
        if now or self.every_s is None or self.due():
            self.save(loop, LAST, *([BEST] if improved else []))
        elif improved:
            self.parts.prior.fit(loop.epoch, loop.step)
            self.best_snapshot = cpu_copy(self.state(loop))

    def restore(self, ckpt: dict, path: Path) -> tuple[LoopState, dict | None]:
        """Every part in `ckpt`'s state (a resume); returns the loop's state and the RNG states still to restore
        (aecli.resume.restore)."""
        p = self.parts
        loop, pending_rng = restore(ckpt, path, p.model, p.optimizers, p.batcher, self.cfg, p.device)
        p.logger.load_state_dict(ckpt.get("logger") or {})  # a tracker continues its run, no duplicate
        p.data.load_binarization_state(ckpt.get("binarization"))  # data.binarize=dynamic: the same draws
        p.schedule.load_state_dict(ckpt.get("schedules") or {}, loop.step)
        p.guard.kept = f"{CHECKPOINTS}/{LAST} (step {loop.step}) is kept"
        log.info(f"resuming {path} at epoch {loop.epoch}, step {loop.step}")
        return loop, pending_rng
