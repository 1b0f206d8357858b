"""data=images (aecli/datasets/images.py): a researcher's own images from a .npz, a .npy or a folder."""

from __future__ import annotations

import pytest
import torch

from aecli.errors import AecliError


def images_data(path, **options):
    from aecli import schema
    from aecli.datasets.images import Images

    return Images(**schema.check(Images.Options, {"path": str(path), **options}, "data")).load(torch.device("cpu"))


def test_images_from_npz_npy_and_folders(tmp_path):
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    x = g.random((50, 3, 12, 10)).astype(np.float32)  # float in [0, 1], [N, C, H, W]
    y = np.repeat([3, 7], 25)
    np.savez(tmp_path / "faces.npz", x=x, y=y)
    data = images_data(tmp_path / "faces.npz", val_size=10, test_size=0.2)
    assert data.image_shape == (3, 12, 10) and data.classes == ["3", "7"]
    assert (len(data.train), len(data.val), len(data.test)) == (30, 10, 10)
    # the splits are fixed (one shuffle, seed 0), disjoint, and the floats are kept to 1/255
    again = images_data(tmp_path / "faces.npz", val_size=10, test_size=0.2)
    assert torch.equal(again.val.images, data.val.images)
    all_images = torch.cat([data.train.images, data.val.images, data.test.images]).float() / 255
    assert sorted(all_images.flatten(1).sum(1).tolist()) == pytest.approx(
        sorted((np.rint(x * 255) / 255).reshape(50, -1).sum(1).tolist()), rel=1e-5)

    np.save(tmp_path / "digits.npy", (g.random((40, 9, 9)) * 255).astype(np.uint8))  # uint8 [N, H, W], no labels
    plain = images_data(tmp_path / "digits.npy", val_size=8, test_size=8)
    assert plain.image_shape == (1, 9, 9) and plain.classes is None and plain.train.labels is None

    for c, name in enumerate(["cats", "dogs"]):  # the ImageFolder convention: one sub-folder per class
        (tmp_path / "pets" / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray((g.random((8, 8, 3)) * 255).astype(np.uint8)).save(tmp_path / "pets" / name / f"{i}.png")
    pets = images_data(tmp_path / "pets", val_size=2, test_size=2)
    assert pets.classes == ["cats", "dogs"] and pets.image_shape == (3, 8, 8)
    assert sorted(torch.cat([pets.train.labels, pets.val.labels, pets.test.labels]).tolist()) == [0] * 6 + [1] * 6


@pytest.mark.parametrize("case,expect", [
    ("mixed_sizes", "every image must have one size"), ("empty", "holds no PNG or JPEG files"),
    ("corrupt", "cannot read the image"), ("labels", "holds [49] labels for 50 images"),
    ("channel_last", "looks channel-last"), ("range", "float images must lie in [0, 1]"),
    ("missing", "does not exist"),
])
def test_bad_images_are_one_line_naming_the_file(tmp_path, case, expect):
    import numpy as np
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    path = folder
    if case == "mixed_sizes":
        Image.new("L", (8, 8)).save(folder / "a.png")
        Image.new("L", (9, 8)).save(folder / "b.png")
    elif case == "corrupt":
        Image.new("L", (8, 8)).save(folder / "a.png")
        (folder / "b.png").write_bytes(b"\x89PNG not really")
    elif case in ("labels", "channel_last", "range"):
        x = {"labels": np.zeros((50, 8, 8), np.uint8), "channel_last": np.zeros((50, 32, 32, 3), np.uint8),
             "range": np.full((50, 8, 8), 2.0, np.float32)}[case]
        path = tmp_path / "x.npz"
        np.savez(path, x=x, **({"y": np.zeros(49, np.int64)} if case == "labels" else {}))
    elif case == "missing":
        path = tmp_path / "nowhere.npz"
    with pytest.raises(AecliError) as err:
        images_data(path)
    message = str(err.value)
    assert expect in message and "\n" not in message, message
    if case in ("mixed_sizes", "corrupt"):
        assert str(folder / "b.png") in message


@pytest.mark.slow
def test_own_images_train_and_evaluate_end_to_end(tmp_path):
    """`aecli train data=images data.path=...` on unlabeled images: the metrics that need labels are skipped with
    their reason; a cvae is refused in one line."""
    import json

    import numpy as np

    g = np.random.default_rng(1)
    np.save(tmp_path / "blobs.npy", (g.random((400, 1, 20, 20)) > 0.7).astype(np.float32))
    common = ["data=images", f"data.path={tmp_path / 'blobs.npy'}", "epochs=1", "latent_dim=4", "device=cpu",
              "net=conv", "net.channels=[4,8]", "eval.test_images=40", "eval.jacobian_images=10", "eval.iw_samples=10",
              "eval.iw_images=20", "eval.mmd_images=40"]
    from conftest import run_cli

    proc = run_cli("train", *common, "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert record["data"] == "images" and "recon_bce" in record and "probe_acc" not in record
    assert record["skipped"]["probe_acc"] == "the data set images has no labels"
    refused = run_cli("train", *common, "model=cvae", "hydra.run.dir=run2", cwd=tmp_path)
    assert refused.returncode == 2 and "needs class labels" in refused.stderr and "Traceback" not in refused.stderr


def test_an_npz_with_arrays_aecli_does_not_read_is_refused_with_the_keys_found(tmp_path):
    """An .npz of `data` and `target` trained on `data` and dropped `target` without a word."""
    import numpy as np

    path = tmp_path / "set.npz"
    np.savez(path, data=np.zeros((50, 8, 8), np.uint8), target=np.zeros(50, np.int64))
    with pytest.raises(AecliError) as err:
        images_data(path)
    message = str(err.value)
    assert "holds the arrays data, target" in message and "under x" in message and "under y" in message
    np.savez(path, x=np.zeros((50, 8, 8), np.uint8), target=np.zeros(50, np.int64))  # images found, labels not
    with pytest.raises(AecliError, match="target"):
        images_data(path)
    np.savez(path, images=np.zeros((50, 8, 8), np.uint8), labels=np.repeat([1, 2], 25))  # the documented aliases
    assert images_data(path, val_size=5, test_size=5).classes == ["1", "2"]


@pytest.mark.parametrize("n", [1, 2, 5, 7, 8, 60])
def test_every_size_of_an_images_set_trains_or_says_the_minimum(n, tmp_path):
    """`aecli train data=images` on a set of n images: under ~90 images (a validation split under 8) the grids
    once ended in a ZeroDivisionError; now a tiny set trains (its recon grid one short row) or, under 3 images, is
    refused in one line that says the minimum."""
    import numpy as np

    from aecli.api import train

    np.save(tmp_path / "few.npy", np.random.default_rng(0).random((n, 8, 8)).astype(np.float32))
    over = ["data=images", f"data.path={tmp_path / 'few.npy'}", "epochs=1", "latent_dim=2", "net.hidden=[8]",
            "device=cpu", "eval.at_end=false", "trainer.num_threads=1", "trainer.progress=lines"]
    threads = torch.get_num_threads()
    try:
        if n < 3:
            with pytest.raises(AecliError, match=f"holds {n} images?: data=images needs at least 3 "):
                train(over, tmp_path / "run")
            return
        run = train(over, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert (run / "images" / "recon_epoch_001.png").is_file() and (run / "checkpoints" / "best.pt").is_file()
