"""aecli/datasets/idx.py (MNIST, Fashion-MNIST): the official IDX files read directly, as torchvision reads them;
splits on the device; missing, mismatched or corrupt files named in one line."""

from __future__ import annotations

import pytest
import torch

from aecli.errors import AecliError
from conftest import IDX_DATASETS, load_data


@pytest.mark.parametrize("name", IDX_DATASETS)
def test_splits_are_uint8_on_device_with_fixed_validation(data_root, name):
    data = load_data(name, data_root, torch.device("cpu"), download=False, limit=300, val_size=1000)
    assert data.train.images.dtype == torch.uint8 and data.train.images.shape == (300, 1, 28, 28)
    assert data.val.images.shape == (1000, 1, 28, 28) and data.test.images.shape == (10000, 1, 28, 28)
    assert data.train.labels.dtype == torch.int64 and set(data.test.labels.tolist()) == set(range(10))
    again = load_data(name, data_root, torch.device("cpu"), download=False, limit=None, val_size=1000)
    assert len(again.train) == 59000
    torch.testing.assert_close(again.val.images, data.val.images)  # the held-out part does not move with limit
    # validation images are the last 1000 of the official training set, disjoint from the training split
    assert not torch.equal(again.train.images[-1], again.val.images[0])
    x, y = data.train.batch(torch.tensor([0, 5]))
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and y.shape == (2,)
    torch.testing.assert_close(x[0] * 255, data.train.images[0].float())


@pytest.mark.real_data
def test_mnist_content_is_the_official_one(data_root):
    data = load_data("mnist", data_root, torch.device("cpu"), download=False, val_size=5000)
    assert data.test.labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert data.train.labels[:5].tolist() == [5, 0, 4, 1, 9]


def test_missing_files_offline_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(AecliError) as err:
        load_data("mnist", tmp_path / "nothing", torch.device("cpu"), download=False)
    message = str(err.value)
    # what a user of any clone can do: where to download the four files, where to put them, or data.root
    assert str(tmp_path / "nothing" / "MNIST" / "raw") in message and "https://" in message
    assert "train-images-idx3-ubyte" in message and "data.root" in message and "\n" not in message


def test_labels_of_another_data_set_are_refused(data_root, tmp_path):
    """Fashion-MNIST's labels file in the MNIST folder (same format, same count) was trained on silently."""
    root, raw = corrupt_root(data_root, tmp_path, "train-labels-idx1-ubyte",
                             (data_root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte").read_bytes())
    with pytest.raises(AecliError) as err:
        load_data("mnist", root, torch.device("cpu"), download=False)
    assert f"{raw / 'train-labels-idx1-ubyte'} is not mnist's train labels file" in str(err.value)


def test_images_and_labels_that_disagree_in_count_are_refused(data_root, tmp_path):
    good = real_bytes(data_root, "t10k-images-idx3-ubyte")
    fewer = good[:4] + (9999).to_bytes(4, "big") + good[8:16] + good[16:16 + 9999 * 784]
    root, raw = corrupt_root(data_root, tmp_path, "t10k-images-idx3-ubyte", fewer)
    with pytest.raises(AecliError, match="holds 9999 images but .* 10000 labels"):
        load_data("mnist", root, torch.device("cpu"), download=False)


# -- corrupt files: each names the file, in one line ------------------------------------------------------
def corrupt_root(data_root, tmp_path, stem: str, content: bytes | None, gz: bytes | None = None):
    """A data root whose MNIST files are the real ones except `stem` (given `content`, or only a `.gz`)."""
    load_data("mnist", data_root, torch.device("cpu"), download=False, limit=1)  # the real files extracted
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for other in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte"):
        if other != stem:
            (raw / other).symlink_to(data_root / "MNIST" / "raw" / other)
    if content is not None:
        (raw / stem).write_bytes(content)
    if gz is not None:
        (raw / f"{stem}.gz").write_bytes(gz)
    return tmp_path / "root", raw


def real_bytes(data_root, stem: str) -> bytes:
    return (data_root / "MNIST" / "raw" / stem).read_bytes()


@pytest.mark.parametrize("case,expect", [
    ("magic", "magic number 2051, expected 2049"), ("longer", "has the wrong size"),
    ("body", "has the wrong size"), ("header", "is truncated (3 bytes)"),
])
def test_a_corrupt_idx_file_is_named(data_root, tmp_path, case, expect):
    good = real_bytes(data_root, "t10k-labels-idx1-ubyte")
    content = {"magic": (2051).to_bytes(4, "big") + good[4:], "longer": good + b"\0" * 10,
               "body": good[:-100], "header": good[:3]}[case]
    root, raw = corrupt_root(data_root, tmp_path, "t10k-labels-idx1-ubyte", content)
    with pytest.raises(AecliError) as err:
        load_data("mnist", root, torch.device("cpu"), download=False)
    message = str(err.value)
    assert f"data file {raw / 't10k-labels-idx1-ubyte'}" in message and expect in message and "\n" not in message


@pytest.mark.parametrize("case", ["garbage", "truncated"])
def test_a_corrupt_gz_file_is_named(data_root, tmp_path, case):
    import gzip

    packed = gzip.compress(real_bytes(data_root, "t10k-labels-idx1-ubyte"))
    gz = b"not a gzip file at all" if case == "garbage" else packed[: len(packed) // 2]
    root, raw = corrupt_root(data_root, tmp_path, "t10k-labels-idx1-ubyte", None, gz=gz)
    with pytest.raises(AecliError, match=f"data file {raw / 't10k-labels-idx1-ubyte.gz'} is not a valid gzip file"):
        load_data("mnist", root, torch.device("cpu"), download=False)
    assert not (raw / "t10k-labels-idx1-ubyte").exists()  # no half-extracted file left behind
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(packed)  # a good .gz is extracted and used
    assert load_data("mnist", root, torch.device("cpu"), download=False, limit=1).test.labels[0] == 7


def test_a_data_folder_that_cannot_be_written_is_named(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(AecliError, match=f"cannot create the data folder {tmp_path / 'file' / 'data'}"):
        load_data("mnist", tmp_path / "file" / "data", torch.device("cpu"), download=True)


def test_direct_idx_read_equals_torchvision(data_root):
    from torchvision.datasets import FashionMNIST, MNIST

    from aecli.datasets.fashion_mnist import FashionMNIST as OurFashion
    from aecli.datasets.mnist import MNIST as OurMNIST

    for ours, cls in ((OurMNIST, MNIST), (OurFashion, FashionMNIST)):
        name = ours.name
        official = ours(root=str(data_root), download=False).read_official()
        (x, y), (x_test, y_test) = official["train"], official["test"]
        x, x_test = x.squeeze(1), x_test.squeeze(1)
        train, test = cls(str(data_root), train=True), cls(str(data_root), train=False)
        assert torch.equal(x, train.data) and torch.equal(y, train.targets), name
        assert torch.equal(x_test, test.data) and torch.equal(y_test, test.targets), name
        assert x.dtype == torch.uint8 and y.dtype == torch.int64
