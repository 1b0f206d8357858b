"""Never lose a run: bad values, run folders, a signal during the final evaluation, a resume's own settings
(checkpoints: tests/test_checkpoint.py; interrupts: tests/test_signals.py; the NaN guard: tests/test_health.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from aecli.cli import main
from aecli.config import validate
from aecli.errors import AecliError
from aecli.train import Interrupted, Trainer

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
# -- interrupts --------------------------------------------------------------------------------------
# -- NaN guard ---------------------------------------------------------------------------------------
# -- hostile checkpoints -----------------------------------------------------------------------------
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
