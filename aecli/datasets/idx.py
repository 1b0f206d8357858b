"""Data sets published as four IDX files (MNIST and its drop-in replacements): finding, extracting, checking and
reading them. torchvision's dataset classes do the download where there is a network; aecli reads the files
itself, in one read each.

The files live in torchvision's layout, ROOT/<folder>/raw/, compressed (.gz, extracted on first use) or not. Every
file is checked before use: its magic number, its dimensions and its size (a truncated or corrupt file is named),
the images and labels of a split agree in count, and each labels file's class histogram is the data set's own, so
the labels of another data set (Fashion-MNIST's in the MNIST folder) are refused instead of trained on.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import socket
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from aecli import schema
from aecli.data import BINARIZE, Data, Dataset, binarized_splits
from aecli.errors import AecliError

STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049


def check_idx_file(path: Path, magic: int, rank: int) -> tuple[int, ...]:
    """The dimensions of an IDX file of this kind, after checking its magic number and size (naming the file)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(4 + 4 * rank)
    if len(header) < 4 + 4 * rank:
        raise AecliError(f"data file {path} is truncated ({size} bytes): delete it and lay the data out again")
    got_magic = int.from_bytes(header[:4], "big")
    if got_magic != magic:
        raise AecliError(f"data file {path} is not an IDX file of this kind (magic number {got_magic}, "
                         f"expected {magic}): delete it and lay the data out again")
    dims = tuple(int.from_bytes(header[4 + 4 * i: 8 + 4 * i], "big") for i in range(rank))
    expected = 4 + 4 * rank + math.prod(dims)
    if size != expected:
        raise AecliError(f"data file {path} has the wrong size ({size} bytes for dimensions {list(dims)}; expected "
                         f"{expected}): it is truncated or corrupt, delete it and lay the data out again")
    return dims


def read_idx(path: Path, magic: int, rank: int) -> torch.Tensor:
    """The uint8 body of a checked IDX file, read in one go (the same bytes torchvision's MNIST class reads)."""
    dims = check_idx_file(path, magic, rank)
    header = 4 + 4 * rank
    body = torch.from_file(str(path), size=header + math.prod(dims), dtype=torch.uint8)
    return body[header:].view(dims)


def extract_gz(raw: Path) -> None:
    """Decompress each `.gz` whose extracted file is missing; a corrupt one is named, not half-used.

    Safe for any number of processes at once (the jobs of a parallel sweep on a fresh data folder): one holds an
    OS lock on `raw/.extract.lock` while it extracts (released by the OS if it dies), each writes its own
    temporary file, and a file another process finished meanwhile is not extracted twice."""
    stems = [stem for pair in STEMS.values() for stem in pair]
    todo = [stem for stem in stems if not (raw / stem).is_file() and (raw / f"{stem}.gz").is_file()]
    if not todo:
        return
    from filelock import FileLock

    lock = FileLock(raw / ".extract.lock")
    try:
        lock.acquire()
    except OSError as e:
        raise AecliError(f"cannot extract the .gz files in the data folder {raw} ({e.strerror}): make it writable, "
                         "or set data.root to a folder holding the extracted files")
    with lock:
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


@dataclass
class Options(schema.Options):
    root: str = schema.text("~/.cache/aecli/data")  # ROOT/<folder>/raw, torchvision's layout
    download: bool = schema.boolean(True)  # fetch the official files when missing (needs a network)
    limit: int | None = schema.integer(None, low=1, optional=True)  # train on the first N training images only
    val_size: int = schema.integer(5000, low=1)  # the last N images of the official training set, held out
    # none (grey levels) | dynamic (x ~ Bernoulli(pixel) drawn anew every batch) | static (drawn once, fixed seed)
    binarize: str = schema.choice(*BINARIZE)


