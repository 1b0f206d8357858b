"""Data: the real IDX files through torchvision, the fixed splits, the on-device batcher, the offline error,
binarization (its mean is the pixel intensity), and splits of every size."""

from __future__ import annotations

import pytest
import torch

from aecli.data import BINARIZE_SEEDS, Batcher, DynamicBinarization, Split, binarize_once, binarized_splits
from aecli.datasets.mnist import MNIST
from aecli.errors import AecliError
from conftest import run_cli, tiny_overrides

LEVELS = torch.tensor([0, 1, 64, 128, 200, 254, 255], dtype=torch.uint8)  # grey levels for the binarization tests


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


@pytest.mark.slow
def test_a_bad_binarize_is_one_line(data_root, tmp_path):
    r = run_cli("train", *tiny_overrides(data_root), "data.binarize=yes", cwd=tmp_path)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "data.binarize='yes' is not allowed: data.binarize must be one of none, dynamic, static" in r.stderr
