"""aecli/commands.py: each command's parameters declared once; its help and its parsing come from the declaration."""

from __future__ import annotations

import inspect

import pytest
from hydra.utils import get_method

from aecli.commands import COMMANDS, overview
from aecli.errors import AecliError


@pytest.mark.parametrize("name", [n for n in COMMANDS if n != "train"])
def test_help_lists_every_declared_parameter_and_the_function_takes_them(name):
    command = COMMANDS[name]
    text = command.help()
    assert text.startswith(f"usage: aecli {name}") and all(f"{p.name}=" in text for p in command.params)
    taken = inspect.signature(get_method(command.run.replace(":", "."))).parameters
    assert {p.name for p in command.params} <= set(taken)
    for p in command.params:  # a declared default is the function's own (nothing written twice disagrees)
        if p.default is not None and taken[p.name].default is not inspect.Parameter.empty:
            assert taken[p.name].default == p.default, p.name


def test_overview_names_every_command():
    text = overview()
    assert all(f"  {name} " in text for name in COMMANDS) and "--version" in text


def test_parsing_types_defaults_and_one_line_errors():
    sample = COMMANDS["sample"]
    assert sample.parse(["run=r", "n=16"]) == ([], {"run": "r", "n": 16, "mode": "prior", "seed": 0,
                                                    "device": "auto"})
    assert COMMANDS["runs"].parse(["a", "b", "sort=-val_loss"]) == (["a", "b"], {"sort": "-val_loss"})
    for args, message in ((["n=4"], "sample: run=PATH is required"),
                          (["run=r", "n=many"], "sample: n='many' is not a valid int"),
                          (["run=r", "bogus=1"], "sample: unknown key 'bogus': allowed keys run, n, mode"),
                          (["run=r", "r2"], "sample: expected key=value, got 'r2'")):
        with pytest.raises(AecliError) as e:
            sample.parse(args)
        assert str(e.value).startswith(message) and "\n" not in str(e.value)
    with pytest.raises(AecliError, match="report: give one or more run or sweep folders"):
        COMMANDS["report"].parse(["out=x.html"])
