"""`aecli`: dispatches to the subcommands. Only argument handling lives here.

    aecli train [overrides...]        Hydra: compose conf/, train one run (or a sweep with -m)
    aecli sample run=PATH [n= out= seed= label= mode=]
    aecli eval run=PATH
    aecli runs PATH... [sort=METRIC]
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from aecli.errors import AecliError
from aecli.errors import exit_with as fail
from aecli.paths import config_dir

HELP = """usage: aecli COMMAND [ARGS...]

commands:
  train    train a model: aecli train model=cae lambda=100 data=fashion_mnist
           (Hydra overrides; `aecli train --help` lists the config groups, `--cfg job` prints the config,
           `-m` runs a sweep: aecli train -m model=cae,dae lambda=1,10,100)
  sample   draw from a finished run: aecli sample run=outputs/DATE/TIME n=64 [out=FILE seed=0 label=3
           mode=prior|interpolate|traverse]
  eval     evaluate a finished run on the test set: aecli eval run=outputs/DATE/TIME
  runs     compare runs or sweeps side by side: aecli runs outputs/multirun/DATE/TIME [sort=val_loss]
  report   one HTML page for runs or sweeps: aecli report outputs/multirun/DATE/TIME [out=FILE.html]

Run `aecli COMMAND --help` for a command's own help."""

COMMAND_HELP = {
    "sample": """usage: aecli sample run=PATH [n=64] [mode=prior|interpolate|traverse] [label=K] [seed=0] [out=FILE] [device=auto]

Draw a grid of images from a finished run's best checkpoint (or a checkpoint file given as run=).
  run=PATH     a run folder (outputs/DATE/TIME) or a checkpoint file
  n=64         images in the grid, 1 to 1024
  mode=prior   prior: samples from the model's prior (one row per class for a cvae); interpolate: rows between the
               codes of two test images; traverse: each row moves one code dimension across its range
  label=K      only class K (a cvae's samples; the test images of class K for interpolate and traverse)
  seed=0       the samples and the pairs chosen
  out=FILE     the image to write (.png, .jpg, ...); default: the run's images/ folder, under a name no file has yet
  device=auto  auto, cpu or cuda""",
    "eval": """usage: aecli eval run=PATH [iw_samples=N] [protocol=fast|paper] [seed=S] [device=auto]

Score a finished run's best checkpoint (or a checkpoint file given as run=) on the test set: eval.json, the
pictures and a table (docs/eval.md). With the run's own settings the numbers go to eval.json; another checkpoint,
seed or iw_samples writes eval_<checkpoint>_seed<S>[_iw<N>].json beside it.
  run=PATH       a run folder (outputs/DATE/TIME) or a checkpoint file
  iw_samples=N   samples per image of the importance-weighted bound (vae, cvae)
  protocol=paper the literature's protocol (docs/eval.md): IW bound k=5000 on every test image, probes and floors
                 on the whole training split, the cnn classifier, Parzen window (default: the run's eval.protocol)
  seed=S         the seed of the sampled metrics (default: the run's)
  device=auto    auto, cpu or cuda""",
    "runs": """usage: aecli runs PATH... [sort=COLUMN] [columns=a,b,...]

Compare runs side by side: each PATH is a run folder or any folder above run folders (a sweep, outputs/).
  sort=COLUMN      any column; a leading - sorts descending (default: each run's optimized_metric, best first)
  columns=a,b,...  the columns to show (default: the run, what varies, status, the optimized metric and a few
                   test numbers that fit the terminal); summary.csv of a sweep has them all""",
    "report": """usage: aecli report PATH... [out=FILE.html]

One self-contained HTML page for runs or sweeps: the table, metric-against-setting plots, learning curves and each
run's pictures (docs/report.md).
  out=FILE.html    where to write it (default: report.html in the paths' common folder)""",
}


# -- train -------------------------------------------------------------------------------------------
def check_group_choices(args: list[str], conf: Path) -> None:
    """Refuse an unknown option of a config group (model=foo) in one line, before Hydra composes."""
    for arg in args:
        if arg.startswith(("-", "+", "~", "hydra")) or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        group = conf / key
        if not group.is_dir() or "." in key:
            continue
        options = sorted(p.stem for p in group.glob("*.yaml"))
        if value.startswith("[") and value.endswith("]"):  # several options at once: logger=[csv,mlflow]
            values = [v for v in value[1:-1].split(",") if v.strip()]
        elif "," in value and not value.startswith("{"):  # a sweep over options: model=cae,dae
            values = value.split(",")
        else:
            values = [value]
        for v in values:
            v = v.strip()
            if v in ("null", "") and key in ("experiment", "hparams_search"):
                continue
            if v.startswith(("choice(", "range(", "glob(", "interval(", "tag(")):
                continue
            if v not in options:
                fail(f"{key}={v} is not a {key} aecli knows: allowed {', '.join(options)}")


