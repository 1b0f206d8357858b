"""aecli/hydra_glue.py: completion of aecli's commands, Hydra's script made to work through `uv run`."""

from __future__ import annotations

import os

from aecli.hydra_glue import complete, completion_through_uv


def test_completion_answers_commands_and_keys_and_hands_train_to_hydra(monkeypatch):
    """`uv run aecli tr<TAB>` printed "the run could not start: Error parsing override 'run'" into the prompt."""
    assert complete("uv run aecli tr", 15).split() == ["train", "sample", "eval", "runs", "report"]
    assert complete("aecli ", 6).split()[0] == "train"
    assert complete("aecli sample n=4 r", 18).split()[:2] == ["run=", "n="]
    assert complete("aecli nope x", 12) == ""
    monkeypatch.setenv("COMP_LINE", "")
    line = "uv run aecli train model=c"
    assert complete(line, len(line)) is None
    assert os.environ["COMP_LINE"] == "aecli model=c" and os.environ["COMP_POINT"] == str(len("aecli model=c"))


def test_the_installed_script_asks_uv_run_aecli_under_uv():
    script = completion_through_uv('    else\n        helper="${words[0]}"\n')
    assert 'helper="uv run ${words[2]}"' in script and "complete -o nospace -o default -F _aecli_uv_completion uv" in script