class IdxDataset(Dataset):
    """A data set of four IDX files under ROOT/<folder>/raw (module doc). Subclasses set the class attributes."""

    folder: ClassVar[str]  # ROOT/<folder>/raw
    torchvision_class: ClassVar[str]  # the torchvision.datasets class that downloads it
    source: ClassVar[str]  # where the files are published, for the message when they are missing
    classes: ClassVar[list[str]]
    #: the class histogram of the official labels files; a labels file that differs is another data set's
    counts: ClassVar[dict[str, list[int]]]
    Options = Options

    def __init__(self, root: str = "~/.cache/aecli/data", download: bool = True, limit: int | None = None,
                 val_size: int = 5000, binarize: str = "none"):
        self.root, self.download, self.limit, self.val_size = Path(root).expanduser(), download, limit, val_size
        self.binarize = binarize

    @property
    def raw(self) -> Path:
        return self.root / self.folder / "raw"

    def how_to_get(self) -> str:
        files = ", ".join(stem for pair in STEMS.values() for stem in pair)
        return (f"download the four files ({files}, each as .gz or extracted) from {self.source} into {self.raw}, "
                f"or point data.root (or the AECLI_DATA_ROOT environment variable) at a folder holding "
                f"{self.folder}/raw")

    def ensure_files(self) -> None:
        """Extract .gz files left compressed; download missing files where allowed; say what to do otherwise."""
        if self.raw.is_dir():
            extract_gz(self.raw)
        if self.ready():
            return
        if not self.download:
            raise AecliError(f"{self.name} files are missing in {self.raw} and data.download=false: "
                             + self.how_to_get())
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AecliError(f"cannot create the data folder {self.root} ({e.strerror}): set data.root to a "
                             "writable folder")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise AecliError(f"cannot write the data folder {self.root} to download {self.name}: set data.root to a "
                             "writable folder")
        import torchvision.datasets as tvd  # only to download: reading needs no torchvision (0.4 s of start-up)

        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(20)
        try:
            getattr(tvd, self.torchvision_class)(str(self.root), train=True, download=True)
        except Exception as e:  # noqa: BLE001 - any download failure gets the same one-line advice
            raise AecliError(f"{self.name} files are missing in {self.raw} and the download failed "
                             f"({type(e).__name__}; no network?): " + self.how_to_get())
        finally:
            socket.setdefaulttimeout(previous)

    def ready(self) -> bool:
        return all((self.raw / stem).is_file() for pair in STEMS.values() for stem in pair)

    def read_official(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """{"train": (images [N, 1, H, W] uint8, labels [N] int64), "test": ...}, on the CPU, checked."""
        self.ensure_files()
        out = {}
        for split, (image_stem, label_stem) in STEMS.items():
            images = read_idx(self.raw / image_stem, IMAGES_MAGIC, 3)
            labels = read_idx(self.raw / label_stem, LABELS_MAGIC, 1).long()
            if len(images) != len(labels):
                raise AecliError(f"{self.raw / image_stem} holds {len(images)} images but {self.raw / label_stem} "
                                 f"{len(labels)} labels: the two files come from different data sets; lay the "
                                 f"{self.name} files out again")
            histogram = torch.bincount(labels, minlength=len(self.classes)).tolist()
            if histogram != self.counts[split]:
                raise AecliError(f"{self.raw / label_stem} is not {self.name}'s {split} labels file (its class counts "
                                 f"are {histogram}, {self.name}'s are {self.counts[split]}): lay the {self.name} "
                                 f"files out again")
            out[split] = (images.unsqueeze(1), labels)
        return out

    def load(self, device: torch.device) -> Data:
        official = self.read_official()
        (x_all, y_all), test = official["train"], official["test"]
        key = self.name if self.binarize == "none" else f"{self.name}_binarized"  # the eval caches' name
        return Data(name=self.name, classes=list(self.classes), image_shape=tuple(x_all.shape[1:]), key=key,
                    **binarized_splits(x_all, y_all, test, self.val_size, self.limit, device, self.binarize))
