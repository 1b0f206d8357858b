"""Resume: a run interrupted at any step and resumed ends bitwise equal to the run left alone (CPU).

Runs in-process share one loaded data set; one test interrupts a real `aecli train` subprocess with SIGTERM.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

import aecli.build as build_mod
from aecli.checkpoint import load_checkpoint, load_model_state
from aecli.cli import main
from aecli.paths import config_dir
from aecli.config import build_model, plain
from aecli.errors import AecliError
from aecli.job import run_training
from aecli.signals import Interrupted
from aecli.loop import Trainer

from conftest import CUDA, REPO, load_data, tiny_overrides

MODELS = sorted(p.stem for p in (config_dir() / "model").glob("*.yaml"))
TIMING = ("seconds", "images_per_s")


def compose_tiny(data_root, *extra: str, **kw):
    # 256 images in batches of 64: four steps an epoch, two epochs
    over = tiny_overrides(data_root, **{"data.limit": 256, "batch_size": 64, "epochs": 2, "data.val_size": 128,
                                        "trainer.progress": "lines", **kw})
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[*over, *extra])


@pytest.fixture(scope="module")
def shared_data(data_root):
    return load_data("mnist", data_root, torch.device("cpu"), download=False, limit=256, val_size=128)


@pytest.fixture
def fast_data(shared_data, monkeypatch):
    """Every Trainer in the test reuses the loaded splits (they are never written to)."""
    monkeypatch.setattr(build_mod, "build_dataset", lambda cfg: types.SimpleNamespace(load=lambda device: shared_data))
    threads = torch.get_num_threads()
    yield shared_data
    torch.set_num_threads(threads)


def same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def without_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def run_interrupted(cfg, run_dir: Path, stop_at: int, overrides=(), between=lambda: None) -> Trainer:
    """Train until `stop_at` as if SIGTERM arrived then, then resume in the same folder until the end (`between`:
    what happens in between)."""
    first = Trainer(cfg, run_dir)
    first.stop_at_step = stop_at
    with pytest.raises(Interrupted) as e:
        first.fit()
    assert e.value.exit_code == 143 and f"resume={run_dir}" in str(e.value)
    ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert ckpt["step"] == stop_at
    between()
    cfg.resume = str(run_dir)
    second = Trainer.resume(cfg, run_dir, overrides)
    second.fit()
    return second


# -- a resumed run equals the run left alone --------------------------------------------------------------------
@pytest.fixture(scope="module")
def dynamic_data(data_root):
    from aecli.datasets.mnist import MNIST

    return MNIST(root=str(data_root), download=False, limit=256, val_size=128,
                 binarize="dynamic").load(torch.device("cpu"))


IN_PROCESS = [("vae", 1, "none"), ("vae", 4, "none"), *[(m, 6, "none") for m in MODELS], ("vae", 3, "dynamic"),
              ("vae", 4, "dynamic")]
BY_THE_CLI = [pytest.param(name, marks=pytest.mark.slow) for name in ("SIGTERM", "SIGUSR1")]


@pytest.mark.parametrize("case", [*IN_PROCESS, *BY_THE_CLI], ids=lambda c: c if isinstance(c, str) else
                         "-".join(map(str, c)))
def test_a_resumed_run_equals_the_run_left_alone(case, data_root, shared_data, dynamic_data, tmp_path, monkeypatch):
    """In-process, every model (several optimizers, noise and eps from the global RNG included) stopped mid-epoch
    and at an epoch's end, and under data.binarize=dynamic (the binary draws continue where they stopped): the same
    weights, optimizer states, rows and best epoch as the run left alone. By the real CLI: `aecli train` stopped by
    SIGTERM, resumed with resume=RUN from another folder, or by SLURM's SIGUSR1 (submitit's warning), requeued as
    the same command with resume=auto: the weights of the same run never interrupted."""
    if isinstance(case, str):
        return resumed_by_the_cli(case, data_root, shared_data, tmp_path, monkeypatch)
    model, stop_at, binarize = case
    data = shared_data if binarize == "none" else dynamic_data
    monkeypatch.setattr(build_mod, "build_dataset", lambda cfg: types.SimpleNamespace(load=lambda device: data))
    threads = torch.get_num_threads()

    def config(**kw):
        return compose_tiny(data_root, f"model={model}", **{"data.binarize": binarize, **kw})

    try:
        alone = Trainer(config(), tmp_path / "alone")
        alone.fit()
        resumed = run_interrupted(config(), tmp_path / "resumed", stop_at, between=lambda: data.train.batch(
            torch.arange(64)))  # draws between the runs must not matter
        if binarize == "dynamic":  # another seed draws other binary images
            other = Trainer(config(seed=1), tmp_path / "seed1")
            other.fit()
            assert not torch.equal(other.model.state_dict()["encoder.out.weight"],
                                   alone.model.state_dict()["encoder.out.weight"])
    finally:
        torch.set_num_threads(threads)
    same_state(alone.model.state_dict(), resumed.model.state_dict())
    for name, opt in alone.optimizers.items():
        for pa, pb in zip(opt.state.values(), resumed.optimizers[name].state.values()):
            same_state(pa, pb)
    assert resumed.state.step == alone.state.step == 8 and resumed.state.epoch == 2
    assert without_timing(resumed.state.rows) == without_timing(alone.state.rows)  # the partial sums were kept
    assert resumed.state.best_val == alone.state.best_val


def resumed_by_the_cli(name: str, data_root, shared_data, tmp_path, monkeypatch) -> None:
    """`aecli train` stopped by a real signal after its first epoch line exits 128 + the signal in one line; it is
    continued (SIGTERM: `aecli train resume=RUN`, in-process, from another folder; SIGUSR1: the same command run
    again, resume=auto) in its own folder and ends with the weights and rows of the run left alone."""
    monkeypatch.setattr(build_mod, "build_dataset",
                        lambda cfg: types.SimpleNamespace(load=lambda device: shared_data))
    over = tiny_overrides(data_root, **{"data.limit": 256, "data.val_size": 128, "batch_size": 16, "epochs": 4,
                                        "trainer.progress": "lines"})
    run_dir = tmp_path / "run"
    auto = ["resume=auto"] if name == "SIGUSR1" else []
    cmd = [sys.executable, "-m", "aecli.cli", "train", *over, *auto, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": ""}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    threads = torch.get_num_threads()
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            alone = Trainer(compose(config_name="config", overrides=over), tmp_path / "alone")
        alone.fit()  # meanwhile, the same run left alone
    finally:
        torch.set_num_threads(threads)
    for line in proc.stdout:  # the first epoch line: the signal handler is in place, three epochs remain
        if line.startswith("epoch 1/4"):
            proc.send_signal(getattr(signal, name))
            break
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + getattr(signal, name), err
    assert err.count("\n") == 1 and err.startswith(f"aecli: {name}") and "Traceback" not in err, err
    assert f"aecli train resume={run_dir}" in err
    stopped = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert 16 <= stopped["step"] < 64
    if name == "SIGUSR1":  # the requeued job: the same command, into the same folder
        again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert again.returncode == 0, again.stderr[-2000:]
    else:
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        monkeypatch.chdir(elsewhere)
        handlers = logging.getLogger().handlers[:]
        try:
            main(["train", f"resume={run_dir}"])  # in-process: the CLI, Hydra and the trainer
        finally:
            for h in logging.getLogger().handlers[:]:
                if h not in handlers:
                    logging.getLogger().removeHandler(h)
                    h.close()
            torch.set_num_threads(threads)
        assert not (elsewhere / "outputs").exists()  # continued in its own folder, nowhere else
        assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / ".hydra" / "resume-1").is_dir()
    final = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert final["step"] == alone.state.step == 64
    same_state(alone.model.state_dict(), final["model"])
    assert without_timing(final["metrics"]) == without_timing(alone.state.rows)
    assert len((run_dir / "metrics.csv").read_text().splitlines()) == 5
    if name == "SIGUSR1":
        kept = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        assert kept.returncode == 0 and "ended ok before: kept" in kept.stdout + kept.stderr  # done: none retrained


def test_resume_with_more_epochs_equals_a_longer_run(data_root, fast_data, tmp_path):
    long = Trainer(compose_tiny(data_root, epochs=3), tmp_path / "long")
    long.fit()
    Trainer(compose_tiny(data_root), tmp_path / "short").fit()
    with pytest.raises(AecliError, match="finished 2 of epochs=2"):
        Trainer.resume(compose_tiny(data_root, resume=tmp_path / "short"), tmp_path / "short", ["resume=x"])
    more = Trainer.resume(compose_tiny(data_root, epochs=3, resume=tmp_path / "short"), tmp_path / "short",
                          ["epochs=3"])
    more.fit()
    same_state(long.model.state_dict(), more.model.state_dict())


def test_resume_with_more_epochs_says_the_cosine_horizon_moved(data_root, fast_data, tmp_path, caplog):
    """epochs=2, then resume=... epochs=4 gave the lr per epoch 6.38e-4, 1.09e-4, 2.65e-4, 1.02e-4 in silence: a
    saw-tooth. The rate stays a function of the step and the run's steps (from the resume point on, the 4-epoch
    run's), and one line says the horizon moved."""
    cosine = {"trainer.scheduler": "cosine"}
    Trainer(compose_tiny(data_root, **cosine), tmp_path / "run").fit()
    alone = Trainer(compose_tiny(data_root, epochs=4, **cosine), tmp_path / "alone")
    alone.fit()
    with caplog.at_level(logging.INFO, logger="aecli"):
        more = Trainer.resume(compose_tiny(data_root, epochs=4, resume=tmp_path / "run", **cosine), tmp_path / "run",
                              ["epochs=4"])
    assert caplog.text.count("horizon moved from 8 to 16 steps") == 1
    more.fit()
    assert [r["lr"] for r in more.state.rows][2:] == [r["lr"] for r in alone.state.rows][2:]


