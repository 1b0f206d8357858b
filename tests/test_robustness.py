"""Never lose a run: atomic checkpoints, interrupts, the NaN guard, hostile checkpoints, bad values, run folders."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from aecli.checkpoint import load_checkpoint, save_atomic
from aecli.cli import main
from aecli.config import validate
from aecli.errors import AecliError
from aecli.train import Interrupted, NonFiniteLoss, Trainer

from conftest import tiny_overrides
from test_resume import compose_tiny, fast_data, shared_data  # noqa: F401  (fixtures)


def cli_error(capsys, *args: str) -> tuple[int, str]:
    """Run `aecli ARGS` in-process; its exit code and its stderr, which must be exactly one line."""
    with pytest.raises(SystemExit) as e:
        main(list(args))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("aecli: ") and "Traceback" not in err, err
    return e.value.code, err


# -- atomic checkpoints ------------------------------------------------------------------------------
def test_a_kill_at_any_moment_leaves_the_previous_last_pt_loadable(tmp_path):
    path = tmp_path / "last.pt"
    big = {"model": {"w": torch.randn(512, 1024)}, "config": {}, "epoch": 0}
    save_atomic(big, path)
    for delay in (0.0, 0.002, 0.005, 0.01, 0.02, 0.04):  # SIGKILL a writer looping over save_atomic
        pid = os.fork()
        if pid == 0:
            try:
                for epoch in range(1, 1000):
                    save_atomic({**big, "epoch": epoch}, path)
            finally:
                os._exit(0)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        ckpt = load_checkpoint(path)  # never a half-written file
        assert torch.equal(ckpt["model"]["w"], big["model"]["w"])


def test_checkpoint_to_an_unwritable_place_names_it(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(AecliError, match=f"cannot write checkpoint {tmp_path / 'file' / 'last.pt'}"):
        save_atomic({"model": {}}, tmp_path / "file" / "last.pt")


# -- interrupts --------------------------------------------------------------------------------------
def test_ctrl_c_finishes_the_step_writes_last_pt_and_exits_130(data_root, fast_data, tmp_path, monkeypatch):
    trainer = Trainer(compose_tiny(data_root), tmp_path / "run")
    step = trainer.model.train_step

    def step_then_ctrl_c(*args):
        terms = step(*args)
        if trainer.state.step == 2:  # the signal arrives during step 3
            os.kill(os.getpid(), signal.SIGINT)
        return terms

    monkeypatch.setattr(trainer.model, "train_step", step_then_ctrl_c)
    with pytest.raises(Interrupted) as e:
        trainer.fit()
    assert e.value.exit_code == 130 and "SIGINT after step 3 (epoch 1, batch 3/4)" in str(e.value)
    assert f"aecli train resume={tmp_path / 'run'}" in str(e.value)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 3 and ckpt["batcher"]["position"] == 3 and ckpt["partial"]["count"] == 3
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored


# -- NaN guard ---------------------------------------------------------------------------------------
def poison(trainer, monkeypatch, at_step: int, term: str = "kl"):
    """From `at_step` on, the model's term is NaN and so are its weights (what a too-high lr does)."""
    step = trainer.model.train_step

    def bad_step(*args):
        terms = step(*args)
        if trainer.state.step + 1 >= at_step:
            terms[term] = terms[term] * float("nan")
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(float("nan"))
        return terms

    monkeypatch.setattr(trainer.model, "train_step", bad_step)


@pytest.mark.parametrize("every_step", [True, False])
def test_a_nan_loss_stops_the_run_naming_step_and_term_and_keeps_the_last_good_checkpoint(
        data_root, fast_data, tmp_path, monkeypatch, every_step):
    """On the CPU the guard reads every step; with `every_step` off (as on CUDA, read at the sync points only)
    it still names the first bad step, and no checkpoint with non-finite weights is ever written."""
    trainer = Trainer(compose_tiny(data_root, epochs=3, **{"trainer.log_every": 100}), tmp_path / "run")
    trainer.check_every_step = every_step
    poison(trainer, monkeypatch, at_step=6)  # epoch 2, batch 2
    with pytest.raises(NonFiniteLoss) as e:
        trainer.fit()
    msg = str(e.value)
    assert "'kl' became nan at step 6 (epoch 2)" in msg and "lower lr" in msg and "lr=0.0001" in msg, msg
    assert trainer.state.step == (6 if every_step else 8)  # stopped within the step / at the epoch's end
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ckpt["epoch"] == 1 and all(torch.isfinite(v).all() for v in ckpt["model"].values())


