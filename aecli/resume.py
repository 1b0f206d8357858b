"""The resume state: everything the training loop depends on, what a checkpoint holds of it, and its restoration.

An interrupted run resumed ends bitwise equal to the run left alone on the CPU (docs/robustness.md): a checkpoint
keeps the weights, the optimizers, torch's RNG states and the dynamic binarization's, the batcher's position, the metrics rows, the best epoch,
the data's shape and classes (a model is rebuilt from the checkpoint alone), the loggers' own state (a tracker's
run id) and, for a checkpoint taken mid-epoch, the epoch's partial sums. Nothing in it is a pickled object:
`torch.load(path, weights_only=True)` reads it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from aecli.checkpoint import load_model_state
from aecli.errors import AecliError
from aecli.overrides import parse

# Keys a resume may change; any other key given with resume= must equal the checkpoint's (bitwise resumes
# need the same threads too, but a new machine may need another count).
RESUMABLE = ("epochs", "device", "data.root", "data.path", "data.test_path", "data.download", "trainer.progress",
             "trainer.num_threads", "trainer.log_every", "eval", "logger", "report", "optimized_metric")


@dataclass
class LoopState:
    """Where the loop is: the last epoch begun, the optimizer steps taken, the metrics rows, the best epoch so far,
    for a checkpoint taken mid-epoch the epoch's partial sums (`partial`), and whether early stopping ended it."""

    epoch: int = 0
    step: int = 0
    rows: list[dict] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    partial: dict | None = None
    stopped_early: bool = False  # early stopping ended the run


def rng_state(device: torch.device) -> dict:
    """torch's global generators (the DAE's noise and the VAE's eps are drawn from them)."""
    return {"cpu": torch.get_rng_state(), **({"cuda": torch.cuda.get_rng_state()} if device.type == "cuda" else {})}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"])


def data_info(data) -> dict:
    """What a checkpoint keeps of its data set, so the model can be rebuilt without loading it."""
    return {"name": data.name, "image_shape": list(data.image_shape), "classes": data.classes, "key": data.key}


def checkpoint_dict(model, optimizers: dict, state: LoopState, cfg: dict, batcher, device: torch.device, data,
                    logger_state: dict | None = None, partial: dict | None = None,
                    schedules: dict | None = None) -> dict:
    """Everything a resume needs (module doc); `partial` (the epoch's sums so far) marks a mid-epoch checkpoint;
    `schedules`: the learning-rate schedule's and early stopping's state."""
    return {
        "model": model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "epoch": state.epoch,
        "step": state.step,
        "best_val": state.best_val,
        "best_epoch": state.best_epoch,
        "config": cfg,
        "data": data_info(data),
        "metrics": state.rows,
        "batcher": batcher.state_dict(),
        "rng": rng_state(device),
        "device": device.type,
        "logger": logger_state or {},
        "schedules": schedules or {},
        "stopped_early": state.stopped_early,
        "partial": partial,
        "binarization": data.binarization_state(),  # data.binarize=dynamic: the generator of the binary draws
    }


def restore(ckpt: dict, path: Path, model, optimizers: dict, batcher, cfg: DictConfig,
            device: torch.device) -> tuple[LoopState, dict | None]:
    """Put the model, the optimizers and the batcher in the checkpoint's state; returns the loop's state and the
    RNG states to restore once the epoch has begun (a mid-epoch checkpoint), or None when restored now."""
    saved_device = ckpt.get("device", "cpu")
    if saved_device != device.type:
        raise AecliError(f"checkpoint {path} was trained on {saved_device} and this resume runs on {device.type}: "
                         f"resume on the same device (device={saved_device})")
    done = ckpt["epoch"] if ckpt.get("partial") is None else ckpt["epoch"] - 1
    if ckpt.get("stopped_early"):
        raise AecliError(f"run of {path} was ended by early stopping after epoch {done} "
                         f"(trainer.early_stopping): it is finished; start a new run to train further")
    if done >= cfg.epochs:
        raise AecliError(f"run of {path} has finished {done} of epochs={cfg.epochs}: give a larger epochs=N with "
                         f"resume= to train it longer")
    load_model_state(model, OmegaConf.to_container(cfg, resolve=True), ckpt, path)
    saved = ckpt.get("optimizers") or {}
    if set(saved) != set(optimizers):
        raise AecliError(f"checkpoint {path} has optimizers {sorted(saved)} but model {model.name} uses "
                         f"{sorted(optimizers)}")
    for name, opt in optimizers.items():
        try:
            opt.load_state_dict(saved[name])
        except (ValueError, KeyError) as e:
            raise AecliError(f"checkpoint {path}: optimizer {name!r} does not fit this model ({e})") from None
    batcher.load_state_dict(ckpt["batcher"])
    state = LoopState(epoch=int(ckpt["epoch"]), step=int(ckpt["step"]), rows=list(ckpt["metrics"]),
                      best_val=float(ckpt["best_val"]), best_epoch=int(ckpt.get("best_epoch", 0)),
                      partial=ckpt.get("partial"))
    if state.partial is None:  # taken after an epoch ended: restore now, before the next epoch starts
        set_rng_state(ckpt["rng"], device)
        return state, None
    return state, ckpt["rng"]  # taken after a step: restore after on_epoch_start, where the step loop goes on


def _select(cfg, key: str):
    return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _short(value) -> str:
    value = _plain(value)
    if isinstance(value, dict):
        value = value.get("_target_", value)
    return str(value)


def resume_config(cfg: DictConfig, ckpt: dict, path: Path, overrides: list[str]) -> DictConfig:
    """The checkpoint's config, with the RESUMABLE keys the user gave (`epochs=20` to train longer).

    Any other key given with resume= must equal the checkpoint's: a resume continues the run as configured.
    """
    merged = OmegaConf.create(ckpt["config"])
    for section in ("trainer", "eval"):  # a setting declared since the checkpoint was written: today's value
        merged[section] = OmegaConf.merge(cfg[section], merged[section] if section in merged else {})
    given = {o.key_or_group for o in parse(overrides)} - {"resume"}
    for key in sorted(given):
        new = _select(cfg, key)
        if key.split(".")[0] in RESUMABLE or key in RESUMABLE:  # logger=csv drops the trackers a run had
            OmegaConf.update(merged, key, _plain(new), merge=key != "logger", force_add=True)
            continue
        if _plain(new) != _plain(_select(merged, key)):
            raise AecliError(f"resume continues a run as it was configured: {key}={_short(new)} differs from the "
                             f"checkpoint's {key}={_short(_select(merged, key))} ({path}); only "
                             f"{', '.join(RESUMABLE)} may change")
    merged.resume = str(path)
    return merged
