"""What `aecli train` adds around Hydra: the run itself (`run_hydra`), its shell completion made to answer for
aecli's commands and for `uv run aecli ...`, and Hydra's and its plugins' errors said in one line."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import sys
import traceback
from pathlib import Path

from aecli.commands import COMMANDS
from aecli.errors import exit_with as fail
from aecli.overrides import one_line
from aecli.paths import config_dir

HYDRA_HINTS = {  # what to do about the errors of Hydra's plugins a user meets
    '"srun"': " (hydra/launcher=submitit_slurm submits to a SLURM cluster: run it on the cluster; "
              "hydra/launcher=submitit_local runs the same jobs here)",
    "No trials are completed yet": " (every trial failed: each job's train.log and the table above say why)",
}
QUIET_LIBRARIES = ("optuna", "alembic", "alembic.runtime.migration")  # their chatter a user cannot act on

UV_COMPLETION = r"""
_aecli_uv_old=$(complete -p uv 2> /dev/null | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
_aecli_uv_completion()
{
    if [ "${COMP_WORDS[1]}" == "run" ] && [ "${COMP_WORDS[2]}" == "aecli" ] && (( COMP_CWORD > 2 )); then
        hydra_bash_completion
    elif [ -n "$_aecli_uv_old" ]; then
        "$_aecli_uv_old" "$@"
    fi
}
COMP_WORDBREAKS=$COMP_WORDBREAKS complete -o nospace -o default -F _aecli_uv_completion uv
"""


def from_aecli(error: BaseException) -> bool:
    """Whether an exception was raised in aecli's own code (a bug), not in Hydra or a plugin."""
    frames = traceback.extract_tb(error.__traceback__)
    package = str(Path(__file__).resolve().parent)
    return bool(frames) and frames[-1].filename.startswith(package)


def completion_through_uv(script: str) -> str:
    """Hydra's bash completion script, made to answer for `uv run aecli ...` too: the function asks `uv run aecli`
    when the line starts with `uv run`, and a completion registered for `uv` hands every other uv command to the
    completion uv had before (if any)."""
    old = '    else\n        helper="${words[0]}"'
    new = ('    elif [ "${words[0]}" == "uv" ] && [ "${words[1]}" == "run" ]; then\n        helper="uv run ${words[2]}"\n'
           + old)
    return script.replace(old, new) + UV_COMPLETION


def complete(line: str, point: int) -> str | None:
    """The completion query of the line typed (COMP_LINE, up to COMP_POINT), "aecli ..." or "uv run aecli ...": the
    commands while the command is typed, a command's `key=` names after it; None for `train`, whose overrides
    Hydra completes (COMP_LINE is then cut to "aecli <overrides>", as Hydra reads it)."""
    typed = line[:point]
    words = re.sub(r"^uv\s+run\s+", "", typed).split()[1:]  # after the program
    if not words or (len(words) == 1 and not typed.endswith(" ")):
        return " ".join(COMMANDS)
    if words[0] != "train":
        command = COMMANDS.get(words[0])
        return " ".join(f"{p.name}=" for p in command.params) if command else ""
    short = re.sub(r"^(?:uv\s+run\s+)?(\S+)\s+train(\s|$)", r"\1\2", line)
    os.environ["COMP_LINE"] = short
    os.environ["COMP_POINT"] = str(max(0, point - (len(line) - len(short))))
    return None


def run_hydra(args: list[str], job) -> None:
    """Run `job(cfg)` under Hydra with `args` (its overrides and modes) as `aecli train` does; Hydra's and its
    plugins' errors in one line, aecli's own with their traceback (a bug)."""
    import hydra

    @hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
    def run(cfg) -> float | None:
        return job(cfg)

    sys.argv = ["aecli", *args]
    if "-sc" in args and "install=bash" in args:
        script = io.StringIO()
        with contextlib.redirect_stdout(script):
            run()
        print(completion_through_uv(script.getvalue()))
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's and its plugins' errors reach us, to be said in one line
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")  # optuna 2.10's storage on SQLAlchemy 1.4
    for name in QUIET_LIBRARIES:  # their warnings still come through
        logging.getLogger(name).setLevel(logging.WARNING)
    if any(a.startswith("hparams_search=") for a in args):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # optuna's own handler writes colour codes to pipes
    try:
        run()
    except BrokenPipeError:  # the reader went away (`aecli train --help | head -1`): cli.main ends quietly
        raise
    except Exception as e:  # noqa: BLE001
        if from_aecli(e):  # a bug of ours: its traceback is what a report needs
            raise
        hint = next((h for key, h in HYDRA_HINTS.items() if key in str(e)), "")
        fail(f"the run could not start: {one_line(e)}{hint}")
