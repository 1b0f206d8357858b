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

Early stopping (`trainer.early_stopping.patience` = P): training ends after P epochs in which the monitored metric
did not improve on its best by more than `min_delta`. The monitored metric, for both plateau and early stopping,
is the run's `optimized_metric` (a validation column; lower or higher is better as its name says).
"""

from __future__ import annotations

import math


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
        return {"reductions": self.reductions, "best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.reductions, self.best, self.bad_epochs = state["reductions"], state["best"], state["bad_epochs"]


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
