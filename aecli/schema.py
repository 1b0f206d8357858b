"""Options of a component (a model, a net, a data set), declared once beside it: their defaults, allowed values and
ranges. Validation reads these declarations; nothing else lists a component's keys or its allowed values.

A component declares `Options`, a dataclass whose fields are built with the helpers below:

    @dataclass
    class Options(schema.Options):
        likelihood: str = schema.choice("bernoulli", "continuous_bernoulli", "gaussian")  # the first is the default
        kl_warmup_epochs: int = schema.integer(0, low=0)

Its yaml in conf/ holds the same keys with the same defaults, documented for users (tests/test_config.py checks
that they agree), and its constructor receives them as keyword arguments. `check(Options, values, prefix)`
raises one line naming the key, the value and what is allowed. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from aecli.errors import AecliError

MISSING = dataclasses.MISSING


class Options:
    """Base of every component's options dataclass."""


def _field(default: Any, check, allowed: str) -> Any:
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"check": check, "allowed": allowed})
    return dataclasses.field(default=default, metadata={"check": check, "allowed": allowed})


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def choice(*allowed: str, default: str | None = None) -> Any:
    """One of `allowed` (the first is the default unless `default` is given)."""
    return _field(allowed[0] if default is None else default, lambda v: v in allowed, "one of " + ", ".join(allowed))


def integer(default: int | None, low: int | None = None, high: int | None = None, optional: bool = False) -> Any:
    """An integer in [low, high] (either bound may be open); `optional` also allows null."""
    def ok(v):
        return (optional and v is None) or (is_int(v) and (low is None or v >= low) and (high is None or v <= high))
    return _field(default, ok, ("null or " if optional else "") + _range("an integer", low, high, "[", "]"))


def number(default: float, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False) -> Any:
    """A finite number in the interval from low to high (bounds closed unless `low_open`/`high_open`)."""
    def ok(v):
        return is_number(v) and (low is None or (v > low if low_open else v >= low)) and \
            (high is None or (v < high if high_open else v <= high))
    return _field(default, ok, _range("a number", low, high, "(" if low_open else "[", ")" if high_open else "]"))


def boolean(default: bool) -> Any:
    return _field(default, lambda v: isinstance(v, bool), "true or false")


def widths(default: list[int], min_len: int = 0, max_len: int | None = None, what: str = "widths") -> Any:
    """A list of integers >= 1 (layer widths, channel counts), of min_len..max_len entries."""
    def ok(v):
        return isinstance(v, (list, tuple)) and all(is_int(w) and w >= 1 for w in v) and len(v) >= min_len and \
            (max_len is None or len(v) <= max_len)
    count = f"{min_len}..{max_len} " if max_len is not None else (f"at least {min_len} " if min_len else "")
    return _field(default, ok, f"a list of {count}integer {what} >= 1, e.g. {list(default) or [64]}")


def text(default: str | None, optional: bool = False) -> Any:
    """A non-empty string (a path, a name); `optional` also allows null."""
    def ok(v):
        return (optional and v is None) or (isinstance(v, str) and v.strip() != "")
    return _field(default, ok, ("null or " if optional else "") + "a non-empty string")


def _range(what: str, low, high, left: str, right: str) -> str:
    if low is None and high is None:
        return what
    if high is None:
        return f"{what} {'>' if left == '(' else '>='} {low:g}"
    if low is None:
        return f"{what} {'<' if right == ')' else '<='} {high:g}"
    return f"{what} in {left}{low:g}, {high:g}{right}"


def fields(options: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(options)}


def defaults(options: type) -> dict[str, Any]:
    """The declared default of every option."""
    out = {}
    for name, f in fields(options).items():
        out[name] = f.default_factory() if f.default_factory is not MISSING else f.default
    return out


def check(options: type, values: dict[str, Any], prefix: str, allow: tuple[str, ...] = ("_target_",)) -> dict:
    """Check `values` against the declared options: an unknown key or a value outside its range raises one line
    (`model.likelihood='x' is not allowed: model.likelihood must be one of bernoulli, ...`). Returns the values
    without the keys in `allow`, completed by the declared defaults."""
    declared = fields(options)
    for key, value in values.items():
        if key in allow:
            continue
        if key not in declared:
            raise AecliError(f"{prefix}.{key} is not an option of this {prefix}: allowed "
                             f"{', '.join(declared) or 'none'}")
        meta = declared[key].metadata
        if "check" in meta and not meta["check"](value):
            raise AecliError(f"{prefix}.{key}={value!r} is not allowed: {prefix}.{key} must be {meta['allowed']}")
    return {**defaults(options), **{k: v for k, v in values.items() if k not in allow}}


def allowed(options: type, key: str) -> str:
    """What an option allows, in words (for messages elsewhere)."""
    return fields(options)[key].metadata.get("allowed", "")
