"""Hydra overrides (`key=value` on `aecli train`'s line) as aecli reads them: by Hydra's own grammar
(OverridesParser), never split by hand; a line that does not parse is said in one line with what to write instead.
This module imports no torch."""

from __future__ import annotations

from pathlib import Path

from aecli.errors import AecliError

FLAGS = ("-m", "--multirun")  # the flags that sit among the overrides; other `-` words are Hydra's own modes


def one_line(error: BaseException) -> str:
    """An exception's message as one line (Hydra's and OmegaConf's span several, with hints we drop)."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith(("full_key:", "object_type=", "reference_type=", "See https",
                                                               "Set the environment variable HYDRA_FULL_ERROR"))]
    return "; ".join(keep) or type(error).__name__


def typo_hint(arg: str, args: list[str]) -> str | None:
    """What to write instead of an override people often mistype, or None."""
    key, _, value = arg.partition("=")
    if value.endswith(",") and not value.startswith(("[", "{", "'", '"')):  # `model=vae, lambda=1`
        fixed = " ".join(a.removesuffix(",") for a in args if a not in FLAGS)
        return (f"{arg} ends in a comma: overrides are separated by spaces, not commas; write {fixed} (a comma "
                f"between values, key=a,b, is a sweep with -m)")
    if value.startswith("~"):  # `'data.path=~/x.npz'`: the shell did not expand ~, and Hydra does not either
        return (f"{arg}: ~ is not expanded inside an override; write {key}={Path(value).expanduser()} (or leave the "
                f"argument unquoted, {key}=$HOME{value[1:]}, for the shell to expand)")
    return None


def parse(args: list[str]) -> list:
    """The overrides among `args` (flags left out) as Hydra's Override objects; one line when one does not parse."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if a not in FLAGS]
    for arg in overrides:
        hint = typo_hint(arg, overrides)
        if hint:
            raise AecliError(hint)
    try:
        return OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - the grammar's error, in one line
        raise AecliError(f"cannot read the overrides: {one_line(e)} (the form is key=value, e.g. lambda=10)") from None


def value(args: list[str], key: str) -> str | None:
    """The value of the last override of `key` among `args`, as text ('null' for null; a sweep as written); None
    when not given. Words that are not overrides (flags, Hydra's modes) are passed over."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, found = OverridesParser.create(), None
    for arg in args:
        if arg.startswith("-") or "=" not in arg or not arg.lstrip("+~").startswith(key + "="):
            continue
        try:
            (override,) = parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - a malformed override is not this key's value (cli says why)
            continue
        if override.key_or_group != key:
            continue
        v = arg.partition("=")[2] if override.is_sweep_override() else override.value()
        found = "null" if v is None else str(v)
    return found


def values(override) -> list[str] | None:
    """The values of a sweep override as strings (model=cae,dae -> [cae, dae]); None when they cannot be listed
    (an Optuna interval, a glob)."""
    try:
        return [str(v) for v in override.sweep_string_iterator()]
    except Exception:  # noqa: BLE001 - Hydra raises different types for sweeps it cannot enumerate
        return None


def choices(override) -> list[str]:
    """The options a config-group override names: model=cae -> [cae], model=cae,dae -> [cae, dae],
    logger=[csv,mlflow] -> [csv, mlflow]; [] for a sweep aecli cannot list (glob, interval)."""
    if override.is_sweep_override():
        return values(override) or []
    v = override.value()
    if v is None:
        return []
    return [str(x) for x in v] if isinstance(v, list) else [str(v)]
