"""What changes over a run besides the weights: the learning rate's schedule and early stopping.

`trainer.scheduler` (conf/trainer/default.yaml):

    none      lr_t = lr
    cosine    lr_t = lr * (m + (1 - m) (1 + cos(pi t / T)) / 2)     t the step, T the run's steps, m = min_lr_ratio
    step      lr_t = lr * gamma ** floor((epoch - 1) / step_size)   epoch counted from 1
    plateau   lr_t = lr * gamma ** k, k the times the monitored metric went `patience` epochs without improving
    iwae      lr_t = lr * 10 ** (-i / 7) in stage i = 0, 1, ..., which lasts 3 ** i epochs: Burda et al. 2015's
              schedule (Sec. 5; 3^0 + ... + 3^7 = 3,280 epochs), constant after the last stage a run reaches

and with `trainer.warmup_steps` = W > 0 every one of them is multiplied by min(1, t / W) (t counted from 1): a
linear warm-up. The rate is a function of the step, the epoch and, for plateau, k: it is set on every optimizer (the
aae's three included, each at its own base rate) before every step, so nothing hides in torch's scheduler objects
and a resume continues it exactly from the checkpoint's step, epoch and `state_dict()`.

A resume with another `epochs` moves the cosine's horizon T to the new run's steps: the rate stays a function of
the step and T alone, so from the resume point on the run follows the schedule of a run started with those epochs
(the rate rises where the old horizon had decayed it further), and one warning says so.

Early stopping (`trainer.early_stopping.patience` = P): training ends after P epochs in which the monitored metric
did not improve on its best by more than `min_delta`. The monitored metric, for both plateau and early stopping,
is the run's `optimized_metric` (a validation column; lower or higher is better as its name says).
"""

from __future__ import annotations

import logging
import math

from aecli.metric_names import direction

log = logging.getLogger("aecli")


def iwae_stage(epoch: int) -> int:
    """The stage i of the iwae schedule that epoch `epoch` (from 1) falls in: stage i holds 3 ** i epochs."""
    stage, end = 0, 1
    while epoch > end:
        stage += 1
        end += 3 ** stage
    return stage


def improved(value: float, best: float | None, delta: float, maximize: bool) -> bool:
    """Whether `value` beats `best` by more than `delta` (in the metric's better direction)."""
    if best is None:
        return True
    return value > best + delta if maximize else value < best - delta


class LrSchedule:
    def __init__(self, name: str = "none", warmup_steps: int = 0, total_steps: int = 1, min_lr_ratio: float = 0.0,
                 step_size: int = 1, gamma: float = 0.1, patience: int = 5, maximize: bool = False):
        self.name, self.warmup_steps, self.total_steps = name, warmup_steps, max(1, total_steps)
        self.min_lr_ratio, self.step_size, self.gamma, self.patience = min_lr_ratio, step_size, gamma, patience
        self.maximize = maximize
        self.reductions = 0  # plateau: k
        self.best: float | None = None
        self.bad_epochs = 0

    def factor(self, step: int, epoch: int) -> float:
        """lr_t / lr at optimizer step `step` (counted from 1) of epoch `epoch` (counted from 1)."""
        if self.name == "cosine":
            t = min(step - 1, self.total_steps) / self.total_steps
            f = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
        elif self.name == "step":
            f = self.gamma ** ((epoch - 1) // self.step_size)
        elif self.name == "plateau":
            f = self.gamma ** self.reductions
        elif self.name == "iwae":
            f = 10 ** (-iwae_stage(epoch) / 7)
        else:
            f = 1.0
        if self.warmup_steps > 0:
            f *= min(1.0, step / self.warmup_steps)
        return f

    def apply(self, optimizers: dict, base_lrs: dict, step: int, epoch: int) -> float:
        """Set every optimizer's rate for `step`; returns the factor."""
        f = self.factor(step, epoch)
        for name, opt in optimizers.items():
            for group, base in zip(opt.param_groups, base_lrs[name]):
                group["lr"] = base * f
        return f

    def end_epoch(self, value: float | None) -> bool:
        """plateau: count an epoch without improvement; True when the rate was just reduced."""
        if self.name != "plateau" or value is None:
            return False
        if improved(value, self.best, 0.0, self.maximize):
            self.best, self.bad_epochs = value, 0
            return False
        self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            self.reductions, self.bad_epochs = self.reductions + 1, 0
            return True
        return False

    def state_dict(self) -> dict:
        return {"reductions": self.reductions, "best": self.best, "bad_epochs": self.bad_epochs,
                "horizon": self.total_steps}

    def load_state_dict(self, state: dict, step: int = 0) -> str | None:
        """The state of a checkpoint taken after `step` steps. When its cosine horizon differs from this run's (a
        resume with another `epochs`), returns the line that says how the rate goes on from there."""
        self.reductions, self.best, self.bad_epochs = state["reductions"], state["best"], state["bad_epochs"]
        saved = state.get("horizon", self.total_steps)
        if self.name != "cosine" or saved == self.total_steps:
            return None
        was = LrSchedule(self.name, self.warmup_steps, saved, self.min_lr_ratio).factor(step + 1, 1)
        return (f"the cosine schedule's horizon moved from {saved} to {self.total_steps} steps (epochs changed): "
                f"from step {step + 1} on the rate follows the {self.total_steps}-step cosine, "
                f"{self.factor(step + 1, 1):.3g} x lr there instead of {was:.3g} x lr")


class EarlyStopping:
    def __init__(self, patience: int | None, min_delta: float = 0.0, maximize: bool = False):
        self.patience, self.min_delta, self.maximize = patience, min_delta, maximize
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, value: float | None, epoch: int) -> bool:
        """After an epoch: True when training should stop."""
        if self.patience is None or value is None:
            return False
        if improved(value, self.best, self.min_delta, self.maximize):
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]


