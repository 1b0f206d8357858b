"""The Python API (aecli/api.py): `aecli.train` runs the command line's job, as often as asked in one process, and
`aecli.load_run` gives a finished run to use on new images."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import aecli
from aecli import rundir
from aecli.errors import AecliError
from conftest import tiny_overrides


def test_two_trains_in_one_process_both_train_and_return_their_runs(tmp_path, data_root, monkeypatch):
    """The second call raised `TypeError: 'module' object is not callable` (the first imported aecli.train, the
    training loop's module, over the lazy function)."""
    monkeypatch.chdir(tmp_path)
    over = tiny_overrides(data_root, **{"data.limit": 256, "data.val_size": 128})
    first = aecli.train(over)
    second = aecli.train([*over, "lr=0.002"], run_dir=tmp_path / "second")
    assert first != second and second == (tmp_path / "second").resolve()
    for run, lr in ((first, 0.001), (second, 0.002)):
        assert rundir.read_status(run)["status"] == "ok" and len(rundir.read_metrics(run)) == 1
        assert rundir.RunDir(run).best.is_file()
        assert (rundir.RunDir(run).hydra / "config.yaml").is_file() and (run / "train.log").is_file()
        assert rundir.read_overrides(run)[-1] == ("lr=0.002" if lr == 0.002 else over[-1])
    free = "import sys; from aecli import rundir; rundir.lock_folder(sys.argv[1])"
    assert subprocess.run([sys.executable, "-c", free, str(second)]).returncode == 0  # the lock went with the run
    import aecli.train as loop  # the training loop's module is still the module

    assert hasattr(loop, "Trainer")
    run = aecli.load_run(second, device="cpu")
    x, _ = run.data.test.batch(torch.arange(4))
    assert run.encode(x).shape == (4, 4) and run.reconstruct(x).shape == x.shape
    assert run.decode(run.encode(x)).shape == x.shape and run.sample(8).shape[0] == 8


def test_train_refuses_what_the_command_line_refuses(tmp_path, data_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AecliError, match="runs one run"):
        aecli.train(["lr=0.1,0.2"])
    run = tmp_path / "taken"
    run.mkdir()
    rundir.write_metrics(run, [{"epoch": 1, "val_loss": 1.0}])
    with pytest.raises(AecliError, match="already holds a run"):
        aecli.train(tiny_overrides(data_root), run_dir=run)
    if not torch.cuda.is_available():  # refused inside the job: an exception, and no folder left behind
        with pytest.raises(AecliError, match="device=cuda"):
            aecli.train([*tiny_overrides(data_root), "device=cuda"], run_dir=tmp_path / "gpu")
        assert not (tmp_path / "gpu").exists()


def test_a_run_that_fails_inside_raises_and_is_marked_failed(tmp_path, data_root):
    """Inside the job, as on the command line: a diverging run raises its one-line error and its status.json says
    failed (api.train wrote no status when a run failed)."""
    with pytest.raises(AecliError, match="lr="):
        aecli.train([*tiny_overrides(data_root), "lr=1e12"], run_dir=tmp_path / "diverged")
    status = rundir.read_status(tmp_path / "diverged")
    assert status["status"] == "failed" and "lr=" in status["error"]
