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
from aecli.rundir import EVAL
from aecli.progress import StageProgress

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


def train_classifier(split, image_shape, n_classes: int, epochs: int, device: torch.device,
                     progress: StageProgress | None = None) -> FeatureNet:
    """Fit FeatureNet on a labelled split with cross-entropy, Adam, a fixed seed (`progress` advances by epochs)."""
    gen = torch.Generator().manual_seed(SEED)
    net = seeded(FeatureNet, image_shape, n_classes, device)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    for _ in range(epochs):
        train_epoch(net, opt, split, gen, device)
        if progress is not None:
            progress.advance()
    return net.eval()


def seeded(cls, image_shape, n_classes: int, device: torch.device) -> nn.Module:
    """A classifier net initialized from SEED; the run's own RNG stream is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(SEED)
        return cls(image_shape, n_classes).to(device)


def train_epoch(net: nn.Module, opt, split, gen: torch.Generator, device: torch.device) -> None:
    """One pass of cross-entropy over `split` in batches of BATCH, shuffled by `gen`."""
    net.train()
    perm = torch.randperm(len(split), generator=gen).to(split.images.device)
    for start in range(0, len(perm), BATCH):
        x, y = split.batch(perm[start:start + BATCH])
        loss = F.cross_entropy(net(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


@torch.no_grad()
def accuracy(net: FeatureNet, split, batch: int = 2000) -> float:
    """Top-1 accuracy on a labelled split."""
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(split), batch):
        x, y = split.batch(torch.arange(start, min(start + batch, len(split)), device=split.images.device))
        correct += (net(x.to(device)).argmax(1) == y.to(device)).sum().item()
    return correct / len(split)


def from_cache(net: nn.Module, path: Path, device: torch.device) -> tuple[nn.Module, float] | None:
    """`net` with the cached weights at `path` (eval mode, on `device`) and its test accuracy; None when there is no
    cache, or a stale or broken one (then retrained, not fatal)."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["model"])
        return net.to(device).eval(), float(saved["test_acc"])
    except Exception as e:  # noqa: BLE001
        log.warning(f"ignoring the unreadable classifier cache {path} ({type(e).__name__}): retraining")
        return None


def load_classifier(data, device: torch.device, epochs: int = 1,
                    cache_dir: str | None = None) -> tuple[FeatureNet, float]:
    """The data set's classifier (eval mode, on `device`) and its test accuracy: from the cache, or trained on the
    whole training split and cached (written atomically, so concurrent runs never see half a file)."""
    path = cache_folder(cache_dir) / f"{data.key}_classifier_v{VERSION}_e{epochs}.pt"
    cached = from_cache(FeatureNet(data.image_shape, data.n_classes), path, device)
    if cached is not None:
        return cached
    what = f"eval: training the {data.name} feature classifier once ({epochs} epochs on {len(data.train_all):,} images)"
    log.info(f"{what}; cached in {path}")
    with StageProgress(what, total=epochs) as progress:
        net = train_classifier(data.train_all, data.image_shape, data.n_classes, epochs, device, progress)
    test_acc = accuracy(net, data.test)
    save_atomic({"model": net.state_dict(), "test_acc": test_acc, "version": VERSION}, path)
    return net.to(device).eval(), test_acc


# -- the paper protocol's classifier (eval.classifier=cnn) ------------------------------------------------
CLASSIFIERS = ("mlp", "cnn")  # eval.classifier: FeatureNet above (fast), ConvFeatureNet below (eval.protocol=paper)
CNN_VERSION = 1  # in the cache name: bump when the architecture or the recipe changes
CNN_FEATURE_DIM = 128
#: the test accuracy eval.classifier=cnn trains to (checked on the validation split after each epoch): a Fréchet
#: distance is only as good as its feature space. Data sets not listed train CNN_EPOCHS epochs.
TARGET_ACCURACY = {"mnist": 0.99, "fashion_mnist": 0.90}
CNN_EPOCHS, CNN_MAX_EPOCHS = 5, 10