class Schedule:
    """What changes over a run besides the weights (module doc): the learning rate, set on every optimizer before
    every step (`apply`), and the epoch-end watch of `optimized_metric` by plateau and early stopping
    (`end_epoch`, True when the run should stop)."""

    def __init__(self, cfg, optimizers: dict, steps_per_epoch: int):
        t = cfg.trainer
        maximize = direction(cfg.optimized_metric) == "maximize"
        self.lr = LrSchedule(t.scheduler, t.warmup_steps, cfg.epochs * steps_per_epoch, t.min_lr_ratio, t.step_size,
                             t.gamma, t.plateau_patience, maximize)
        self.stopper = EarlyStopping(t.early_stopping.patience, t.early_stopping.min_delta, maximize)
        self.optimizers, self.base_lr, self.metric = optimizers, cfg.lr, cfg.optimized_metric
        self.base_lrs = {name: [g["lr"] for g in opt.param_groups] for name, opt in optimizers.items()}
        self.active = t.scheduler != "none" or t.warmup_steps > 0

    def apply(self, step: int, epoch: int) -> None:
        """Every optimizer's rate for `step` (counted from 1) of `epoch`."""
        if self.active:
            self.lr.apply(self.optimizers, self.base_lrs, step, epoch)

    def rate(self, step: int, epoch: int) -> float:
        """The learning rate at `step` of `epoch`."""
        return self.base_lr * self.lr.factor(max(step, 1), epoch)

    def end_epoch(self, row: dict) -> bool:
        """The epoch's monitored metric (optimized_metric) to plateau and to early stopping; True: stop now."""
        value = row.get(self.metric)
        if self.lr.end_epoch(value):
            log.info(f"plateau: {self.metric} has not improved for {self.lr.patience} epochs; the learning rate is "
                     f"now {self.lr.gamma ** self.lr.reductions:g} x lr")
        if not self.stopper.update(value, row["epoch"]):
            return False
        log.info(f"early stopping after epoch {row['epoch']}: {self.metric} has not improved by more than "
                 f"{self.stopper.min_delta:g} for {self.stopper.patience} epochs (best {self.stopper.best:.4g} at "
                 f"epoch {self.stopper.best_epoch})")
        return True

    def state_dict(self) -> dict:
        return {"lr": self.lr.state_dict(), "early_stopping": self.stopper.state_dict()}

    def load_state_dict(self, state: dict, step: int) -> None:
        """A checkpoint's state, taken after `step` steps (nothing for a checkpoint without one)."""
        if state:
            moved = self.lr.load_state_dict(state["lr"], step)
            if moved:
                log.warning(moved)
            self.stopper.load_state_dict(state["early_stopping"])
