"""A finished run, loaded: its model rebuilt from a checkpoint alone (the config and the data's shape and classes
are in it) and its data set, for `aecli sample`, `aecli eval` and the Python API."""

from __future__ import annotations

from pathlib import Path

import torch

from aecli.checkpoint import find_checkpoint, load_checkpoint, load_model_state
from aecli.config import build_dataset, build_model, resolve_device
from aecli.rundir import CHECKPOINTS


def load_trained(run: str | Path, which: str = "best", device: str = "auto"):
    """(model in eval mode on the device, checkpoint dict, run folder) for a run folder or a checkpoint file."""
    path = find_checkpoint(run, which)
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, map_location=dev)
    info = ckpt.get("data") or {"image_shape": [1, 28, 28], "classes": [str(i) for i in range(10)]}
    model = build_model(ckpt["config"], info["image_shape"], len(info["classes"] or [])).to(dev)
    load_model_state(model, ckpt["config"], ckpt, path)
    model.eval()
    run_dir = path.parent.parent if path.parent.name == CHECKPOINTS else path.parent
    return model, ckpt, run_dir


def load_run_data(ckpt: dict, device: torch.device):
    """The data set a checkpoint was trained on, loaded onto `device` (its test split is what eval scores)."""
    return build_dataset(ckpt["config"]).load(device)
