"""`aecli train`'s line checked before Hydra runs (and before it creates a run folder): the config groups' options,
the overrides' grammar, and the composed config of every swept combination of groups against the declarations
(aecli.config.validate). A mistake ends in one line naming what was typed and what to write instead."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

from aecli import overrides as parsing
from aecli.errors import AecliError
from aecli.errors import exit_with as fail

SWEEP_FLAGS = parsing.FLAGS
WITH_ARGUMENT = ("--cfg", "-c", "--package", "-p", "--shell-completion", "-sc", "--info", "-i", "--config-path", "-cp",
                 "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun")  # Hydra's, and their words
MODES = ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--run", "-r", "--help", "-h", "--hydra-help")


def prepare(args: list[str], conf: Path) -> list[str]:
    """`aecli train`'s line as Hydra takes it, checked: -m first wherever it was typed, an Optuna search's
    `hydra.sweeper.params.KEY=` written as `KEY=`, then the groups' options and the composed config."""
    flags = [a for a in args if a in SWEEP_FLAGS]
    args = flags[:1] + [a for a in args if a not in flags]
    if any(a.startswith("hparams_search=") for a in args):
        args = [a.removeprefix("hydra.sweeper.params.") for a in args]
    modes = [a for a in args if a in MODES and a not in ("--help", "-h", "--hydra-help")]
    if modes and flags:
        fail(f"{modes[0]} and -m cannot be combined: {modes[0]} works on one composed config, drop -m")
    check_group_choices(args, conf)
    check_overrides(args, conf)
    return args


def overrides_of(args: list[str]) -> list[str]:
    """The overrides on the line: Hydra's flags and their arguments (`--cfg job`, `-sc install=bash`) left out."""
    out, skip = [], False
    for i, arg in enumerate(args):
        if skip:
            skip = False
        elif arg.startswith("-"):
            following = args[i + 1] if i + 1 < len(args) else ""
            skip = arg in WITH_ARGUMENT and bool(following) and (arg in ("-sc", "--shell-completion")
                                                                  or "=" not in following)
        else:
            out.append(arg)
    return out


def check_group_choices(args: list[str], conf: Path) -> None:
    """Refuse an unknown option of a config group (model=foo) in one line, before Hydra composes."""
    try:
        parsed = parsing.parse(overrides_of(args))
    except AecliError as e:
        fail(str(e))
    for o in parsed:
        group = conf / o.key_or_group
        if o.is_add() or o.is_delete() or o.key_or_group.startswith("hydra") or "." in o.key_or_group \
                or not group.is_dir():
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        for v in parsing.choices(o):
            if v not in options:
                fail(f"{o.key_or_group}={v} is not a {o.key_or_group} aecli knows: allowed {', '.join(options)}")


def check_overrides(args: list[str], conf: Path) -> None:
    """Compose the config once before Hydra runs and validate it (aecli.config.validate), so a bad override (an
    unknown key, a value out of range, a typo in the grammar) ends in one line instead of Hydra's multi-line report
    or a traceback after the run folder exists. A sweep over config groups (model=cae,dae) is composed once per
    combination of its groups, so a model's own key (model.noise) is checked against each swept model; the swept
    values themselves are checked by each job. A swept key that a swept model ignores (lambda for the dae) is said
    once, before the jobs start."""
    if any(a.startswith("-") and a not in SWEEP_FLAGS for a in args):
        return  # --cfg, --help, -sc ...: Hydra's own modes
    from hydra import compose, initialize_config_dir

    from aecli.config import validate

    try:
        parsed = parsing.parse(args)
    except AecliError as e:
        fail(str(e))
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not (set(SWEEP_FLAGS) & set(args)) and not any(a.startswith("hparams_search=") for a in args):
        fail(f"{sweeps[0].input_line} is a sweep: add -m to run one job per value, or write a list as key=[a,b]")
    simple = [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    groups = {o.key_or_group: parsing.values(o) for o in sweeps if (conf / o.key_or_group).is_dir()}
    combos = [list(c) for c in itertools.product(*[[f"{g}={v}" for v in values] for g, values in groups.items()
                                                    if values])]
    composed = []
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for combo in combos:
            where = f" (with {' '.join(combo)})" if combo else ""
            try:
                cfg = compose(config_name="config", overrides=simple + combo)
            except Exception as e:  # noqa: BLE001
                unknown = re.match(r"Could not override '([^']+)'", str(e))
                if unknown:
                    fail(f"{unknown.group(1)} is not a key of this config{where}"
                         f"{unknown_key_hint(unknown.group(1), simple + combo, compose, conf)}")
                fail(f"{parsing.one_line(e)}{where} (`aecli train --help` lists the groups and keys)")
            try:  # the swept values themselves are checked by each job
                validate(cfg)
            except AecliError as e:
                fail(f"{e}{where}")
            composed.append(cfg)
    swept = {o.key_or_group: parsing.values(o) for o in sweeps
             if o.key_or_group not in groups or o.key_or_group == "net"}
    if swept:
        warn_ignored_sweeps(composed, swept)


def unknown_key_hint(key: str, overrides: list[str], compose, conf: Path) -> str:
    """What to write instead of a key the chosen component lacks: its own keys, and the options that have this key
    (net=conv net.hidden=[64]: the conv net's keys are channels, ...; net.hidden is a key of net=mlp)."""
    group, _, name = key.partition(".")
    generic = (" (`aecli train --cfg job` prints every key; a model's keys come with its model=, e.g. model=dae for "
               "model.noise)")
    if not (conf / group).is_dir() or not name:
        return generic
    others = [o for o in overrides if not o.lstrip("+").startswith(key + "=") and not o.startswith(key + ".")]
    try:
        from aecli.config import component_class

        chosen = compose(config_name="config", overrides=others)[group]
        option = component_class({group: chosen}, group).name
    except Exception:  # noqa: BLE001 - another mistake on the line, or a group without a class: the generic advice
        return generic
    having = [p.stem for p in sorted((conf / group).glob("*.yaml"))
              if name.split(".")[0] in compose(config_name="config", overrides=[f"{group}={p.stem}"])[group]]
    own = ", ".join(f"{group}.{k}" for k in chosen if k != "_target_") or "none"
    where = f"; {key} is a key of {' and '.join(f'{group}={h}' for h in having)}" if having else ""
    return f": the {option} {group}'s keys are {own}{where}"


def warn_ignored_sweeps(composed: list, swept: dict[str, list[str] | None]) -> None:
    """Say once, before the jobs start, which swept keys a swept model ignores (its jobs repeat one run)."""
    from hydra.utils import get_class

    said = set()
    for cfg in composed:
        model = get_class(cfg.model._target_)
        for key, values in swept.items():
            ignored = [i for i in model.ignores if key == i or key.startswith(i + ".")]
            if ignored and (model.name, key) not in said:
                said.add((model.name, key))
                shown = f"{key}={','.join(values)}" if values else key
                print(f"aecli: warning: model={model.name} ignores {ignored[0]}: its jobs over {shown} repeat the "
                      f"same run", file=sys.stderr)
