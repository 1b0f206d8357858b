"""Data: what every data set hands the trainer, written once, and the on-device batcher.

A data set is one file in aecli/datasets/ and one yaml in conf/data/ whose `_target_` names its class; its other
keys are the class's keyword arguments, declared in its `Options` (aecli/schema.py). `load(device)` returns a
`Data`: three splits, each one uint8 tensor moved to the training device once (each batch is an index into it,
converted to float in [0, 1] per batch: no per-sample transforms, no DataLoader workers), the image shape
[C, H, W] and the class names (None for unlabeled images). Everything downstream reads the shape and the classes
from here, never from constants.

Splits: `train` (optionally cut to its first `limit` images), `val`, fixed so that every run validates on the same
images, and `test`, kept for evaluation.

Binarized data (`data.binarize`, the MNIST-format data sets; `binarized_splits`): `static` draws every image once,
x ~ Bernoulli(pixel intensity), with fixed seeds (BINARIZE_SEEDS); `dynamic` keeps the grey levels of the training
split and draws a fresh binary image for every batch from its own seeded generator on the device
(`DynamicBinarization`, Burda et al. 2015; its state is in every checkpoint), while the validation and test
images are the fixed draws of `static`, so that validation numbers compare across epochs and evaluation is
reproducible. Evaluation reads `Data.evaluation()`: under dynamic binarization its training split is the fixed
draw too, the same images as under static binarization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from aecli.errors import AecliError

TRAIN_SHARE = 0.5  # the validation split may take at most half of the training images
MIN_IMAGES = 2  # images left for training and validation: one of each at least


BINARIZE = ("none", "dynamic", "static")  # data.binarize (module doc)
#: the seeds of the fixed binary draws, one per official file: the same under static and dynamic binarization
BINARIZE_SEEDS = {"train": 1, "test": 2}
BINARIZE_CHUNK = 10000  # images per draw of a fixed binarization


class DynamicBinarization:
    """x ~ Bernoulli(x): every pixel is 1 with probability its intensity, drawn anew for each batch (u < x with
    u ~ U[0, 1), so E[x_bin] = x exactly) from this generator on the data's device: Burda et al. 2015, the IWAE
    code's protocol. The trainer seeds it with the run's seed; its state is part of a checkpoint (aecli/resume.py)."""

    def __init__(self, device: torch.device, seed: int = 0):
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(x.shape, device=x.device, generator=self.generator)
        return (u < x).to(x.dtype)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state().cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu())


def binarize_once(images: torch.Tensor, seed: int) -> torch.Tensor:
    """A fixed binarization of uint8 images: 255 with probability pixel / 255, else 0, drawn on the CPU (the same
    images on every device) with a generator seeded by `seed`, BINARIZE_CHUNK images per draw."""
    generator = torch.Generator().manual_seed(seed)
    out = torch.empty_like(images, device="cpu")
    for start in range(0, images.shape[0], BINARIZE_CHUNK):
        p = images[start:start + BINARIZE_CHUNK].cpu().float().div_(255.0)
        out[start:start + BINARIZE_CHUNK] = (torch.rand(p.shape, generator=generator) < p).to(torch.uint8) * 255
    return out


@dataclass
class Split:
    """One split on the training device: images [N, C, H, W] uint8, labels [N] int64 (None when unlabeled), and
    under dynamic binarization the `binarizer` that draws each batch's binary images from the grey levels."""

    images: torch.Tensor
    labels: torch.Tensor | None
    binarizer: DynamicBinarization | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Float images in [0, 1] and labels for the given indices (conversion happens per batch)."""
        x = self.images[idx].float().div_(255.0)
        if self.binarizer is not None:
            x = self.binarizer(x)
        return x, None if self.labels is None else self.labels[idx]

    def head(self, n: int) -> Split:
        return Split(self.images[:n], None if self.labels is None else self.labels[:n], self.binarizer)

    def mean_image(self, chunk: int = 10000) -> torch.Tensor:
        """The mean image [C, H, W], float in [0, 1] (summed in chunks: no float copy of the whole split)."""
        total = sum(self.images[i:i + chunk].double().sum(0) for i in range(0, len(self), chunk))
        return (total / (255.0 * len(self))).float()


@dataclass
class Data:
    """A loaded data set. `train` is what training sees (its first `data.limit` images when set), `train_all` the
    whole training split (evaluation fits its probes there, whatever the limit). `key` names the data set for
    caches (the eval classifier, the pixel floors)."""

    name: str
    classes: list[str] | None
    image_shape: tuple[int, ...]
    train: Split
    val: Split
    test: Split
    train_all: Split
    key: str = ""
    #: data.binarize: none, dynamic or static (module doc)
    binarize: str = "none"
    #: under dynamic binarization, the fixed draw of train_all that evaluation reads (see `evaluation`)
    fixed_train: Split | None = None

    @property
    def labeled(self) -> bool:
        return self.classes is not None

    def evaluation(self) -> Data:
        """The data evaluation reads: this data set, with a dynamically binarized training split replaced by its
        fixed draw (so the probe, the floors and the classifier see the same images in every evaluation)."""
        if self.fixed_train is None:
            return self
        return Data(self.name, self.classes, self.image_shape, self.fixed_train.head(len(self.train)), self.val,
                    self.test, self.fixed_train, self.key, self.binarize)

    def seed_binarization(self, seed: int) -> None:
        """Seed the dynamic binarization of the training split (a run's seed; nothing without one)."""
        if self.train.binarizer is not None:
            self.train.binarizer.generator.manual_seed(seed)

    def binarization_state(self) -> dict:
        """The dynamic binarization's generator state, for a checkpoint ({} without one)."""
        return {} if self.train.binarizer is None else self.train.binarizer.state_dict()

    def load_binarization_state(self, state: dict | None) -> None:
        if state and self.train.binarizer is not None:
            self.train.binarizer.load_state_dict(state)

    @property
    def n_classes(self) -> int:
        return len(self.classes or [])


class Dataset:
    """Base of every data set (module doc): subclasses set `name` and `Options` and implement `load`."""

    name: ClassVar[str] = "dataset"

    def load(self, device: torch.device) -> Data:
        raise NotImplementedError


def make_splits(images: torch.Tensor, labels: torch.Tensor | None, test: tuple[torch.Tensor, torch.Tensor | None],
                val_size: int, limit: int | None, device: torch.device) -> dict[str, Split]:
    """{train_all: the images but the last `val_size`, train: its first `limit` (a view), val: the last
    `val_size`, test: as given}; images [N, C, H, W] uint8 (labels int64 or None), moved to `device`."""
    n = images.shape[0]
    if n < MIN_IMAGES:
        raise AecliError(f"{n} image{'s' if n != 1 else ''} left for training and validation: at least {MIN_IMAGES} "
                         f"are needed (one to train on, one to validate on)")
    most = max(1, int(n * TRAIN_SHARE))
    if not isinstance(val_size, int) or not 1 <= val_size <= most:
        raise AecliError(f"data.val_size={val_size} is out of range for {n} training images: allowed 1..{most} (at "
                         f"least half of them stay for training)")
    n_train = n - val_size

    def to_split(x: torch.Tensor, y: torch.Tensor | None) -> Split:
        return Split(x.contiguous().to(device), None if y is None else y.to(torch.int64).to(device))

    def part(t: torch.Tensor | None, sl: slice) -> torch.Tensor | None:
        return None if t is None else t[sl]

    train_all = to_split(images[:n_train], part(labels, slice(0, n_train)))
    return {"train_all": train_all, "train": train_all if limit is None else train_all.head(limit),
            "val": to_split(images[n - val_size:], part(labels, slice(n - val_size, n))), "test": to_split(*test)}


def binarized_splits(images: torch.Tensor, labels: torch.Tensor | None,
                     test: tuple[torch.Tensor, torch.Tensor | None], val_size: int, limit: int | None,
                     device: torch.device, binarize: str) -> dict:
    """`make_splits` under data.binarize (module doc), as keyword arguments of `Data`: its splits, `binarize` and,
    under dynamic binarization, `fixed_train`. `images` is the whole official training file, `test` the test file."""
    if binarize == "none":
        return {**make_splits(images, labels, test, val_size, limit, device), "binarize": binarize}
    fixed = make_splits(binarize_once(images, BINARIZE_SEEDS["train"]), labels,
                        (binarize_once(test[0], BINARIZE_SEEDS["test"]), test[1]), val_size, limit, device)
    if binarize == "static":
        return {**fixed, "binarize": binarize}
    grey = make_splits(images, labels, test, val_size, limit, device)
    binarizer = DynamicBinarization(device)
    train_all = Split(grey["train_all"].images, grey["train_all"].labels, binarizer)
    return {"train_all": train_all, "train": train_all if limit is None else train_all.head(limit),
            "val": fixed["val"], "test": fixed["test"], "binarize": binarize, "fixed_train": fixed["train_all"]}


class Batcher:
    """Yields index tensors covering a split once per epoch, in an on-device random order.

    The permutation is drawn from the batcher's own generator on the data's device, so the order depends
    only on the seed. `state_dict` captures the generator as it was when the epoch began and the position
    within it, which is enough to resume mid-epoch exactly.
    """

    def __init__(self, n: int, batch_size: int, device: torch.device, seed: int):
        self.n, self.batch_size, self.device = n, batch_size, device
        self.generator = torch.Generator(device=device)
        self.generator.manual_seed(seed)
        self.position = 0  # batches of the current epoch already handed out
        self._epoch_start_state: torch.Tensor | None = None
        self._perm: torch.Tensor | None = None

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def __iter__(self):
        if self._perm is None:
            self._epoch_start_state = self.generator.get_state()
            self._perm = torch.randperm(self.n, device=self.device, generator=self.generator)
        while self.position < len(self):
            start = self.position * self.batch_size
            self.position += 1
            yield self._perm[start:start + self.batch_size]
        self._perm, self.position = None, 0

    def state_dict(self) -> dict:
        in_epoch = self._perm is not None
        return {"generator": (self._epoch_start_state if in_epoch else self.generator.get_state()).cpu(),
                "position": self.position if in_epoch else 0}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"].cpu() if self.device.type == "cpu" else state["generator"])
        self._perm, self.position = None, 0
        if state["position"]:
            self._epoch_start_state = self.generator.get_state()
            self._perm = torch.randperm(self.n, device=self.device, generator=self.generator)
            self.position = int(state["position"])