def test_a_diverging_cli_run_exits_3_in_one_line(data_root, fast_data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli_error(capsys, "train", *tiny_overrides(data_root), "lr=1e12", "hydra.run.dir=run")
    assert code == 3 and "became" in err and "at step" in err and "e.g. lr=1e+11" in err
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


# -- hostile checkpoints -----------------------------------------------------------------------------
class Evil:
    """Unpickling this calls open(path, "w"): it creates a file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


def test_a_checkpoint_whose_pickle_creates_a_file_is_refused_without_running_it(tmp_path, capsys, monkeypatch):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": Evil(marker)}, evil)
    assert not marker.exists()
    with pytest.raises(AecliError, match="refused without running it"):
        load_checkpoint(evil)
    monkeypatch.chdir(tmp_path)
    code, err = cli_error(capsys, "train", f"resume={evil}")  # through the CLI, Hydra and the trainer
    assert code == 2 and "refused without running it" in err and str(evil) in err
    assert not marker.exists()


def test_a_truncated_checkpoint_is_named(tmp_path):
    path = tmp_path / "last.pt"
    torch.save({"model": {"w": torch.zeros(1000)}, "config": {}}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(AecliError, match=f"checkpoint {path} is truncated or corrupt"):
        load_checkpoint(path)


# -- values and run folders --------------------------------------------------------------------------
@pytest.mark.parametrize("override,key", [
    ("epochs=0", "epochs"), ("batch_size=0", "batch_size"), ("lr=0", "lr"), ("lr=-1e-3", "lr"),
    ("lambda=-1", "lambda"), ("latent_dim=0", "latent_dim"), ("data.val_size=0", "data.val_size"),
    ("data.limit=0", "data.limit"), ("seed=1.5", "seed"), ("trainer.log_every=0", "trainer.log_every"),
    ("trainer.weight_decay=-1", "trainer.weight_decay"), ("epochs=ten", "epochs"), ("lr=nan", "lr"),
    ("trainer.compile=maybe", "trainer.compile"),
])
def test_every_numeric_key_is_checked_against_its_range(data_root, override, key):
    cfg = compose_tiny(data_root, override)
    with pytest.raises(AecliError, match=rf"^{key}=.* is not allowed: {key} must be "):
        validate(cfg)


def test_noise_level_is_checked(data_root):
    cfg = compose_tiny(data_root, "model=dae", "model.level=1.5")
    with pytest.raises(AecliError, match="model.level=1.5 is not allowed"):
        validate(cfg)


def test_a_bad_value_fails_the_cli_before_any_work(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = cli_error(capsys, "train", f"data.root={data_root}", "epochs=0", "hydra.run.dir=run")
    assert code == 2 and "epochs=0 is not allowed" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"", b"PK\x03\x04" + b"\x00" * 40])
def test_a_file_that_is_no_checkpoint_is_named_in_one_line(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(AecliError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "not a torch checkpoint" in message or "truncated or corrupt" in message


# -- one process per run folder; ending well ----------------------------------------------------------------
def test_usr1_then_resume_auto_finishes_the_run_as_if_never_stopped(data_root, fast_data, tmp_path):
    """SLURM's warning signal (submitit's USR1) is a SIGTERM: last.pt, exit 138. The requeued job runs the same
    command into the same folder; with resume=auto it continues and ends with the weights of the run left alone."""
    over = [*tiny_overrides(data_root, **{"data.limit": 256, "data.val_size": 128, "batch_size": 16, "epochs": 4}),
            "resume=auto", f"hydra.run.dir={tmp_path / 'run'}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "aecli.cli", "train", *over]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    alone = Trainer(compose_tiny(data_root, **{"batch_size": 16, "epochs": 4}), tmp_path / "alone")
    alone.fit()
    for line in proc.stdout:
        if line.startswith("epoch 1/4"):
            proc.send_signal(signal.SIGUSR1)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 138 and err.startswith("aecli: SIGUSR1") and err.count("\n") == 1, err
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr[-2000:]
    final = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert final["step"] == alone.state.step
    for k, v in alone.model.state_dict().items():
        assert torch.equal(v, final["model"][k]), k
    kept = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert kept.returncode == 0 and "ended ok before: kept" in kept.stdout + kept.stderr  # done: nothing retrained


def test_a_signal_during_the_final_evaluation_says_how_to_finish_it(tmp_path, data_root):
    """Training ended, the evaluation is running: SIGTERM writes status.json (interrupted, stage evaluation) and
    prints the `aecli eval` command that completes it."""
    over = [*tiny_overrides(data_root, **{"eval.at_end": "true", "eval.iw_samples": 100000, "eval.iw_images": 500}),
            "hydra.run.dir=run"]
    proc = subprocess.Popen([sys.executable, "-m", "aecli.cli", "train", *over], cwd=tmp_path,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    for line in proc.stdout:
        if line.startswith("done: best val_loss"):
            time.sleep(1.0)  # into the evaluation (the IW bound alone takes minutes at these sizes)
            proc.send_signal(signal.SIGTERM)
            break
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and err.count("\n") == 1, err
    assert "during the evaluation: training finished" in err and "aecli eval run=" in err
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["status"] == "interrupted" and status["stage"] == "evaluation"
    assert not (tmp_path / "run" / "eval.json").exists() and (tmp_path / "run" / "checkpoints" / "best.pt").is_file()


def test_a_resume_keeps_the_run_s_own_eval_setting(data_root, fast_data, tmp_path):
    """A run started with eval.at_end=false and resumed is not evaluated (the resumes read the new composed config
    before: 8 of 8 evaluated)."""
    from aecli.job import run_training

    cfg = compose_tiny(data_root)  # eval.at_end=false in tiny_overrides
    first = Trainer(cfg, tmp_path / "run", stop_at_step=3)
    with pytest.raises(Interrupted):
        first.fit()
    run_training(compose_tiny(data_root, resume=tmp_path / "run", **{"eval.at_end": "true"}), tmp_path / "run",
                 overrides=[f"resume={tmp_path / 'run'}"])  # the composed default says true; the run said false
    assert not (tmp_path / "run" / "eval.json").exists()


def test_printed_commands_work_as_the_user_started_aecli(monkeypatch):
    from aecli.paths import aecli_command

    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH", raising=False)
    assert aecli_command() == "aecli"
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")  # set by `uv run`
    assert aecli_command() == "uv run aecli"
