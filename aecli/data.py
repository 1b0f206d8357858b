"""MNIST and Fashion-MNIST as device-resident uint8 tensors, and an on-device batcher.

torchvision's dataset classes do the download (where there is a network); aecli reads the IDX files itself.
After loading, a whole split is one uint8 tensor moved to the training device once; each batch is an index into it,
converted to float in [0, 1] per batch: no per-sample PIL transforms, no DataLoader workers.

Splits: the official training set minus its last `val_size` images is `train` (optionally cut to the
first `limit` images), those last `val_size` images are `val` (fixed, so every run validates on the same
images), and the official test set is `test`, kept for evaluation.
"""

from __future__ import annotations

import fcntl
import gzip
import math
import os
import shutil
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from aecli.errors import AecliError

N_CLASSES = 10  # both data sets have ten classes, labels 0..9

DATASETS = {
    # name in config -> (torchvision class name, folder under root, class names)
    "mnist": ("MNIST", "MNIST", [str(i) for i in range(10)]),
    "fashion_mnist": ("FashionMNIST", "FashionMNIST",
                      ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                       "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]),
}
IDX_FILES = {
    # file stem -> (magic number, shape after the header)
    "train-images-idx3-ubyte": (2051, (60000, 28, 28)),
    "train-labels-idx1-ubyte": (2049, (60000,)),
    "t10k-images-idx3-ubyte": (2051, (10000, 28, 28)),
    "t10k-labels-idx1-ubyte": (2049, (10000,)),
}
HOW_TO_GET = ("copy the four official files (or their .gz) into {raw}, e.g. with "
              "`bash ../shared/data/seed-data.sh {root}` in the aecli repository, or point data.root (or the "
              "AECLI_DATA_ROOT environment variable) at a folder holding {folder}/raw")


@dataclass
class Split:
    """One split on the training device: images [N, 1, 28, 28] uint8, labels [N] int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Float images in [0, 1] and labels for the given indices (conversion happens per batch)."""
        return self.images[idx].float().div_(255.0), self.labels[idx]

    def head(self, n: int) -> Split:
        return Split(self.images[:n], self.labels[:n])

    def mean_image(self, chunk: int = 10000) -> torch.Tensor:
        """The mean image [1, 28, 28], float in [0, 1] (summed in chunks: no float copy of the whole split)."""
        total = sum(self.images[i:i + chunk].double().sum(0) for i in range(0, len(self), chunk))
        return (total / (255.0 * len(self))).float()


@dataclass
class Data:
    name: str
    classes: list[str]
    train: Split
    val: Split
    test: Split


def check_idx_file(path: Path, magic: int, shape: tuple[int, ...]) -> None:
    """Refuse a file with a wrong magic number, wrong dimensions or a truncated body, naming the file."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4 + 4 * len(shape))
    if len(header) < 4 + 4 * len(shape):
        raise AecliError(f"data file {path} is truncated ({size} bytes): delete it and lay the data out again")
    got_magic = int.from_bytes(header[:4], "big")
    if got_magic != magic:
        raise AecliError(f"data file {path} is not an IDX file of this kind (magic number {got_magic}, "
                         f"expected {magic}): delete it and lay the data out again")
    dims = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(len(shape)))
    expected = 4 + 4 * len(shape) + int(torch.tensor(shape).prod())
    if dims != shape or size != expected:
        raise AecliError(f"data file {path} has the wrong size (dimensions {dims}, {size} bytes; expected "
                         f"{shape}, {expected} bytes): it is truncated or corrupt, delete it and lay the data out again")


def extract_gz(raw: Path) -> None:
    """Decompress each official `.gz` whose extracted file is missing; a corrupt one is named, not half-used.

    Safe for any number of processes at once (the jobs of a parallel sweep on a fresh data folder): one holds an
    OS lock on `raw/.extract.lock` while it extracts (released by the OS if it dies), each writes its own
    temporary file, and a file another process finished meanwhile is not extracted twice."""
    todo = [stem for stem in IDX_FILES if not (raw / stem).is_file() and (raw / f"{stem}.gz").is_file()]
    if not todo:
        return
    try:
        lock = open(raw / ".extract.lock", "a")
    except OSError as e:
        raise AecliError(f"cannot extract the .gz files in the data folder {raw} ({e.strerror}): make it writable, "
                         "or set data.root to a folder holding the extracted files")
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for stem in todo:
            src, dst = raw / f"{stem}.gz", raw / stem
            if dst.is_file():  # another process extracted it while this one waited for the lock
                continue
            tmp = raw / f".{stem}.{os.getpid()}.tmp"
            try:
                with gzip.open(src, "rb") as f_in, open(tmp, "wb") as f_out:
                    shutil.copyfileobj(f_in, f_out)
            except (gzip.BadGzipFile, EOFError, zlib.error) as e:
                tmp.unlink(missing_ok=True)
                raise AecliError(f"data file {src} is not a valid gzip file ({e}): it is truncated or corrupt, "
                                 "delete it and lay the data out again")
            except OSError as e:
                tmp.unlink(missing_ok=True)
                raise AecliError(f"cannot extract {src.name} into the data folder {raw} ({e.strerror}): make it "
                                 "writable, or set data.root to a folder holding the extracted files")
            os.replace(tmp, dst)


def _raw_ready(raw: Path) -> bool:
    return all((raw / stem).is_file() for stem in IDX_FILES)


def load_raw(name: str, root: str | os.PathLike, download: bool = True):
    """Both official splits, ((train images, labels), (test images, labels)), as uint8 tensors on the CPU."""
    if name not in DATASETS:
        raise AecliError(f"data={name!r} is not a data set aecli knows: allowed {', '.join(DATASETS)}")
    cls_name, folder, _ = DATASETS[name]
    root = Path(root).expanduser()
    raw = root / folder / "raw"
    if raw.is_dir():  # compressed official files next to missing extracted ones: extracted offline
        extract_gz(raw)
    if not _raw_ready(raw) and not download:
        raise AecliError(f"{cls_name} files are missing in {raw} and data.download=false: " +
                         HOW_TO_GET.format(raw=raw, root=root, folder=folder))
    if not _raw_ready(raw):
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AecliError(f"cannot create the data folder {root} ({e.strerror}): set data.root to a writable folder")
        if not os.access(root, os.W_OK | os.X_OK):
            raise AecliError(f"cannot write the data folder {root} to download {cls_name}: set data.root to a "
                             "writable folder")
        import torchvision.datasets as tvd  # only to download: reading needs no torchvision (0.4 s of start-up)

        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            getattr(tvd, cls_name)(str(root), train=True, download=True)
        except Exception as e:  # noqa: BLE001 - any download failure gets the same one-line advice
            raise AecliError(f"{cls_name} files are missing in {raw} and the download failed "
                             f"({type(e).__name__}; no network?): " + HOW_TO_GET.format(raw=raw, root=root, folder=folder))
        finally:
            socket.setdefaulttimeout(previous)
    arrays = {stem: read_idx(raw / stem, magic, shape) for stem, (magic, shape) in IDX_FILES.items()}
    return [(arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"].long()),
            (arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"].long())]


def read_idx(path: Path, magic: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The uint8 body of a checked IDX file, read in one go (the same bytes torchvision's MNIST class reads)."""
    check_idx_file(path, magic, shape)
    header = 4 + 4 * len(shape)
    body = torch.from_file(str(path), size=header + math.prod(shape), dtype=torch.uint8)
    return body[header:].view(shape)


def load_data(name: str, root: str | os.PathLike, device: torch.device, download: bool = True,
              limit: int | None = None, val_size: int = 5000) -> Data:
    """Load a data set's three splits onto `device` as uint8 images and int64 labels."""
    (x_all, y_all), (x_test, y_test) = load_raw(name, root, download)
    n_train = x_all.shape[0] - val_size
    if not 0 < val_size < x_all.shape[0]:
        raise AecliError(f"data.val_size={val_size} is out of range: allowed 1..{x_all.shape[0] - 1}")
    x_train, y_train = x_all[:n_train], y_all[:n_train]
    if limit is not None:
        x_train, y_train = x_train[:limit], y_train[:limit]

    def to_split(x: torch.Tensor, y: torch.Tensor) -> Split:
        return Split(x.unsqueeze(1).contiguous().to(device), y.to(torch.int64).to(device))

    return Data(name=name, classes=DATASETS[name][2], train=to_split(x_train, y_train),
                val=to_split(x_all[n_train:], y_all[n_train:]), test=to_split(x_test, y_test))


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
