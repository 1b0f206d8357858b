"""Shared fixtures: a laid-out data root (real IDX files), tiny configs, and the CLI in a subprocess."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Subprocesses (the real CLI) import torch each time: let Python keep its byte-code cache.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

REPO = Path(__file__).resolve().parent.parent
SEED_DATA = REPO.parent / "shared" / "data" / "seed-data.sh"
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def components(group: str) -> list[str]:
    """The options of a config group, from conf/ (model, net, data, ...): a new component is tested the day it lands."""
    return sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml"))


MODELS, NETS, DATASETS = components("model"), components("net"), components("data")
IDX_DATASETS = ["mnist", "fashion_mnist"]  # the data sets the tests can lay out (data=images needs a path)


def load_data(name: str, root, device=torch.device("cpu"), download: bool = False, limit: int | None = None,
              val_size: int = 5000):
    """A data set of conf/data loaded onto `device` through its class, as `aecli train data=NAME` would."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    target = OmegaConf.load(REPO / "conf" / "data" / f"{name}.yaml")["_target_"]
    return get_class(target)(root=str(root), download=download, limit=limit, val_size=val_size).load(device)


def as_net(spec: dict):
    """A net from a short spec, {"name": "mlp", "hidden": [12], "activation": "relu"}, as its yaml would build it."""
    from aecli.nets.conv import Conv
    from aecli.nets.mlp import MLP

    spec = dict(spec)
    return {"mlp": MLP, "conv": Conv}[spec.pop("name")](**spec)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """MNIST and Fashion-MNIST in torchvision's layout: $AECLI_TEST_DATA_ROOT if set, else laid out once."""
    given = os.environ.get("AECLI_TEST_DATA_ROOT")
    if given and (Path(given) / "MNIST" / "raw").is_dir():
        return Path(given)
    root = tmp_path_factory.mktemp("data")
    if not SEED_DATA.is_file():
        pytest.skip(f"no data: set AECLI_TEST_DATA_ROOT or provide {SEED_DATA}")
    subprocess.run(["bash", str(SEED_DATA), str(root)], check=True, capture_output=True)
    return root


def tiny_overrides(data_root: Path, net: str = "mlp", **extra) -> list[str]:
    """Overrides for a run that takes seconds: 512 training images, 256 validation images, one epoch, a tiny net."""
    base = {"data.root": str(data_root), "data.limit": 512, "data.val_size": 256, "epochs": 1,
            "batch_size": 128, "net": net, "latent_dim": 4, "device": "cpu", "eval.at_end": "false",
            "trainer.num_threads": 1}
    base.update({"net.hidden": "[64,32]"} if net == "mlp" else {"net.channels": "[8,16]"})
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `aecli` entry point in a subprocess, output captured, never a terminal."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    exe = shutil.which("aecli") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "aecli.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          stdin=subprocess.DEVNULL)
