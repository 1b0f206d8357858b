"""aecli/schema.py: options declared once, checked in one line; sections and keyword keys."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from aecli import schema
from aecli.errors import AecliError


@dataclass(kw_only=True)
class Inner(schema.Options):
    patience: int | None = schema.integer(None, low=1, optional=True)


@dataclass(kw_only=True)
class Outer(schema.Options):
    unknown = "{name} is not a setting: allowed {allowed}"

    lambda_: float = schema.number(1.0, low=0)
    wait: float | None = schema.number(None, low=0, low_open=True, optional=True, what="a number of seconds")
    stop: dict = schema.section(Inner)


def test_defaults_sections_and_keyword_keys():
    assert schema.defaults(Outer) == {"lambda": 1.0, "wait": None, "stop": {"patience": None}}
    checked = schema.check(Outer, {"lambda": 2, "stop": {"patience": 3}}, "x")
    assert checked == {"lambda": 2, "wait": None, "stop": {"patience": 3}}
    assert schema.instance(Outer, checked).lambda_ == 2


@pytest.mark.parametrize("values,message", [
    ({"lambda": -1}, "x.lambda=-1 is not allowed: x.lambda must be a number >= 0"),
    ({"wait": 0}, "x.wait=0 is not allowed: x.wait must be null or a number of seconds > 0"),
    ({"stop": {"patience": 0}}, "x.stop.patience=0 is not allowed: x.stop.patience must be null or an integer >= 1"),
    ({"stop": {"bogus": 1}}, "x.stop.bogus is not an option of this x.stop: allowed patience"),
    ({"stop": 3}, "x.stop=3 is not allowed: x.stop is a block of keys (patience)"),
    ({"bogus": 1}, "x.bogus is not a setting: allowed lambda, wait, stop"),
])
def test_each_mistake_is_one_line(values, message):
    with pytest.raises(AecliError) as e:
        schema.check(Outer, values, "x")
    assert str(e.value) == message
