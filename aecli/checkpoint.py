"""Checkpoints: written atomically, read with `torch.load(weights_only=True)` only.

A checkpoint is a dict of tensors and plain containers: `model` (a state_dict), `epoch`, `step`,
`config` (the resolved config as plain containers) and, for resuming, the optimizers, RNG states, the
batcher's position, the metrics rows so far and, for a checkpoint written mid-epoch (an interrupt), the
epoch's partial loss sums under `partial`. Nothing in it is a pickled object, so `weights_only=True`
loads it and refuses anything else without running it.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import torch

from aecli.errors import AecliError
from aecli.rundir import BEST, CHECKPOINTS, LAST, RunDir

OTHER_CHECKPOINTS = f"{CHECKPOINTS}/{LAST} or {BEST}"  # what a user can try instead of a broken one


def save_atomic(obj: dict, *paths: Path) -> None:
    """Serialize `obj` once, then write it to each path: to a temporary file beside it, flush and fsync, then
    rename over it. Never a half file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getbuffer()
    for path in map(Path, paths):
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except OSError as e:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise AecliError(f"cannot write checkpoint {path} ({e.strerror or e}): the folder must be writable with "
                             "free space") from None


def load_checkpoint(path: Path, map_location="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint safely: tensors and containers only, so a pickled object is refused, never run. `mmap`:
    map the file instead of reading it, so that a look at its config alone never reads its tensors."""
    path = Path(path)
    if not path.is_file():
        raise AecliError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # torch.save writes a zip archive: this is no checkpoint at all
            raise AecliError(f"checkpoint {path} is not a torch checkpoint (corrupt or another kind of file): use "
                             f"another checkpoint of the run ({OTHER_CHECKPOINTS})")
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        why = next((ln for ln in lines if ln.startswith(("Unsupported global", "Unsupported operand"))),
                   lines[0] if lines else "unsupported content")
        raise AecliError(f"checkpoint {path} holds something other than tensors and plain containers and was "
                         f"refused without running it ({why[:160]})")
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise AecliError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}): use another "
                         f"checkpoint of the run ({OTHER_CHECKPOINTS})")
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
    path = RunDir(run).checkpoint(which)
    if not path.is_file():
        raise AecliError(f"{run} has no {path.relative_to(run)}: is it an aecli run folder?")
    return path


def describe(config: dict) -> str:
    """A run's model in a few words, from its config: `VAE (net MLP hidden=[64, 32], latent_dim 4)`."""
    model = (config.get("model") or {}).get("_target_", "?").rsplit(".", 1)[-1]
    net = dict(config.get("net") or {})
    name = str(net.pop("_target_", "?")).rsplit(".", 1)[-1]
    options = " ".join(f"{k}={v}" for k, v in net.items() if k != "activation")
    return f"{model} (net {name} {options}, latent_dim {config.get('latent_dim', '?')})"


def load_model_state(model, config: dict, ckpt: dict, path: Path) -> None:
    """Load `ckpt`'s weights into `model` (built from `config`), or say in one line how the two differ."""
    state, want = ckpt["model"], model.state_dict()
    theirs, mine = describe(ckpt["config"]), describe(config)
    what = (f"checkpoint {path}'s weights do not fit the {mine} model its config describes" if theirs == mine else
            f"checkpoint {path} holds a {theirs} model that does not fit the {mine} model asked for")
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing or extra:
        raise AecliError(f"{what} (missing {missing[:3]}, unexpected {extra[:3]})")
    for k, v in want.items():
        if tuple(state[k].shape) != tuple(v.shape):
            raise AecliError(f"{what}: {k} is {list(state[k].shape)} in the checkpoint and {list(v.shape)} in the model")
    model.load_state_dict(state)
