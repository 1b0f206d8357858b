"""Adding a component touches nothing else: a model, a net and a data set, each one .py and one .yaml in a copy of
the package, train, sample and evaluate through the real CLI. And the layers import only downward."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO

WAE = '''
"""Wasserstein autoencoder, MMD variant (Tolstikhin et al. 2018): L = R(x, g(f(x))) + lambda * MMD^2(q(z), N(0, I))."""
from dataclasses import dataclass

import torch

from aecli import schema
from aecli.models.base import IMAGE_SHAPE
from aecli.models.deterministic import DeterministicAE, recon_loss


@dataclass
class Options(schema.Options):
    recon_loss: str = recon_loss()


class WAE(DeterministicAE):  # a deterministic code with a native prior: N(0, I), the base class's
    name = "wae"
    Options = Options
    default_lambda = 10.0

    def loss(self, x, y=None):
        z = self.encode(x)
        recon = self.recon_nll(self.decode(z), x).mean()
        prior = torch.randn_like(z)
        k = lambda a, b: torch.exp(-torch.cdist(a, b).pow(2) / (2 * z.shape[1]))
        n = len(z)
        mmd = ((k(z, z).sum() - n) + (k(prior, prior).sum() - n)) / (n * (n - 1)) - 2 * k(z, prior).mean()
        return {"loss": recon + self.lam * mmd, "recon": recon, "mmd": mmd}
'''
WAE_YAML = '''
# @package _global_
model:
  _target_: aecli.models.wae.WAE
  recon_loss: bce
lambda: 10.0
'''
DEEP = '''
"""`net=deep`: `blocks` residual fully connected blocks of one width: a net with a second hyperparameter."""
import math
from dataclasses import dataclass

import torch
from torch import nn

from aecli import schema
from aecli.nets import Net, cat_condition


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, h):
        return h + torch.relu(self.linear(h))


class Encoder(nn.Module):
    def __init__(self, image_shape, width, blocks, out_dim, cond_dim):
        super().__init__()
        self.inp = nn.Linear(math.prod(image_shape) + cond_dim, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.out = nn.Linear(width, out_dim)

    def forward(self, x, c=None, acts=None):
        return self.out(self.blocks(self.inp(cat_condition(x.flatten(1), c))))


class Decoder(nn.Module):
    def __init__(self, image_shape, width, blocks, in_dim, cond_dim):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.inp = nn.Linear(in_dim + cond_dim, width)
        self.blocks = nn.Sequential(*[Block(width) for _ in range(blocks)])
        self.out = nn.Linear(width, math.prod(image_shape))

    @torch.no_grad()
    def set_output_bias(self, logits):
        self.out.bias.copy_(logits.flatten())

    def forward(self, z, c=None, acts=None):
        return self.out(self.blocks(self.inp(cat_condition(z, c)))).view(-1, *self.image_shape)


@dataclass
class Options(schema.Options):
    width: int = schema.integer(64, low=1)
    blocks: int = schema.integer(2, low=0)


class Deep(Net):
    name = "deep"
    Options = Options

    def __init__(self, width=64, blocks=2):
        self.width, self.blocks = width, blocks

    def encoder(self, image_shape, out_dim, cond_dim=0, dropout=0.0):
        return Encoder(image_shape, self.width, self.blocks, out_dim, cond_dim)

    def decoder(self, image_shape, in_dim, cond_dim=0, dropout=0.0):
        return Decoder(image_shape, self.width, self.blocks, in_dim, cond_dim)
'''
DEEP_YAML = '''
_target_: aecli.nets.deep.Deep
width: 64
blocks: 2
'''
STRIPES = '''
"""`data=stripes`: 16x16 RGB images of a bar at one of four angles (the label), with noise; made, not read."""
from dataclasses import dataclass

import torch

from aecli import schema
from aecli.data import Data, Dataset, make_splits


@dataclass
class Options(schema.Options):
    count: int = schema.integer(1200, low=100)
    val_size: int = schema.integer(200, low=1)


class Stripes(Dataset):
    name = "stripes"
    Options = Options

    def __init__(self, count=1200, val_size=200):
        self.count, self.val_size = count, val_size

    def images(self, n, seed):
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 4, (n,), generator=g)
        i, j = torch.meshgrid(torch.arange(16), torch.arange(16), indexing="ij")
        masks = torch.stack([i == 8, j == 8, i == j, i + j == 15]).float()
        x = masks[y].unsqueeze(1).repeat(1, 3, 1, 1) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
        x = (x + 0.1 * torch.rand(n, 3, 16, 16, generator=g)).clamp(0, 1)
        return (x * 255).round().to(torch.uint8), y

    def load(self, device):
        x, y = self.images(self.count, 0)
        splits = make_splits(x, y, self.images(300, 1), self.val_size, None, device)
        return Data(name=self.name, classes=["row", "column", "diagonal", "antidiagonal"], image_shape=(3, 16, 16),
                    key="stripes", **splits)
'''
STRIPES_YAML = '''
_target_: aecli.datasets.stripes.Stripes
count: 1200
val_size: 200
'''
NEW_FILES = {"aecli/models/wae.py": WAE, "conf/model/wae.yaml": WAE_YAML, "aecli/nets/deep.py": DEEP,
             "conf/net/deep.yaml": DEEP_YAML, "aecli/datasets/stripes.py": STRIPES, "conf/data/stripes.yaml": STRIPES_YAML}


@pytest.mark.slow
def test_a_model_a_net_and_a_data_set_are_each_one_file_and_one_yaml(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "aecli", copy / "aecli", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "conf", copy / "conf")
    for rel, text in NEW_FILES.items():
        (copy / rel).write_text(textwrap.dedent(text).lstrip())
    env = {**os.environ, "PYTHONPATH": str(copy), "PYTHONUNBUFFERED": "1"}

    def cli(*args):
        proc = subprocess.run([sys.executable, "-m", "aecli.cli", *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    small_eval = ["eval.test_images=300", "eval.probe_train_images=300", "eval.jacobian_images=20",
                  "eval.mmd_images=100", "eval.frechet_images=300"]
    cli("train", "model=wae", "net=deep", "data=stripes", "epochs=1", "latent_dim=4", "batch_size=64", "device=cpu",
        "net.blocks=3", "hydra.run.dir=run", *small_eval)
    run = tmp_path / "run"
    eval_json = (run / "eval.json").read_text()
    assert '"model": "wae"' in eval_json and '"mmd"' in eval_json  # its native prior: the mmd, not a mixture
    assert '"data": "stripes"' in eval_json and '"probe_acc"' in eval_json
    cli("sample", f"run={run}", "n=16", f"out={tmp_path / 'grid.png'}")
    cli("eval", f"run={run}")
    from PIL import Image

    with Image.open(tmp_path / "grid.png") as im:
        assert im.mode == "RGB"  # the data set's three channels came through


# -- layers: imports only go down ---------------------------------------------------------------------------
LAYERS = [  # a module may import aecli modules of its own layer or below, never above
    {"errors", "paths", "schema", "metric_names", "rundir", "settings", "overrides", "commands", "cores"},
    {"nets", "data", "metrics", "parzen", "plots", "progress", "checkpoint", "config", "signals", "search"},
    {"datasets", "models"},
    {"classifier", "finetune", "loggers", "resume", "sampling", "writer", "runs", "schedule", "validation", "health",
     "prior_fit", "checkpointing", "build", "runtable"},
    {"loop", "evaluate"},
    {"job", "sweep", "report"},
    {"cli", "api", "preflight", "hydra_glue"},
]
LAYERS[0] |= {"cores", "search", "rundir"}  # the Optuna search's modules (and the run folder's names they use)


def layer(module: str) -> int:
    top = module.split(".")[1] if module.startswith("aecli.") else module
    return next(i for i, names in enumerate(LAYERS) if top in names)


def imports() -> dict[str, set[str]]:
    """Every aecli module and the aecli modules it imports, at any depth of its code (function-level imports too)."""
    graph: dict[str, set[str]] = {}
    for path in (REPO / "aecli").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module == "aecli":  # from aecli import schema
                names.update(f"aecli.{a.name}" for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        graph[module] = {n for n in names if n.startswith("aecli.")}
    return graph


def test_imports_only_go_down():
    """Every `import aecli.x` / `from aecli.x import` in the package, at any depth, points to its own layer or below
    (the circle evaluate -> cli is gone: config_dir lives in aecli/paths.py)."""
    upward = [f"{module} imports {name}" for module, names in imports().items() if module != "aecli"
              for name in names if layer(name) > layer(module)]
    assert not upward, upward


def test_no_module_imports_itself_through_others():
    """No import circle between aecli's modules (report -> sweep -> report was one): a walk of the import graph
    from each module never comes back to it."""
    everything = imports()
    graph = {m: {n for n in names if n in everything} for m, names in everything.items()}
    circles = []
    for start in graph:
        seen, todo = set(), list(graph[start])
        while todo:
            module = todo.pop()
            if module == start:
                circles.append(start)
                break
            if module not in seen:
                seen.add(module)
                todo += graph.get(module, ())
    assert not circles, f"modules on an import circle: {circles}"