def test_resume_refuses_a_changed_key_naming_both(data_root, fast_data, tmp_path):
    Trainer(compose_tiny(data_root, epochs=1), tmp_path / "run").fit()
    cfg = compose_tiny(data_root, epochs=1, resume=tmp_path / "run", lr=0.5)
    with pytest.raises(AecliError, match=r"lr=0.5 differs from the checkpoint's lr=0.001"):
        run_training(cfg, tmp_path / "run", overrides=["lr=0.5"])


def test_checkpoint_of_another_shape_or_model_is_named(data_root, fast_data, tmp_path):
    Trainer(compose_tiny(data_root, epochs=1), tmp_path / "run").fit()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    ckpt["config"]["net"]["hidden"] = [32, 16]
    torch.save(ckpt, tmp_path / "shape.pt")
    with pytest.raises(AecliError) as e:
        Trainer.resume(compose_tiny(data_root, epochs=2, resume=tmp_path / "shape.pt"), tmp_path / "b", ["epochs=2"])
    msg = str(e.value)
    assert "encoder" in msg and "[64, 784] in the checkpoint and [32, 784] in the model" in msg, msg
    ckpt["config"]["model"]["likelihood"] = "gaussian"  # a model with one more parameter (log_sigma)
    ckpt["config"]["net"]["hidden"] = [64, 32]
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(AecliError, match="missing.*log_sigma"):
        Trainer.resume(compose_tiny(data_root, epochs=2, resume=tmp_path / "other.pt"), tmp_path / "c", ["epochs=2"])
    cfg = compose_tiny(data_root, "model=ae")  # another model asked for: both are named
    with pytest.raises(AecliError, match=r"holds a VAE \(net MLP hidden=\[64, 32\], latent_dim 4\) model that does "
                                         r"not fit the AE \(net MLP hidden=\[64, 32\], latent_dim 4\) model"):
        load_model_state(build_model(cfg), plain(cfg), load_checkpoint(path), path)


