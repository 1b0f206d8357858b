"""`data=images data.path=PATH`: a researcher's own images. conf/data/images.yaml.

PATH is one of
- a `.npz` file: the images under `x` (or `images`) and, optionally, integer labels under `y` (or `labels`); an
  array under any other name is refused with the names found (it would be dropped without a word);
- a `.npy` file: the images only;
- a folder of PNG/JPEG files, either with one sub-folder per class (the ImageFolder convention: the sub-folders'
  names, sorted, are the classes) or flat (unlabeled).
Arrays are uint8 (0..255) or float in [0, 1], shaped [N, H, W] or [N, C, H, W]; any size and channel count the nets
take (the conv net adapts to H, W and C; the mlp flattens). Images are kept as uint8, as every data set is: float
images are rounded to 1/255.

Splits are fixed, whatever the run's seed: the images are shuffled once with seed 0, the last `val_size` become
the validation split (a count, or a fraction of the images when below 1), and the test split is `test_path` (the
same formats) or, without it, the `test_size` images before them. Unlabeled images train every model but the cvae;
the metrics that need labels (probe, kNN, the classifier's) are skipped with their reason.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from aecli import schema
from aecli.data import MIN_IMAGES, Data, Dataset, make_splits
from aecli.errors import AecliError

EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLIT_SEED = 0  # the one shuffle that fixes the splits
IMAGE_KEYS, LABEL_KEYS = ("x", "images"), ("y", "labels")


def size_or_fraction(default: float) -> object:
    """A count of images (an integer >= 1) or a fraction of them (a number in (0, 1))."""
    def ok(v):
        return (isinstance(v, int) and not isinstance(v, bool) and v >= 1) or \
            (isinstance(v, float) and 0 < v < 1)
    return schema._field(default, ok, "a count of images (an integer >= 1) or a fraction in (0, 1)")


@dataclass
class Options(schema.Options):
    path: str | None = schema.text(None, optional=True)  # a .npz, a .npy or a folder of PNG/JPEG files
    test_path: str | None = schema.text(None, optional=True)  # the test images (same formats); null: held out
    val_size: float = size_or_fraction(0.1)  # validation images: a count, or a fraction of PATH's images
    test_size: float = size_or_fraction(0.1)  # test images held out of PATH when test_path is null
    limit: int | None = schema.integer(None, low=1, optional=True)  # train on the first N training images only


class Images(Dataset):
    name = "images"
    Options = Options

    def __init__(self, path: str | None, test_path: str | None, val_size: float, test_size: float,
                 limit: int | None):  # the keys of Options, defaults and all (conf/data/images.yaml)
        if path is None:
            raise AecliError("data=images needs data.path=PATH: a .npz or .npy file of images, or a folder of "
                             "PNG/JPEG files (one sub-folder per class, or flat)")
        self.path = Path(path).expanduser()
        self.test_path = None if test_path is None else Path(test_path).expanduser()
        self.val_size, self.test_size, self.limit = val_size, test_size, limit

    def load(self, device: torch.device) -> Data:
        images, labels, classes = read_images(self.path)
        perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(SPLIT_SEED))
        images, labels = images[perm], None if labels is None else labels[perm]
        n = len(images)
        least = MIN_IMAGES + (self.test_path is None)  # one to train on, one to validate on, one to test on
        if n < least:
            raise AecliError(f"data.path={self.path} holds {n} image{'s' if n != 1 else ''}: data=images needs at "
                             f"least {least} (one each to train, validate{' and test' if least > 2 else ''} on)")
        if self.test_path is not None:
            test_images, test_labels, test_classes = read_images(self.test_path)
            if test_images.shape[1:] != images.shape[1:]:
                raise AecliError(f"data.test_path={self.test_path} holds {list(test_images.shape[1:])} images and "
                                 f"data.path={self.path} {list(images.shape[1:])}: both must have one size")
            if test_classes != classes:
                raise AecliError(f"data.test_path={self.test_path} has the classes {test_classes} and data.path "
                                 f"{classes}: both must have the same (or both no labels)")
            test = (test_images, test_labels)
        else:
            n_test = count(self.test_size, n, "data.test_size")
            test = (images[:n_test], None if labels is None else labels[:n_test])
            images, labels = images[n_test:], None if labels is None else labels[n_test:]
        splits = make_splits(images, labels, test, count(self.val_size, len(images), "data.val_size"), self.limit,
                             device)
        return Data(name=self.name, classes=classes, image_shape=tuple(images.shape[1:]),
                    key=f"images-{fingerprint(self.path, self.test_path)}", **splits)


def count(size: float, n: int, key: str) -> int:
    """A size option as a count of images: a fraction of n rounded (at least 1), or the count itself."""
    k = max(1, round(size * n)) if isinstance(size, float) else int(size)
    if k >= n:
        raise AecliError(f"{key}={size} leaves no images out of {n}: give a smaller count or fraction")
    return k


def fingerprint(*paths: Path | None) -> str:
    """A short name for the files behind a data set (its path, size and time), for caches keyed by data set."""
    h = hashlib.sha1()
    for p in paths:
        if p is None:
            continue
        stat = p.stat()
        h.update(f"{p.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return h.hexdigest()[:12]


def read_images(path: Path) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """(images [N, C, H, W] uint8, labels [N] int64 or None, class names or None) from a file or a folder."""
    if not path.exists():
        raise AecliError(f"data.path {path} does not exist: give a .npz or .npy file or a folder of images")
    if path.is_dir():
        return read_folder(path)
    if path.suffix == ".npz":
        import numpy as np

        try:
            arrays = np.load(path)
            keys = list(arrays.keys())
        except Exception as e:  # noqa: BLE001 - a damaged or foreign file, named in one line
            raise AecliError(f"cannot read {path} as a .npz file ({type(e).__name__}): it is damaged or not numpy's")
        image_key = next((k for k in IMAGE_KEYS if k in keys), None)
        unread = [k for k in keys if k not in IMAGE_KEYS + LABEL_KEYS]
        if image_key is None or unread:
            found = f"the arrays {', '.join(keys)}" if keys else "no arrays"
            raise AecliError(f"{path} holds {found}: aecli reads the images under x (or images) and the integer "
                             f"labels under y (or labels), nothing else; save them under those names, e.g. "
                             f"np.savez(path, x=images, y=labels)")
        label_key = next((k for k in LABEL_KEYS if k in keys), None)
        images = as_uint8_images(arrays[image_key], f"{path}['{image_key}']")
        if label_key is None:
            return images, None, None
        labels, classes = as_labels(arrays[label_key], len(images), f"{path}['{label_key}']")
        return images, labels, classes
    if path.suffix == ".npy":
        import numpy as np

        try:
            array = np.load(path)
        except Exception as e:  # noqa: BLE001
            raise AecliError(f"cannot read {path} as a .npy file ({type(e).__name__}): it is damaged or not numpy's")
        return as_uint8_images(array, str(path)), None, None
    raise AecliError(f"data.path {path} is neither a .npz or .npy file nor a folder of images")


def as_uint8_images(array, what: str) -> torch.Tensor:
    """An array of images as uint8 [N, C, H, W]; a wrong dtype, range or shape is named in one line."""
    import numpy as np

    if array.ndim == 3:
        array = array[:, None]
    if array.ndim != 4:
        raise AecliError(f"{what} has shape {list(array.shape)}: images must be [N, H, W] or [N, C, H, W]")
    if array.shape[1] > 4 and array.shape[3] in (1, 3, 4):
        raise AecliError(f"{what} has shape {list(array.shape)}, which looks channel-last [N, H, W, C]: give "
                         f"[N, C, H, W] (numpy: x.transpose(0, 3, 1, 2))")
    if len(array) == 0:
        raise AecliError(f"{what} holds no images")
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array))
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if not (np.isfinite(low) and np.isfinite(high) and low >= 0 and high <= 1):
            raise AecliError(f"{what} holds floats from {low:g} to {high:g}: float images must lie in [0, 1] "
                             f"(or give uint8 0..255)")
        return torch.from_numpy(np.rint(array * 255).astype(np.uint8))
    raise AecliError(f"{what} is {array.dtype}: images must be uint8 (0..255) or float in [0, 1]")


def as_labels(array, n: int, what: str) -> tuple[torch.Tensor, list[str]]:
    """Integer labels as class indices 0..K-1 and the names of the K classes (the label values, sorted)."""
    import numpy as np

    if array.ndim != 1 or len(array) != n:
        raise AecliError(f"{what} holds {list(array.shape)} labels for {n} images: give one integer label per image")
    if not np.issubdtype(array.dtype, np.integer):
        raise AecliError(f"{what} is {array.dtype}: labels must be integers")
    values, index = np.unique(array, return_inverse=True)
    return torch.from_numpy(index.astype(np.int64)), [str(v) for v in values.tolist()]


def read_folder(folder: Path) -> tuple[torch.Tensor, torch.Tensor | None, list[str] | None]:
    """PNG/JPEG files: one sub-folder per class (sorted names), or flat. One size for all; grey unless any is colour."""
    from PIL import Image, UnidentifiedImageError

    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subfolders:
        files = [(f, c) for c, sub in enumerate(subfolders) for f in sorted(sub.iterdir()) if f.suffix.lower() in EXTENSIONS]
        classes = [p.name for p in subfolders]
    else:
        files = [(f, 0) for f in sorted(folder.iterdir()) if f.suffix.lower() in EXTENSIONS]
        classes = None
    if not files:
        raise AecliError(f"data.path {folder} holds no PNG or JPEG files (directly or one sub-folder deep)")
    pictures = []
    for f, _ in files:
        try:
            with Image.open(f) as im:
                im.load()
                pictures.append(im.copy())
        except (UnidentifiedImageError, OSError, SyntaxError) as e:
            raise AecliError(f"cannot read the image {f} ({type(e).__name__}): it is damaged or not an image; "
                             "remove it or replace it")
    size = pictures[0].size
    for (f, _), im in zip(files, pictures):
        if im.size != size:
            raise AecliError(f"the image {f} is {im.size[0]}x{im.size[1]} and {files[0][0]} {size[0]}x{size[1]}: "
                             "every image must have one size")
    colour = any(im.mode not in ("L", "1", "LA", "I", "I;16") for im in pictures)
    mode = "RGB" if colour else "L"
    import numpy as np

    stacked = np.stack([np.asarray(im.convert(mode)) for im in pictures])
    images = torch.from_numpy(stacked.transpose(0, 3, 1, 2) if colour else stacked[:, None]).contiguous()
    labels = None if classes is None else torch.tensor([c for _, c in files], dtype=torch.int64)
    return images, labels, classes
