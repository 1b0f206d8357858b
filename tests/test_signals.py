"""Stop signals (aecli/signals.py): during training a signal finishes the step and writes last.pt; work that can be
redone stops at once; the handlers in place before are restored."""

from __future__ import annotations

import os
import signal

import pytest

from aecli.checkpoint import load_checkpoint
from aecli.signals import Interrupted, StopSignals, interruptible
from aecli.loop import Trainer

from test_resume import compose_tiny, fast_data, shared_data  # noqa: F401  (fixtures)


def test_interruptible_raises_at_once_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as e:
        with interruptible("during the evaluation", stage="evaluation"):
            os.kill(os.getpid(), signal.SIGTERM)
    assert e.value.exit_code == 143 and e.value.stage == "evaluation"
    assert str(e.value) == "SIGTERM during the evaluation" and signal.getsignal(signal.SIGTERM) is before


def test_a_caught_signal_is_a_flag_a_second_one_stops_at_once_and_usr1_reaches_the_handler_it_replaced():
    requeued = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: requeued.append(signum))
    try:
        signals = StopSignals()
        with signals.caught():
            os.kill(os.getpid(), signal.SIGUSR1)
            assert signals.received == signal.SIGUSR1 and not requeued  # the loop finishes its step first
            with pytest.raises(KeyboardInterrupt):
                os.kill(os.getpid(), signal.SIGTERM)
            stop = signals.interrupted("after step 3")
        assert stop.exit_code == 138 and str(stop) == "SIGUSR1 after step 3" and requeued == [signal.SIGUSR1]
        assert StopSignals().interrupted("x").exit_code == 143  # no signal (stop_at_step): as if SIGTERM
    finally:
        signal.signal(signal.SIGUSR1, previous)


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
