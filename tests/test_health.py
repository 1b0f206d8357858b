"""A run's health (aecli/health.py): a NaN, inf or diverged loss stops the run in one line and never reaches a
checkpoint; collapse is said."""

from __future__ import annotations

import pytest
import torch

from aecli.checkpoint import load_checkpoint
from aecli.health import LossGuard, NonFiniteLoss, collapse_symptoms
from aecli.loop import Trainer

from conftest import as_net, run_cli, tiny_overrides
from test_resume import compose_tiny, fast_data, shared_data  # noqa: F401  (fixtures)
from conftest import cli_error
from test_loop import compose_tiny as compose_run, odd_data, trainer_on  # noqa: F401  (fixtures)


def test_the_guard_names_the_first_bad_step_and_term():
    guard = LossGuard(torch.device("cpu"), lr=0.01)
    guard.update({"loss": torch.tensor(200.0), "kl": torch.tensor(3.0)}, step=1)
    guard.check(epoch=1)
    guard.update({"loss": torch.tensor(210.0), "kl": torch.tensor(float("inf"))}, step=2)
    guard.update({"loss": torch.tensor(float("nan")), "kl": torch.tensor(float("nan"))}, step=3)
    with pytest.raises(NonFiniteLoss, match=r"the loss term 'kl' became inf at step 2 \(epoch 1\): training stopped "
                                            r"and no checkpoint was written yet; try a lower lr than 0.01, e.g. "
                                            r"lr=0.001"):
        guard.check(epoch=1)
    diverged = LossGuard(torch.device("cpu"), lr=1.0)
    diverged.update({"loss": torch.tensor(200.0)}, step=1)
    diverged.update({"loss": torch.tensor(20001.0)}, step=2)
    with pytest.raises(NonFiniteLoss, match="the loss diverged: 2e\\+04 nats per image, over 100x its first value"):
        diverged.check(epoch=1)


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


def test_a_diverging_loss_stops_the_run_like_a_nan(data_root, odd_data, tmp_path):
    """model=ae lr=1000 once ran to a loss of 2.4e30 and was accepted as done: now it stops within the step
    that crosses 100x the first loss, names it, and says what is kept (exit code 3 at the CLI)."""
    trainer = trainer_on(odd_data, compose_run(data_root, model="ae", lr=1000, epochs=3), tmp_path)
    with pytest.raises(NonFiniteLoss) as e:
        trainer.fit()
    msg = str(e.value)
    assert "diverged" in msg or "became" in msg, msg
    assert "no checkpoint was written yet" in msg and "lr=100" in msg and e.value.exit_code == 3


@pytest.mark.slow
def test_a_nan_with_the_gaussian_likelihood_is_one_line_and_exit_3(data_root, tmp_path):
    """`model=vae model.likelihood=gaussian lr=0.1` once ended in a 90-line traceback of NaN tensors."""
    proc = run_cli("train", *tiny_overrides(data_root, model="vae", lr=0.1, epochs=3,
                                            **{"model.likelihood": "gaussian"}), cwd=tmp_path)
    err = proc.stderr.strip()
    assert proc.returncode == 3 and "Traceback" not in proc.stdout + proc.stderr
    assert err.count("\n") == 0 and err.startswith("aecli: ") and "training stopped" in err, err


def test_collapse_symptoms_on_constructed_cases():
    from aecli.models.vae import VAE

    model = VAE(as_net({"name": "mlp", "hidden": [8], "activation": "relu"}), 2)
    assert collapse_symptoms(model, {"kl": 5.0}, 100.0, 200.0, 0.5, 10) == []
    names = [n for n, _ in collapse_symptoms(model, {"kl": 0.2}, 199.0, 200.0, 0.0, 10)]
    assert names == ["mean_image", "constant_code", "posterior_collapse"]