def one_line(error: BaseException) -> str:
    """An exception's message as one line (Hydra's and OmegaConf's span several, with hints we drop)."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    keep = [ln for ln in lines if ln and not ln.startswith(("full_key:", "object_type=", "reference_type=", "See https",
                                                               "Set the environment variable HYDRA_FULL_ERROR"))]
    return "; ".join(keep) or type(error).__name__


def sweep_values(override) -> list[str] | None:
    """The values of a sweep override as strings (model=cae,dae -> [cae, dae]); None when they cannot be listed
    (an Optuna interval, a glob)."""
    try:
        return [str(v) for v in override.sweep_string_iterator()]
    except Exception:  # noqa: BLE001 - Hydra raises different types for sweeps it cannot enumerate
        return None


def check_overrides(args: list[str], conf: Path) -> None:
    """Compose the config once before Hydra runs, so a bad override (an unknown key, a typo in the grammar)
    ends in one line instead of Hydra's multi-line report. A sweep over config groups (model=cae,dae) is
    composed once per combination of its groups, so a model's own key (model.noise) is checked against each
    swept model; the swept values themselves are checked by each job. A swept key that a swept model ignores
    (lambda for the dae) is said once, before the jobs start."""
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in args):
        return  # --cfg, --help, -sc ...: Hydra's own modes
    import itertools

    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if a not in ("-m", "--multirun")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - the grammar's error, in one line
        fail(f"cannot read the overrides: {one_line(e)} (the form is key=value, e.g. lambda=10)")
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if sweeps and not ({"-m", "--multirun"} & set(args)) and not any(a.startswith("hparams_search=") for a in args):
        fail(f"{sweeps[0].input_line} is a sweep: add -m to run one job per value, or write a list as key=[a,b]")
    simple = [o.input_line for o in parsed if not o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    groups = {o.key_or_group: sweep_values(o) for o in sweeps if (conf / o.key_or_group).is_dir()}
    combos = [list(c) for c in itertools.product(*[[f"{g}={v}" for v in values] for g, values in groups.items()
                                                    if values])]
    composed = []
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for combo in combos:
            try:
                composed.append(compose(config_name="config", overrides=simple + combo))
            except Exception as e:  # noqa: BLE001
                where = f" (with {' '.join(combo)})" if combo else ""
                unknown = re.match(r"Could not override '([^']+)'", str(e))
                if unknown:
                    fail(f"{unknown.group(1)} is not a key of this config{where} (`aecli train --cfg job` prints "
                         f"every key; a model's keys come with its model=, e.g. model=dae for model.noise)")
                fail(f"{one_line(e)}{where} (`aecli train --help` lists the groups and keys)")
    swept = {o.key_or_group: sweep_values(o) for o in sweeps if o.key_or_group not in groups or o.key_or_group == "net"}
    if swept:
        warn_ignored_sweeps(composed, swept)


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


HYDRA_HINTS = {  # what to do about the errors of Hydra's plugins a user meets
    '"srun"': " (hydra/launcher=submitit_slurm submits to a SLURM cluster: run it on the cluster; "
              "hydra/launcher=submitit_local runs the same jobs here)",
    "No trials are completed yet": " (every trial failed: each job's train.log and the table above say why)",
}
QUIET_LOGGERS = ("optuna", "alembic", "alembic.runtime.migration")  # libraries' chatter a user cannot act on


def from_aecli(error: BaseException) -> bool:
    """Whether an exception was raised in aecli's own code (a bug), not in Hydra or a plugin."""
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    package = str(Path(__file__).resolve().parent)
    return bool(frames) and frames[-1].filename.startswith(package)


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


def completion_through_uv(script: str) -> str:
    """Hydra's bash completion script, made to answer for `uv run aecli ...` too: the function asks `uv run aecli`
    when the line starts with `uv run`, and a completion registered for `uv` hands every other uv command to the
    completion uv had before (if any)."""
    old = '    else\n        helper="${words[0]}"'
    new = ('    elif [ "${words[0]}" == "uv" ] && [ "${words[1]}" == "run" ]; then\n        helper="uv run ${words[2]}"\n'
           + old)
    return script.replace(old, new) + UV_COMPLETION


