"""aecli/cores.py: trainer.num_threads=null|N|auto."""

from __future__ import annotations

from aecli import cores


def test_null_is_torchs_default_and_a_number_is_itself():
    assert cores.threads_for(None) is None
    assert cores.threads_for(3) == 3 and cores.threads_for("2") == 2


def test_auto_takes_the_free_cores_and_at_most_a_share(monkeypatch):
    monkeypatch.setattr(cores, "usable_cores", lambda: 8)
    monkeypatch.setattr(cores, "busy_cores", lambda: 3)
    assert cores.threads_for("auto") == 5
    assert cores.threads_for("auto", share=2) == 2  # a parallel launcher's share of the cores
    monkeypatch.setattr(cores, "busy_cores", lambda: 20)
    assert cores.threads_for("auto") == 1  # a loaded machine: at least one


def test_busy_cores_reads_the_machine():
    assert 0 <= cores.busy_cores() < 10_000 and cores.usable_cores() >= 1
