"""Data: the real IDX files through torchvision, the fixed splits, the on-device batcher, the offline error,
binarization (its mean is the pixel intensity), and splits of every size."""

from __future__ import annotations

import pytest
import torch

from aecli.data import BINARIZE_SEEDS, Batcher, DynamicBinarization, Split, binarize_once, binarized_splits
from aecli.datasets.mnist import MNIST
from aecli.errors import AecliError
from conftest import IDX_DATASETS, load_data, run_cli, tiny_overrides

LEVELS = torch.tensor([0, 1, 64, 128, 200, 254, 255], dtype=torch.uint8)  # grey levels for the binarization tests


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


@pytest.mark.parametrize("n,batch_size", [(10, 3), (512, 128), (7, 10)])
def test_batcher_yields_every_index_exactly_once_per_epoch(n, batch_size):
    batcher = Batcher(n, batch_size, torch.device("cpu"), seed=0)
    orders = []
    for _ in range(3):
        batches = list(batcher)
        assert len(batches) == len(batcher) == -(-n // batch_size)
        assert all(len(b) <= batch_size for b in batches)
        seen = torch.cat(batches)
        assert sorted(seen.tolist()) == list(range(n))
        orders.append(seen.tolist())
    assert n < 8 or orders[0] != orders[1]  # a new permutation every epoch
    same_seed = Batcher(n, batch_size, torch.device("cpu"), seed=0)
    assert torch.cat(list(same_seed)).tolist() == orders[0]


def test_batcher_state_resumes_mid_epoch():
    batcher = Batcher(100, 8, torch.device("cpu"), seed=3)
    list(batcher)  # one full epoch
    it = iter(batcher)
    first = [next(it) for _ in range(4)]
    state = batcher.state_dict()
    rest = list(it)
    resumed = Batcher(100, 8, torch.device("cpu"), seed=999)
    resumed.load_state_dict(state)
    assert [b.tolist() for b in resumed] == [b.tolist() for b in rest]
    assert len(first) + len(rest) == len(batcher)


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


@pytest.mark.parametrize("val_size", [1, 2, 5, 7, 8])
def test_a_validation_split_of_any_size_trains(val_size, data_root, tmp_path):
    """`aecli train data.val_size=7 data.limit=2000 epochs=1` ended in a ZeroDivisionError in plots.make_grid."""
    from aecli.api import train

    threads = torch.get_num_threads()
    try:
        run = train([f"data.root={data_root}", f"data.val_size={val_size}", "data.limit=64", "batch_size=64",
                     "epochs=1", "latent_dim=2", "net.hidden=[8]", "device=cpu", "eval.at_end=false",
                     "trainer.num_threads=1", "trainer.progress=lines"], tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert (run / "images" / "recon_epoch_001.png").is_file()


def test_make_splits_says_the_minimum():
    from aecli.data import make_splits

    one = torch.zeros(1, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(AecliError, match="1 image left for training and validation: at least 2 are needed"):
        make_splits(one, None, (one, None), 1, None, torch.device("cpu"))
    splits = make_splits(one.expand(2, 1, 2, 2), None, (one, None), 1, None, torch.device("cpu"))
    assert len(splits["train"]) == len(splits["val"]) == 1


def grey_images(n: int = 2000) -> torch.Tensor:
    """n images [n, 1, 1, 7]: each pixel one of LEVELS."""
    return LEVELS.view(1, 1, 1, -1).repeat(n, 1, 1, 1)


def test_dynamic_binarization_is_binary_and_its_mean_is_the_pixel_intensity():
    split = Split(grey_images(), None, DynamicBinarization(torch.device("cpu"), seed=0))
    idx = torch.arange(len(split))
    draws = torch.stack([split.batch(idx)[0] for _ in range(20)])  # 40,000 draws of each level
    assert set(draws.unique().tolist()) == {0.0, 1.0}
    p = LEVELS.double() / 255
    mean = draws.double().mean((0, 1, 2, 3))
    se = (p * (1 - p) / draws[..., 0].numel()).sqrt()
    assert (mean - p).abs().max() <= 4 * se.max() + 1e-12, (mean, p)
    assert mean[0] == 0 and mean[-1] == 1  # black stays black, white stays white
    assert not torch.equal(split.batch(idx)[0], split.batch(idx)[0])  # a fresh draw for every batch


def test_dynamic_draws_follow_the_seed_and_its_state():
    a, b = (DynamicBinarization(torch.device("cpu"), seed=3) for _ in range(2))
    x = grey_images(10).float() / 255
    assert torch.equal(a(x), b(x))
    state = a.state_dict()
    first = a(x)
    a.load_state_dict(state)
    assert torch.equal(a(x), first) and not torch.equal(a(x), first)


def test_static_binarization_is_fixed_and_its_mean_is_the_pixel_intensity():
    images = grey_images(20000)
    once = binarize_once(images, seed=5)
    assert torch.equal(once, binarize_once(images, seed=5)) and not torch.equal(once, binarize_once(images, seed=6))
    assert set(once.unique().tolist()) == {0, 255}
    p = LEVELS.double() / 255
    mean = once.double().div(255).mean((0, 1, 2))
    assert (mean - p).abs().max() <= 4 * (0.25 / len(images)) ** 0.5


def test_binarized_splits_share_their_fixed_images_and_only_dynamic_training_varies():
    images, test = grey_images(300), grey_images(50)
    cpu = torch.device("cpu")
    static = binarized_splits(images, None, (test, None), 100, None, cpu, "static")
    dynamic = binarized_splits(images, None, (test, None), 100, 150, cpu, "dynamic")
    for name in ("val", "test"):  # the same fixed draws under both modes
        assert torch.equal(static[name].images, dynamic[name].images)
        assert static[name].binarizer is None and dynamic[name].binarizer is None
    assert torch.equal(static["train_all"].images, dynamic["fixed_train"].images)  # what evaluation reads
    assert torch.equal(static["val"].images, binarize_once(images, BINARIZE_SEEDS["train"])[200:])
    assert dynamic["train"].binarizer is dynamic["train_all"].binarizer and len(dynamic["train"]) == 150
    assert torch.equal(dynamic["train_all"].images, images[:200])  # grey levels, drawn per batch
    none = binarized_splits(images, None, (test, None), 100, None, cpu, "none")
    assert torch.equal(none["val"].images, images[200:]) and none["binarize"] == "none"


def test_mnist_binarized_keys_and_evaluation_view(data_root):
    grey = MNIST(root=str(data_root), download=False, val_size=5000).load(torch.device("cpu"))
    data = MNIST(root=str(data_root), download=False, val_size=5000, binarize="dynamic").load(torch.device("cpu"))
    assert (grey.key, data.key, data.binarize) == ("mnist", "mnist_binarized", "dynamic")
    idx = torch.arange(len(data.train))
    assert not torch.equal(data.train.batch(idx[:100])[0], data.train.batch(idx[:100])[0])
    assert torch.equal(data.val.batch(idx[:100])[0], data.val.batch(idx[:100])[0])
    fixed = data.evaluation()
    assert fixed.train_all.binarizer is None and torch.equal(fixed.train_all.batch(idx[:100])[0],
                                                             fixed.train_all.batch(idx[:100])[0])
    # the binary data's mean image is the grey data's: E[x_bin] = x
    assert (fixed.train_all.mean_image() - grey.train_all.mean_image()).abs().max() < 0.02


def test_a_bad_binarize_is_one_line(data_root, tmp_path):
    r = run_cli("train", *tiny_overrides(data_root), "data.binarize=yes", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "data.binarize='yes' is not allowed: data.binarize must be one of none, dynamic, static" in r.stderr
