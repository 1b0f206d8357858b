"""Shared fixtures: a laid-out data root (IDX files), tiny configs, and the CLI in a subprocess.

The data: the real MNIST and Fashion-MNIST files when they are at hand ($AECLI_TEST_DATA_ROOT, $AECLI_DATA_ROOT,
or laid out by ../shared/data/seed-data.sh beside the repository); else files this suite writes in the official
IDX format, with the official counts and class histograms and digit-like class patterns, so every test of the
format, the CLI and the models still runs. Tests that need the real images are marked `real_data`: without them
they are skipped, and the run ends with one line saying how many and how to lay the files out.
AECLI_TEST_WRITE_DATA=1 runs the suite on written files even where the real ones are at hand.
"""

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


def real_root() -> Path | None:
    """A folder holding the real MNIST files: $AECLI_TEST_DATA_ROOT, then $AECLI_DATA_ROOT (what users set to train)."""
    for var in ("AECLI_TEST_DATA_ROOT", "AECLI_DATA_ROOT"):
        given = os.environ.get(var)
        if given and (Path(given).expanduser() / "MNIST" / "raw").is_dir():
            return Path(given).expanduser()
    return None


SYNTHETIC: list[bool] = []  # set when the session runs on written files, for the closing line


def write_idx_like(root: Path) -> None:
    """MNIST and Fashion-MNIST in the official IDX format under root/<folder>/raw: the official sizes, counts and
    class histograms, each class a fixed 28x28 stroke pattern, shifted and noised per image (learnable, not real)."""
    import numpy as np

    from aecli.datasets.fashion_mnist import FashionMNIST
    from aecli.datasets.mnist import MNIST

    for seed, cls in enumerate((MNIST, FashionMNIST)):
        g = np.random.default_rng(seed)
        templates = (g.random((10, 7, 7)) > 0.6).repeat(4, 1).repeat(4, 2).astype(np.float32)  # ten 28x28 patterns
        raw = root / cls.folder / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        for split, (image_stem, label_stem) in (("train", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")),
                                                ("test", ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))):
            labels = np.repeat(np.arange(10), cls.counts[split]).astype(np.uint8)
            g.shuffle(labels)
            images = templates[labels]
            shift = g.integers(-2, 3, size=(len(labels), 2))
            for axis in (0, 1):
                for k in (-2, -1, 1, 2):
                    rows = shift[:, axis] == k
                    images[rows] = np.roll(images[rows], k, axis=1 + axis)
            images = np.clip(images * 0.9 + 0.1 * g.random(images.shape, dtype=np.float32), 0, 1)
            (raw / image_stem).write_bytes((2051).to_bytes(4, "big") + b"".join(
                d.to_bytes(4, "big") for d in (len(labels), 28, 28)) + (images * 255).astype(np.uint8).tobytes())
            (raw / label_stem).write_bytes((2049).to_bytes(4, "big") + len(labels).to_bytes(4, "big") + labels.tobytes())


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """A data root holding MNIST and Fashion-MNIST in torchvision's layout (module doc)."""
    given = None if os.environ.get("AECLI_TEST_WRITE_DATA") else real_root()
    if given is not None:
        return given
    root = tmp_path_factory.mktemp("data")
    if SEED_DATA.is_file() and not os.environ.get("AECLI_TEST_WRITE_DATA"):
        subprocess.run(["bash", str(SEED_DATA), str(root)], check=True, capture_output=True)
        return root
    write_idx_like(root)
    SYNTHETIC.append(True)
    return root


CURRENT_TEST: list = []  # the test being set up or run (its fixtures included), for run_cli's check of `slow`


def pytest_runtest_setup(item):
    CURRENT_TEST[:] = [item]


def pytest_runtest_teardown(item):
    CURRENT_TEST.clear()


@pytest.fixture(autouse=True)
def _real_data_only(request):
    """A test marked real_data needs the real images: skipped on written files (the closing line counts them)."""
    if request.node.get_closest_marker("real_data") and "data_root" in request.fixturenames:
        request.getfixturevalue("data_root")
        if SYNTHETIC:
            pytest.skip("needs the real MNIST and Fashion-MNIST images")


def pytest_terminal_summary(terminalreporter):
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "real MNIST" in str(r.longrepr)]
    if SYNTHETIC or skipped:
        terminalreporter.write_line(
            f"aecli: {len(skipped)} tests need the real MNIST and Fashion-MNIST images and were skipped (the rest ran "
            f"on IDX files the suite wrote): download the four files of each data set (README.md, Data) into "
            f"DIR/MNIST/raw and DIR/FashionMNIST/raw, then AECLI_TEST_DATA_ROOT=DIR uv run pytest -q",
            red=True, bold=True)


def tiny_overrides(data_root: Path, net: str = "mlp", **extra) -> list[str]:
    """Overrides for a run that takes seconds: 512 training images, 256 validation images, one epoch, a tiny net."""
    base = {"data.root": str(data_root), "data.limit": 512, "data.val_size": 256, "epochs": 1,
            "batch_size": 128, "net": net, "latent_dim": 4, "device": "cpu", "eval.at_end": "false",
            "trainer.num_threads": 1}
    base.update({"net.hidden": "[64,32]"} if net == "mlp" else {"net.channels": "[8,16]"})
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


def run_cli(*args: str, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """The real `aecli` entry point in a subprocess, output captured, never a terminal. Only a test marked `slow`
    may start it: the fast tier (`pytest -m "not slow"`) runs in process."""
    if CURRENT_TEST and not CURRENT_TEST[0].get_closest_marker("slow"):
        pytest.fail(f"{CURRENT_TEST[0].nodeid} starts the CLI in a subprocess: mark it @pytest.mark.slow")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    exe = shutil.which("aecli") or ""
    cmd = [exe] if exe else [sys.executable, "-m", "aecli.cli"]
    return subprocess.run([*cmd, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env,
                          stdin=subprocess.DEVNULL)


def cli_error(capsys, *args: str) -> tuple[int, str]:
    """Run `aecli ARGS` in-process; its exit code and its stderr, which must be exactly one line."""
    from aecli.cli import main

    with pytest.raises(SystemExit) as e:
        main(list(args))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aecli: ") and "Traceback" not in err, err
    return e.value.code, err


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread is fastest, and LAPACK's threads crawl on an oversubscribed machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