def test_resume_auto_reads_the_checkpoint_once(data_root, fast_data, tmp_path, monkeypatch):
    """resume=auto looks at the folder's last.pt (is it this job's?) and then resumes from it: the tensors were read
    twice. The look now maps the file (its config only is read); the resume reads it."""
    from aecli import checkpoint
    from aecli.job import continue_in_place

    with pytest.raises(Interrupted):
        Trainer(compose_tiny(data_root), tmp_path / "run", stop_at_step=3).fit()
    loads, real = [], torch.load
    monkeypatch.setattr(checkpoint.torch, "load",
                        lambda *a, **kw: loads.append(kw.get("mmap") or False) or real(*a, **kw))
    cfg = compose_tiny(data_root, resume="auto")
    assert continue_in_place(cfg, tmp_path / "run", ["resume=auto"]) is False and cfg.resume == str(tmp_path / "run")
    run_training(cfg, tmp_path / "run", overrides=["resume=auto"])
    assert loads == [True, False]  # mapped for the look, read once for the resume
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 8


def test_resume_cli_refuses_a_sweep_and_a_missing_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", f"resume={tmp_path / 'nope'}"])
    assert e.value.code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "-m", f"resume={REPO}"])
    assert "cannot be combined with -m" in capsys.readouterr().err


