"""Checkpoints (aecli/checkpoint.py): written atomically, read with weights_only only; a hostile, truncated or
foreign file is refused in one line naming it."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from aecli.checkpoint import load_checkpoint, save_atomic
from aecli.errors import AecliError

from conftest import cli_error


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


@pytest.mark.parametrize("content", [b"not a checkpoint\n", b"", b"PK\x03\x04" + b"\x00" * 40])
def test_a_file_that_is_no_checkpoint_is_named_in_one_line(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(AecliError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    assert "not a torch checkpoint" in message or "truncated or corrupt" in message
