"""`aecli sample`: load a finished run's best checkpoint and write a grid of samples from its prior."""

from __future__ import annotations

from pathlib import Path

import torch

from aecli.checkpoint import find_checkpoint, load_checkpoint
from aecli.config import build_model, resolve_device
from aecli.errors import AecliError
from aecli.plots import save_grid

N_CLASSES = 10


@torch.no_grad()
def draw_samples(model, n: int, seed: int, label: int | None = None) -> tuple[torch.Tensor, int]:
    """n images from the model's prior and the grid's row length.

    A conditional model draws `label` when given, else one row per class (n rounded to whole rows).
    """
    device = next(model.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    if not model.conditional:
        if label is not None:
            raise AecliError(f"label={label} needs a conditional model (cvae); this run's model is {model.name}")
        return model.sample(n, generator=generator), max(1, int(n ** 0.5))
    if label is not None:
        if not 0 <= label < N_CLASSES:
            raise AecliError(f"label={label} is out of range: allowed 0..{N_CLASSES - 1}")
        y = torch.full((n,), label, device=device, dtype=torch.long)
        return model.sample(n, y=y, generator=generator), max(1, int(n ** 0.5))
    per_class = max(1, n // N_CLASSES)
    y = torch.arange(N_CLASSES, device=device).repeat_interleave(per_class)
    return model.sample(len(y), y=y, generator=generator), per_class


def load_run(run: str, which: str = "best", device: str = "auto"):
    """(model in eval mode on the device, checkpoint dict, run folder) for a run folder or checkpoint file."""
    path = find_checkpoint(run, which)
    dev = resolve_device(device)
    ckpt = load_checkpoint(path, map_location=dev)
    model = build_model(ckpt["config"]).to(dev)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise AecliError(f"checkpoint {path} does not fit model {ckpt['config']['model'].get('_target_')} "
                         f"with this config: {str(e).splitlines()[0]}")
    model.eval()
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return model, ckpt, run_dir


def sample_command(run: str, n: int = 64, out: str | None = None, seed: int = 0,
                   label: int | None = None, device: str = "auto") -> Path:
    if n < 1:
        raise AecliError(f"n={n} is not allowed: n must be an integer >= 1")
    model, _, run_dir = load_run(run, device=device)
    images, nrow = draw_samples(model, n, seed, label)
    target = Path(out) if out else run_dir / "images" / (f"samples_label{label}_seed{seed}.png" if label is not None
                                                         else f"samples_seed{seed}.png")
    try:
        return save_grid(images, target, nrow=nrow)
    except OSError as e:
        raise AecliError(f"cannot write {target} ({e.strerror}): choose a writable out=FILE")
