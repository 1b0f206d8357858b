"""The evaluation caches (aecli/classifier.py): cached_json's read-modify-write under a lock."""

from __future__ import annotations

import json
import multiprocessing


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
