"""aecli/paths.py: the commands aecli prints work as the user started it."""

from __future__ import annotations


def test_printed_commands_work_as_the_user_started_aecli(monkeypatch):
    from aecli.paths import aecli_command

    monkeypatch.delenv("UV_RUN_RECURSION_DEPTH", raising=False)
    assert aecli_command() == "aecli"
    monkeypatch.setenv("UV_RUN_RECURSION_DEPTH", "1")  # set by `uv run`
    assert aecli_command() == "uv run aecli"
