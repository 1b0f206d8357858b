"""Options of a component (a model, a net, a data set, a logger) and of the run's settings (aecli/settings.py),
declared once: their defaults, allowed values and ranges. Validation reads these declarations; nothing else lists
a component's keys or its allowed values.

A component declares `Options`, a dataclass whose fields are built with the helpers below:

    @dataclass
    class Options(schema.Options):
        likelihood: str = schema.choice("bernoulli", "continuous_bernoulli", "gaussian")  # the first is the default
        kl_warmup_epochs: int = schema.integer(0, low=0)

Its yaml in conf/ holds the same keys with the same defaults, documented for users (tests/test_config.py checks
that they agree), and its constructor receives them as keyword arguments. `check(Options, values, prefix)`
raises one line naming the key, the value and what is allowed. A key that is a Python keyword (`lambda`) is
declared with a trailing underscore (`lambda_`); a nested block of keys (trainer.early_stopping) is a
`section(OtherOptions)`. This module imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from aecli.errors import AecliError

MISSING = dataclasses.MISSING


class Options:
    """Base of every options dataclass. `unknown` and `bad` word the two errors of `check` ({name}: the dotted key,
    {group}: the prefix, {allowed}: the keys, {value}, {rule}: what the key allows)."""

    unknown = "{name} is not an option of this {group}: allowed {allowed}"
    bad = "{name}={value!r} is not allowed: {name} must be {rule}"


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


def number(default: float | None, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, optional: bool = False, what: str = "a number") -> Any:
    """A finite number in the interval from low to high (bounds closed unless `low_open`/`high_open`); `optional`
    also allows null."""
    def ok(v):
        return (optional and v is None) or (is_number(v) and (low is None or (v > low if low_open else v >= low)) and
                                            (high is None or (v < high if high_open else v <= high)))
    rule = _range(what, low, high, "(" if low_open else "[", ")" if high_open else "]")
    return _field(default, ok, ("null or " if optional else "") + rule)


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


def custom(default: Any, check, allowed: str) -> Any:
    """Any rule: `check(value)` says whether a value is allowed, `allowed` says what is, in words."""
    return _field(default, check, allowed)


def section(options: type) -> Any:
    """A block of keys declared by another Options class (trainer.early_stopping), checked key by key."""
    return dataclasses.field(default_factory=lambda: defaults(options), metadata={"options": options})


def component(what: str) -> Any:
    """A config group built from its `_target_` (model, net, data, logger): its keys are checked by the Options of
    the class it names, not here."""
    return dataclasses.field(default=None, metadata={"component": what})


def _range(what: str, low, high, left: str, right: str) -> str:
    if low is None and high is None:
        return what
    if high is None:
        return f"{what} {'>' if left == '(' else '>='} {low:g}"
    if low is None:
        return f"{what} {'<' if right == ')' else '<='} {high:g}"
    return f"{what} in {left}{low:g}, {high:g}{right}"


def fields(options: type) -> dict[str, dataclasses.Field]:
    """The declared options by their key in the config (`lambda_` is the key `lambda`)."""
    return {key(f.name): f for f in dataclasses.fields(options)}


def key(name: str) -> str:
    """A field's key in the config: a trailing underscore, which lets a field be named after a Python keyword, dropped."""
    return name.removesuffix("_")


def defaults(options: type) -> dict[str, Any]:
    """The declared default of every option."""
    out = {}
    for name, f in fields(options).items():
        out[name] = f.default_factory() if f.default_factory is not MISSING else f.default
    return out


def instance(options: type, values: dict[str, Any]):
    """The Options dataclass holding `values` (checked values from `check`; keys as in the config)."""
    names = {key(f.name): f.name for f in dataclasses.fields(options)}
    return options(**{names[k]: v for k, v in values.items()})


def check(options: type, values: dict[str, Any], prefix: str, allow: tuple[str, ...] = ("_target_",)) -> dict:
    """Check `values` against the declared options: an unknown key or a value outside its range raises one line
    (`model.likelihood='x' is not allowed: model.likelihood must be one of bernoulli, ...`), a section's keys are
    checked by its own Options. Returns the values without the keys in `allow`, completed by the declared defaults
    (a section's too). `prefix` is the dotted path of the values ("" for the config's top level)."""
    declared = fields(options)
    out = defaults(options)
    for name, value in values.items():
        if name in allow:
            continue
        dotted = f"{prefix}.{name}" if prefix else name
        if name not in declared:
            raise AecliError(options.unknown.format(name=dotted, group=prefix or "config",
                                                    allowed=", ".join(declared) or "none"))
        meta = declared[name].metadata
        if "options" in meta:
            if not isinstance(value, dict):
                raise AecliError(f"{dotted}={value!r} is not allowed: {dotted} is a block of keys "
                                 f"({', '.join(fields(meta['options']))})")
            value = check(meta["options"], value, dotted, allow)
        elif "check" in meta and not meta["check"](value):
            raise AecliError(options.bad.format(name=dotted, value=value, rule=meta["allowed"]))
        out[name] = value
    return out


def allowed(options: type, key: str) -> str:
    """What an option allows, in words (for messages elsewhere)."""
    return fields(options)[key].metadata.get("allowed", "")