@CUDA
def test_resume_on_cuda_matches_and_the_guard_reads_at_sync_points_only(data_root, tmp_path):
    """CUDA RNG and the batcher's CUDA generator are restored; the NaN guard does not sync every step there."""
    cfg = compose_tiny(data_root, device="cuda")
    alone = Trainer(cfg, tmp_path / "alone")
    assert not alone.check_every_step
    alone.fit()
    resumed = run_interrupted(compose_tiny(data_root, device="cuda"), tmp_path / "resumed", 6)
    for k, v in alone.model.state_dict().items():
        torch.testing.assert_close(v, resumed.model.state_dict()[k], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("knobs", [
    {"trainer.scheduler": "cosine", "trainer.warmup_steps": 3, "trainer.grad_clip": 0.5},
    {"trainer.scheduler": "plateau", "trainer.plateau_patience": 1, "trainer.gamma": 0.5},
    {"trainer.scheduler": "step", "trainer.step_size": 1, "trainer.early_stopping.patience": 1,
     "trainer.early_stopping.min_delta": 1000.0},
])
def test_schedules_clipping_and_early_stopping_resume_exactly(knobs, data_root, fast_data, tmp_path):
    """The learning-rate schedule (its plateau count included), gradient clipping and early stopping continue a
    mid-epoch interrupt exactly: the same weights, the same rows (lr and grad_norm columns too)."""
    alone = Trainer(compose_tiny(data_root, "model=aae", epochs=3, **knobs), tmp_path / "alone")
    alone.fit()
    resumed = run_interrupted(compose_tiny(data_root, "model=aae", epochs=3, **knobs), tmp_path / "resumed", 6)
    same_state(alone.model.state_dict(), resumed.model.state_dict())
    assert without_timing(resumed.state.rows) == without_timing(alone.state.rows)
    rows = alone.state.rows
    if "trainer.grad_clip" in knobs:
        assert all(r["train_grad_norm"] > 0 for r in rows)
        assert 1e-3 > rows[0]["lr"] > rows[1]["lr"] > rows[2]["lr"]  # past the warm-up, the cosine decays
    if "trainer.early_stopping.patience" in knobs:  # no epoch can improve by 1000 nats: stops after epoch 2
        assert [r["epoch"] for r in rows] == [1, 2] and alone.state.stopped_early
        assert rows[1]["lr"] == pytest.approx(rows[0]["lr"] * 0.1)  # step: one decay an epoch


# -- grids every N epochs (trainer.images_every) ------------------------------------------------------------
def test_grids_every_n_epochs_and_always_at_the_last(data_root, fast_data, tmp_path):
    Trainer(compose_tiny(data_root, "epochs=5", "trainer.images_every=2"), tmp_path / "run").fit()
    assert sorted(p.name for p in (tmp_path / "run" / "images").glob("recon_*")) == \
        ["recon_epoch_002.png", "recon_epoch_004.png", "recon_epoch_005.png"]


