"""The feature classifier `aecli eval` measures generated images with: trained once per data set, then cached.

A small MLP, x -> 256 -> 64 -> 10 classes (ReLU), trained for `eval.classifier_epochs` epochs with Adam
(batches of 128, lr 2e-3, seeded) on the official training set, never the test set. Its 64-d penultimate
activations are the feature space of the Fréchet distance (the FID recipe of Heusel et al. 2017, with this
classifier in place of Inception), and its predictions score a conditional model's samples of each label.
It trains in seconds on the CPU; the weights are written to `<cache>/<data>_classifier_v<VERSION>_e<epochs>.pt`
and read back after that.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aecli.checkpoint import save_atomic
from aecli.data import load_raw

log = logging.getLogger("aecli")

VERSION = 1  # bump when the architecture or the recipe changes: old caches are then ignored
FEATURE_DIM = 64
BATCH = 128
LR = 2e-3
SEED = 0


class FeatureNet(nn.Module):
    """x [B, 1, 28, 28] in [0, 1] -> logits [B, 10]; `features` gives the 64-d penultimate activations."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def cache_folder(data_root: str | os.PathLike, cache_dir: str | None = None) -> Path:
    """`cache_dir` if given, else `<data_root>/aecli_cache`; when that is not writable, ~/.cache/aecli."""
    candidates = [Path(cache_dir).expanduser()] if cache_dir else [Path(data_root).expanduser() / "aecli_cache"]
    candidates.append(Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "aecli")
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    from aecli.errors import AecliError

    raise AecliError(f"no writable cache folder for the eval classifier (tried {', '.join(map(str, candidates))}): "
                     "set eval.cache_dir to a writable folder")


def train_classifier(images: torch.Tensor, labels: torch.Tensor, epochs: int, device: torch.device) -> FeatureNet:
    """Fit FeatureNet on uint8 images [N, 28, 28] with cross-entropy, Adam, a fixed seed."""
    gen = torch.Generator().manual_seed(SEED)
    torch.manual_seed(SEED)
    net = FeatureNet().to(device)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    x_all, y_all = images.to(device).unsqueeze(1), labels.to(device).long()
    for _ in range(epochs):
        perm = torch.randperm(len(x_all), generator=gen).to(device)
        for start in range(0, len(perm), BATCH):
            idx = perm[start:start + BATCH]
            loss = F.cross_entropy(net(x_all[idx].float() / 255.0), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, batch: int = 2000) -> float:
    """Top-1 accuracy on uint8 images [N, 1 or none, 28, 28]."""
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(images), batch):
        x = images[start:start + batch].to(device).float().div(255.0).reshape(-1, 1, 28, 28)
        correct += (net(x).argmax(1) == labels[start:start + batch].to(device)).sum().item()
    return correct / len(images)


def load_classifier(data: str, data_root: str | os.PathLike, device: torch.device, epochs: int = 2,
                    cache_dir: str | None = None) -> tuple[FeatureNet, float]:
    """The data set's classifier (eval mode, on `device`) and its test accuracy: from the cache, or trained
    on the official training set and cached (written atomically, so concurrent runs never see half a file)."""
    path = cache_folder(data_root, cache_dir) / f"{data}_classifier_v{VERSION}_e{epochs}.pt"
    net = FeatureNet()
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            net.load_state_dict(saved["model"])
            return net.to(device).eval(), float(saved["test_acc"])
        except Exception as e:  # noqa: BLE001 - a stale or broken cache is retrained, not fatal
            log.warning(f"ignoring the unreadable classifier cache {path} ({type(e).__name__}): retraining")
    (x_train, y_train), (x_test, y_test) = load_raw(data, data_root, download=False)
    log.info(f"training the {data} feature classifier once ({epochs} epochs on {len(x_train)} images); "
             f"cached in {path}")
    net = train_classifier(x_train, y_train, epochs, torch.device("cpu"))
    test_acc = accuracy(net, x_test, y_test)
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
