"""aecli.classifier: the feature classifiers evaluation measures samples with, trained once and cached; and the
evaluation caches' read-modify-write under a lock."""

from __future__ import annotations

import json
import multiprocessing

import torch

from aecli.datasets.mnist import MNIST


def test_cnn_classifier_trains_to_its_target_and_is_cached(data_root, tmp_path, monkeypatch):
    from aecli import classifier
    from aecli.data import Data

    full = MNIST(root=str(data_root), download=False).load(torch.device("cpu"))
    small = Data("mnist", full.classes, full.image_shape, full.train.head(2000), full.val.head(500),
                 full.test.head(500), full.train_all.head(2000), key="mnist_small")
    monkeypatch.setitem(classifier.TARGET_ACCURACY, "mnist", 0.85)
    net, test_acc = classifier.load_paper_classifier(small, torch.device("cpu"), str(tmp_path))
    saved = torch.load(tmp_path / "mnist_small_classifier_cnn_v1.pt", weights_only=True)
    assert saved["val_acc"] >= 0.85 and saved["epochs"] < classifier.CNN_MAX_EPOCHS and test_acc > 0.8
    assert net.features(small.test.batch(torch.arange(5))[0]).shape == (5, classifier.CNN_FEATURE_DIM)
    again, acc = classifier.load_paper_classifier(small, torch.device("cpu"), str(tmp_path))  # from the cache
    assert acc == test_acc and torch.equal(again.head.weight, net.head.weight)


def test_the_one_time_classifier_training_says_so_and_where_it_is_cached(data_root, tmp_path, caplog):
    from aecli import classifier
    from aecli.data import Data

    full = MNIST(root=str(data_root), download=False).load(torch.device("cpu"))
    small = Data("mnist", full.classes, full.image_shape, full.train.head(1000), full.val.head(200),
                 full.test.head(200), full.train_all.head(1000), key="mnist_small")
    with caplog.at_level("INFO", logger="aecli"):
        classifier.load_classifier(small, torch.device("cpu"), 2, str(tmp_path))
    lines = [r.getMessage() for r in caplog.records]
    what = "eval: training the mnist feature classifier once (2 epochs on 1,000 images)"
    assert f"{what}; cached in {tmp_path / 'mnist_small_classifier_v2_e2.pt'}" in lines
    assert any(line.startswith(f"{what}: ") for line in lines)  # its time, when it ends
    caplog.clear()
    with caplog.at_level("INFO", logger="aecli"):
        classifier.load_classifier(small, torch.device("cpu"), 2, str(tmp_path))  # from the cache: silent
    assert not [r for r in caplog.records if "training" in r.getMessage()]


def add_keys(path, worker: int, n: int) -> None:
    from aecli.classifier import cached_json

    for i in range(n):
        cached_json(path, f"{worker}-{i}", lambda: {"value": float(i)})


def test_jobs_side_by_side_never_lose_each_other_s_keys(tmp_path):
    """Parallel sweep jobs fill one floors.json: each adds its key under the file's lock, so none is lost (without
    the lock, a read-modify-write that overlapped another dropped the other's key)."""
    path = tmp_path / "floors.json"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=add_keys, args=(path, w, 40)) for w in range(6)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
    assert all(p.exitcode == 0 for p in workers)
    table = json.loads(path.read_text())
    assert len(table) == 6 * 40 and table["3-7"] == {"value": 7.0}