def train_main(args: list[str]) -> None:
    import hydra
    from omegaconf import DictConfig

    import aecli.sweep  # noqa: F401  (registers the resolver conf/hparams_search/optuna.yaml uses)
    from aecli.job import protect_run_folders, run_job

    conf = config_dir()
    flags = [a for a in args if a in ("-m", "--multirun")]
    args = flags[:1] + [a for a in args if a not in flags]  # -m anywhere on the line, as users write it
    if any(a.startswith("hparams_search=") for a in args):  # Optuna's space: hydra.sweeper.params.lambda=... is lambda=...
        args = [a.removeprefix("hydra.sweeper.params.") for a in args]
    modes = [a for a in args if a in ("--cfg", "-c", "--info", "-i", "--shell-completion", "-sc", "--run", "-r")]
    if modes and {"-m", "--multirun"} & set(args):
        fail(f"{modes[0]} and -m cannot be combined: {modes[0]} works on one composed config, drop -m")
    check_group_choices(args, conf)
    check_overrides(args, conf)
    args = protect_run_folders(args)

    @hydra.main(version_base="1.3", config_path=str(conf), config_name="config")
    def run(cfg: DictConfig) -> float | None:
        return run_job(cfg)

    # Hydra's shell completion: the script it installs calls `aecli -sc query=bash` with COMP_LINE set to the line
    # typed, "aecli train ..." or "uv run aecli train ..."; Hydra must see only the program and the overrides.
    if "COMP_LINE" in os.environ:
        line = os.environ["COMP_LINE"]
        short = re.sub(r"^(?:uv\s+run\s+)?(\S+)\s+train(\s|$)", r"\1\2", line)
        os.environ["COMP_LINE"] = short
        point = int(os.environ.get("COMP_POINT", len(line)))
        os.environ["COMP_POINT"] = str(max(0, point - (len(line) - len(short))))
    sys.argv = ["aecli", *args]
    if "-sc" in args and "install=bash" in args:
        import contextlib
        import io

        script = io.StringIO()
        with contextlib.redirect_stdout(script):
            run()
        print(completion_through_uv(script.getvalue()))
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra's and its plugins' errors reach us, to be said in one line
    os.environ.setdefault("SQLALCHEMY_SILENCE_UBER_WARNING", "1")  # optuna 2.10's storage on SQLAlchemy 1.4
    import logging

    for name in QUIET_LOGGERS:  # their warnings still come through
        logging.getLogger(name).setLevel(logging.WARNING)
    if any(a.startswith("hparams_search=") for a in args):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # optuna's own handler writes colour codes to pipes
    from aecli.sweep import LAST_SWEEP

    LAST_SWEEP.clear()  # this command's sweep only (several commands may run in one process: the API, the tests)
    try:
        run()
    except Exception as e:  # noqa: BLE001
        if from_aecli(e):  # a bug of ours: its traceback is what a report needs
            raise
        hint = next((h for key, h in HYDRA_HINTS.items() if key in str(e)), "")
        fail(f"the run could not start: {one_line(e)}{hint}")
    if LAST_SWEEP.get("failed"):  # scripts and CI notice a sweep with failed jobs
        fail(f"{LAST_SWEEP['failed']} of {LAST_SWEEP['jobs']} jobs failed (their errors are in the table above and "
             f"in {LAST_SWEEP['summary']}); run the same command with "
             f"hydra.sweep.dir={LAST_SWEEP['dir']} to finish the sweep", 1)


# -- sample / eval / runs ----------------------------------------------------------------------------
def parse_kv(args: list[str], allowed: dict[str, type], command: str) -> dict:
    """key=value arguments with types; an unknown key or a bad value is a one-line error."""
    out: dict = {}
    for arg in args:
        if "=" not in arg:
            fail(f"{command}: expected key=value, got {arg!r}: allowed keys {', '.join(allowed)}")
        key, value = arg.split("=", 1)
        if key not in allowed:
            fail(f"{command}: unknown key {key!r}: allowed keys {', '.join(allowed)}")
        try:
            out[key] = allowed[key](value)
        except ValueError:
            fail(f"{command}: {key}={value!r} is not a valid {allowed[key].__name__}")
    return out


def sample_main(args: list[str]) -> None:
    from aecli.sampling import sample_command

    kv = parse_kv(args, {"run": str, "n": int, "out": str, "seed": int, "label": int, "mode": str, "device": str},
                  "sample")
    if "run" not in kv:
        fail("sample: run=PATH is required (a run folder under outputs/, or a checkpoint file)")
    path = sample_command(**kv)
    print(f"wrote {path}")


def eval_main(args: list[str]) -> None:
    from aecli.evaluate import eval_command

    kv = parse_kv(args, {"run": str, "iw_samples": int, "device": str, "seed": int, "protocol": str}, "eval")
    if "run" not in kv:
        fail("eval: run=PATH is required (a run folder under outputs/, or a checkpoint file)")
    eval_command(**kv)


def runs_main(args: list[str]) -> None:
    from aecli.sweep import runs_command

    paths = [a for a in args if "=" not in a]
    kv = parse_kv([a for a in args if "=" in a], {"sort": str, "columns": str}, "runs")
    if not paths:
        fail("runs: give one or more run or sweep folders, e.g. aecli runs outputs/multirun/DATE/TIME")
    runs_command(paths, **kv)


def report_main(args: list[str]) -> None:
    from aecli.report import report_command

    paths = [a for a in args if "=" not in a]
    kv = parse_kv([a for a in args if "=" in a], {"out": str}, "report")
    if not paths:
        fail("report: give one or more run or sweep folders, e.g. aecli report outputs/multirun/DATE/TIME")
    print(f"report: {report_command(paths, **kv)}")


COMMANDS = {"train": train_main, "sample": sample_main, "eval": eval_main, "runs": runs_main, "report": report_main}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-sc", "--shell-completion"):  # Hydra's completion script calls `aecli -sc ...`
        argv = ["train", *argv]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(HELP)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command {command!r}: allowed {', '.join(COMMANDS)} (aecli --help)")
    if command != "train" and any(a in ("-h", "--help") for a in rest):
        print(COMMAND_HELP[command])
        return
    try:
        COMMANDS[command](rest)
    except AecliError as e:
        fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)


if __name__ == "__main__":
    main()
