"""`aecli`: dispatches to the commands declared in aecli/commands.py. Only dispatch lives here.

    aecli train [overrides...]        Hydra: compose conf/, train one run (or a sweep with -m)
    aecli sample run=PATH [n= out= seed= label= mode=]
    aecli eval run=PATH
    aecli runs PATH... [sort=METRIC]
    aecli report PATH... [out=FILE.html]
    aecli --version

The checks of `train`'s line before Hydra runs are in aecli/preflight.py, Hydra's completion and errors in
aecli/hydra_glue.py.
"""

from __future__ import annotations

import os
import sys

from aecli.commands import COMMANDS, overview
from aecli.errors import AecliError
from aecli.errors import exit_with as fail
from aecli.paths import config_dir

SIGPIPE_EXIT = 141  # 128 + SIGPIPE: what a Unix tool whose reader went away exits with


def train_main(args: list[str]) -> None:
    from aecli.hydra_glue import run_hydra
    from aecli.job import protect_run_folders, run_job
    from aecli.preflight import prepare
    from aecli.sweep import LAST_SWEEP  # also registers the resolver conf/hparams_search/optuna.yaml uses

    args = protect_run_folders(prepare(args, config_dir()))
    LAST_SWEEP.clear()  # this command's sweep only (several commands may run in one process: the API, the tests)
    run_hydra(args, run_job)
    if LAST_SWEEP.get("failed"):  # scripts and CI notice a sweep with failed jobs
        fail(f"{LAST_SWEEP['failed']} of {LAST_SWEEP['jobs']} jobs failed (their errors are in the table above and "
             f"in {LAST_SWEEP['summary']}); run the same command with "
             f"hydra.sweep.dir={LAST_SWEEP['dir']} to finish the sweep", 1)


def run_command(name: str, args: list[str]) -> None:
    """A declared command: its arguments parsed by its declaration, its function called, its result said."""
    from hydra.utils import get_method

    command = COMMANDS[name]
    paths, values = command.parse(args)
    result = get_method(command.run.replace(":", "."))(*([paths] if command.paths else []), **values)
    if command.said:
        print(command.said.format(result))


def version() -> str:
    """aecli's version, torch's and where it would compute (no torch import: the installed packages' metadata)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    def of(package: str) -> str:
        try:
            return installed(package)
        except PackageNotFoundError:
            return "not installed"

    return f"aecli {of('aecli')} (torch {of('torch')}, hydra-core {of('hydra-core')}, python {sys.version.split()[0]})"


def complete_or_train(args: list[str]) -> None:
    """`aecli -sc ...`: Hydra's completion script asks with the typed line in COMP_LINE; the commands and their keys
    are aecli's to answer, `train`'s overrides Hydra's."""
    from aecli.hydra_glue import complete

    if "COMP_LINE" in os.environ:
        line = os.environ["COMP_LINE"]
        answer = complete(line, int(os.environ.get("COMP_POINT", len(line))))
        if answer is not None:
            print(answer)
            return
    train_main(args)


def dispatch(argv: list[str]) -> None:
    if argv and argv[0] in ("-sc", "--shell-completion"):  # Hydra's completion script calls `aecli -sc ...`
        return complete_or_train(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        return print(overview())
    if argv[0] in ("--version", "-V"):
        return print(version())
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command {command!r}: allowed {', '.join(COMMANDS)} (aecli --help)")
    if command == "train":
        return train_main(rest)
    if any(a in ("-h", "--help") for a in rest):
        return print(COMMANDS[command].help())
    run_command(command, rest)


def main(argv: list[str] | None = None) -> None:
    try:
        try:
            dispatch(sys.argv[1:] if argv is None else argv)
        finally:
            sys.stdout.flush()  # a closed pipe shows here, not at exit where Python would print a traceback
    except BrokenPipeError:  # the reader went away (`aecli --help | head -1`): stop quietly, as Unix tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(SIGPIPE_EXIT) from None
    except AecliError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()
