"""The Python API (aecli/api.py): `aecli.train` runs the command line's job, as often as asked in one process, and
`aecli.load_run` gives a finished run to use on new images, taking the shapes a user hands it or saying what it
takes."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import aecli
from aecli import rundir
from aecli.api import Run
from aecli.errors import AecliError
from aecli.models.vae import VAE
from aecli.nets.mlp import MLP
from conftest import tiny_overrides


def test_two_trains_in_one_process_both_train_and_return_their_runs(tmp_path, data_root, monkeypatch):
    """The second call raised `TypeError: 'module' object is not callable` (the first imported the training loop's
    module, then aecli/train.py, over the lazy function; the loop is aecli/loop.py now)."""
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


def a_run(image_shape=(1, 28, 28), latent_dim: int = 3) -> Run:
    """A Run around an untrained model, without a run folder."""
    run = Run.__new__(Run)
    run.model = VAE(MLP(hidden=[16], activation="relu"), latent_dim=latent_dim, image_shape=image_shape).eval()
    run.device = torch.device("cpu")
    return run


def test_images_of_the_run_shape_with_or_without_batch_and_channel():
    run = a_run()
    x = torch.rand(5, 1, 28, 28)
    z = run.encode(x)
    assert z.shape == (5, 3)
    assert torch.equal(run.encode(x[:, 0]), z) and torch.allclose(run.encode(x[0, 0]), z[:1], atol=1e-6)
    assert torch.allclose(run.encode(x[0]), z[:1], atol=1e-6) and run.reconstruct(x[0, 0]).shape == (1, 1, 28, 28)
    assert run.decode(z[0]).shape == (1, 1, 28, 28) and run.decode(z).shape == (5, 1, 28, 28)


def test_a_wrong_shape_is_one_line_naming_both():
    run = a_run()
    with pytest.raises(AecliError, match=r"images of shape \[32, 32\] do not fit this run: it takes \[N, 1, 28, 28\] "
                                         r"or \[1, 28, 28\], or \[N, 28, 28\] / \[28, 28\] for its one channel"):
        run.encode(torch.rand(32, 32))
    with pytest.raises(AecliError, match=r"images of shape \[2, 3, 28, 28\] do not fit"):
        run.reconstruct(torch.rand(2, 3, 28, 28))
    with pytest.raises(AecliError, match=r"codes of shape \[4, 5\] do not fit this run: it takes \[N, 3\] or \[3\]"):
        run.decode(torch.rand(4, 5))
    rgb = a_run((3, 8, 8))  # three channels: no channel-less shapes
    assert rgb.encode(torch.rand(3, 8, 8)).shape == (1, 3)
    with pytest.raises(AecliError, match=r"images of shape \[8, 8\] do not fit this run: it takes \[N, 3, 8, 8\] or "
                                         r"\[3, 8, 8\]$"):
        rgb.encode(torch.rand(8, 8))
