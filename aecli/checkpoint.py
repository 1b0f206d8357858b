"""Checkpoints: written atomically, read with `torch.load(weights_only=True)` only.

A checkpoint is a dict of tensors and plain containers: `model` (a state_dict), `epoch`, `step`,
`config` (the resolved config as plain containers) and, for resuming, the optimizers, RNG states, the
batcher's position and the metrics rows so far.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from aecli.errors import AecliError


def save_atomic(obj: dict, path: Path) -> None:
    """Write to a temporary file beside `path`, flush and fsync, then rename over it: never a half file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise AecliError(f"cannot write checkpoint {path} ({e.strerror}): the folder must be writable with free space")


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Load a checkpoint safely: tensors and containers only, so a pickled object is refused, never run."""
    path = Path(path)
    if not path.is_file():
        raise AecliError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsupported content"
        raise AecliError(f"checkpoint {path} holds something other than tensors and plain containers and was "
                         f"refused without running it ({first[:160]})")
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise AecliError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}): use another "
                         "checkpoint of the run (checkpoints/last.pt or best.pt)")
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise AecliError(f"checkpoint {path} is not an aecli checkpoint (no model state and config)")
    return ckpt


def find_checkpoint(run: str | os.PathLike, which: str = "best") -> Path:
    """A run folder (its checkpoints/<which>.pt) or a checkpoint file itself."""
    run = Path(run).expanduser()
    if run.is_file():
        return run
    if not run.exists():
        raise AecliError(f"run {run} does not exist: give a run folder (outputs/...) or a checkpoint file")
    path = run / "checkpoints" / f"{which}.pt"
    if not path.is_file():
        raise AecliError(f"{run} has no checkpoints/{which}.pt: is it an aecli run folder?")
    return path