class ConvFeatureNet(nn.Module):
    """x [B, C, H, W] -> [conv 3x3 -> ReLU -> max-pool 2] x 2 (16, 32 channels) -> 7x7 -> 128 (ReLU: the features) ->
    logits. Small enough for the CPU (about 1.3M multiply-adds an image), and above 99% on MNIST and 90% on
    Fashion-MNIST in a few epochs where the MLP stays near 98% and 88%."""

    def __init__(self, image_shape=(1, 28, 28), n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(image_shape[0], 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                  nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(32 * 49, CNN_FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(CNN_FEATURE_DIM, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_to_target(data, device: torch.device, target: float | None,
                    progress: StageProgress | None = None) -> tuple[ConvFeatureNet, float, int]:
    """Fit ConvFeatureNet on the training split (Adam, batches of BATCH, lr 1e-3, seeded) until its validation accuracy
    reaches `target` (CNN_MAX_EPOCHS at most; CNN_EPOCHS without a target). Returns the net, its validation accuracy
    and the epochs trained. `progress` advances by epochs."""
    gen = torch.Generator().manual_seed(SEED)
    net = seeded(ConvFeatureNet, data.image_shape, data.n_classes, device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    val_acc = 0.0
    for epoch in range(1, (CNN_EPOCHS if target is None else CNN_MAX_EPOCHS) + 1):
        train_epoch(net, opt, data.train_all, gen, device)
        val_acc = accuracy(net.eval(), data.val)
        if progress is not None:
            progress.advance()
        log.info(f"cnn classifier epoch {epoch}: validation accuracy {val_acc:.4f}"
                 + ("" if target is None else f" (target {target})"))
        if target is not None and val_acc >= target:
            break
    if target is not None and val_acc < target:
        log.warning(f"the {data.name} cnn classifier reached {val_acc:.4f} on the validation split after {epoch} "
                    f"epochs, below its target {target}: the Fréchet numbers use it anyway ({EVAL} says its accuracy)")
    return net.eval(), val_acc, epoch


def load_paper_classifier(data, device: torch.device, cache_dir: str | None = None) -> tuple[ConvFeatureNet, float]:
    """eval.classifier=cnn: the data set's ConvFeatureNet (eval mode) and its test accuracy, trained once to the data
    set's TARGET_ACCURACY and cached as `<cache>/<data key>_classifier_cnn_v<CNN_VERSION>.pt`."""
    path = cache_folder(cache_dir) / f"{data.key}_classifier_cnn_v{CNN_VERSION}.pt"
    cached = from_cache(ConvFeatureNet(data.image_shape, data.n_classes), path, device)
    if cached is not None:
        return cached
    target = TARGET_ACCURACY.get(data.name)
    what = f"eval: training the {data.name} cnn feature classifier once (to validation accuracy {target})"
    log.info(f"{what}; cached in {path}")
    with StageProgress(what, total=CNN_EPOCHS if target is None else CNN_MAX_EPOCHS) as progress:
        net, val_acc, epochs = train_to_target(data, device, target, progress)
    test_acc = accuracy(net, data.test)
    save_atomic({"model": net.state_dict(), "test_acc": test_acc, "val_acc": val_acc, "epochs": epochs,
                 "target": target, "version": CNN_VERSION}, path)
    return net.to(device).eval(), test_acc


def cached_json(path: Path, key: str, compute) -> dict:
    """`compute()` (a dict of plain numbers) stored under `key` in the JSON file `path`, computed only once. The
    read-modify-write of the file holds its lock (filelock on `path`.lock), so jobs running side by side never
    lose each other's keys; the computing itself runs outside it."""
    from filelock import FileLock

    def read() -> dict:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}

    table = read()
    if key in table:
        return table[key]
    value = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_name(f".{path.name}.lock")):
        table = read()  # another process may have added a key meanwhile
        table[key] = value
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table, indent=1))
        os.replace(tmp, path)
    return value
