"""The feature classifier `aecli eval` measures generated images with: trained once per data set, then cached.

A small MLP, x -> 256 -> 64 -> classes (ReLU), trained for `eval.classifier_epochs` epochs with Adam (batches of
128, lr 2e-3, seeded) on the whole training split, never the test set. Its 64-d penultimate activations are the
feature space of the Fréchet distance (the FID recipe of Heusel et al. 2017, with this classifier in place of
Inception), and its predictions score a conditional model's samples of each label. It trains in seconds on the
CPU; the weights are written to `<cache>/<data key>_classifier_v<VERSION>_e<epochs>.pt` and read back after that.
It needs labels: a data set without them gets no classifier (evaluation says so and skips what needs it).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aecli.checkpoint import save_atomic

log = logging.getLogger("aecli")

VERSION = 2  # bump when the architecture or the recipe changes: old caches are then ignored
FEATURE_DIM = 64
BATCH = 128
LR = 2e-3
SEED = 0


class FeatureNet(nn.Module):
    """x [B, C, H, W] in [0, 1] -> logits [B, classes]; `features` gives the 64-d penultimate activations."""

    def __init__(self, image_shape=(1, 28, 28), n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(image_shape), 256), nn.ReLU(),
                                  nn.Linear(256, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cache_folder(cache_dir: str | None = None) -> Path:
    """`cache_dir` if given, else ~/.cache/aecli (XDG_CACHE_HOME), where the classifiers and the pixel floors live."""
    folder = Path(cache_dir or Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "aecli").expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    from aecli.errors import AecliError

    raise AecliError(f"the eval cache folder {folder} is not writable: set eval.cache_dir to a writable folder")


def train_classifier(split, image_shape, n_classes: int, epochs: int, device: torch.device) -> FeatureNet:
    """Fit FeatureNet on a labelled split with cross-entropy, Adam, a fixed seed."""
    gen = torch.Generator().manual_seed(SEED)
    with torch.random.fork_rng():  # the run's own RNG stream is left as it was
        torch.manual_seed(SEED)
        net = FeatureNet(image_shape, n_classes).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    for _ in range(epochs):
        perm = torch.randperm(len(split), generator=gen).to(split.images.device)
        for start in range(0, len(perm), BATCH):
            x, y = split.batch(perm[start:start + BATCH])
            loss = F.cross_entropy(net(x.to(device)), y.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: FeatureNet, split, batch: int = 2000) -> float:
    """Top-1 accuracy on a labelled split."""
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(split), batch):
        x, y = split.batch(torch.arange(start, min(start + batch, len(split)), device=split.images.device))
        correct += (net(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return correct / len(split)


def load_classifier(data, device: torch.device, epochs: int = 1,
                    cache_dir: str | None = None) -> tuple[FeatureNet, float]:
    """The data set's classifier (eval mode, on `device`) and its test accuracy: from the cache, or trained on the
    whole training split and cached (written atomically, so concurrent runs never see half a file)."""
    path = cache_folder(cache_dir) / f"{data.key}_classifier_v{VERSION}_e{epochs}.pt"
    net = FeatureNet(data.image_shape, data.n_classes)
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(saved["model"])
            return net.to(device).eval(), float(saved["test_acc"])
        except Exception as e:  # noqa: BLE001 - a stale or broken cache is retrained, not fatal
            log.warning(f"ignoring the unreadable classifier cache {path} ({type(e).__name__}): retraining")
    log.info(f"training the {data.name} feature classifier once ({epochs} epochs on {len(data.train_all)} images); "
             f"cached in {path}")
    net = train_classifier(data.train_all, data.image_shape, data.n_classes, epochs, device)
    test_acc = accuracy(net, data.test)
    save_atomic({"model": net.state_dict(), "test_acc": test_acc, "version": VERSION}, path)
    return net.to(device).eval(), test_acc


def cached_json(path: Path, key: str, compute) -> dict:
    """`compute()` (a dict of plain numbers) stored under `key` in the JSON file `path`, computed only once."""
    def read() -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    table = read()
    if key in table:
        return table[key]
    value = compute()
    table = read()  # another process may have added a key meanwhile
    table[key] = value
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)
    return value
