"""aecli's commands and their parameters, each declared once: its name, type, default and help. The help texts
(`aecli --help`, `aecli COMMAND --help`), the parsing of `key=value` arguments and shell completion all come from
these declarations (aecli/cli.py dispatches). `train` takes Hydra overrides: its keys are conf/'s (aecli/settings.py
and each component's Options). This module imports no torch and nothing of Hydra."""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

from aecli.errors import AecliError
from aecli.rundir import EVAL, SUMMARY

WIDTH = 118


@dataclass(frozen=True)
class Param:
    """A `name=value` argument: `default` None means the command decides (the run's own value, or none);
    `shown` is what the usage line shows in place of the value."""

    name: str
    type: type
    default: object
    help: str
    shown: str = ""
    required: bool = False

    def usage(self) -> str:
        text = f"{self.name}={self.shown or self.default}"
        return text if self.required else f"[{text}]"

    def column(self) -> str:
        return f"{self.name}={self.default if self.default is not None else self.shown}"


@dataclass(frozen=True)
class Command:
    """A command: `run` (module:function) is called with the parsed values (`paths` first when it takes folders)."""

    name: str
    run: str
    summary: str
    description: str
    params: tuple[Param, ...] = ()
    paths: str = ""  # the positional folders it takes, in words ("" for none)
    example: str = ""
    said: str = ""  # what is printed of its result ("wrote {}"), "" for nothing

    def help(self) -> str:
        usage = " ".join(["usage: aecli", self.name, *(["PATH..."] if self.paths else []),
                          *(p.usage() for p in self.params)])
        lines = [usage, "", *textwrap.wrap(self.description, WIDTH)]
        width = max((len(p.column()) for p in self.params), default=0) + 2
        for p in self.params:
            lines += textwrap.wrap(p.help, WIDTH, initial_indent=f"  {p.column():<{width}} ",
                                   subsequent_indent=" " * (width + 3))
        return "\n".join(lines)

    def parse(self, args: list[str]) -> tuple[list[str], dict]:
        """(the folders, {name: value}) of `args`; a missing, unknown or mistyped argument is one line."""
        params = {p.name: p for p in self.params}
        paths = [a for a in args if "=" not in a] if self.paths else []
        values: dict = {p.name: p.default for p in self.params if p.default is not None}
        for arg in args:
            if arg in paths:
                continue
            if "=" not in arg:
                raise AecliError(f"{self.name}: expected key=value, got {arg!r}: allowed keys {', '.join(params)}")
            key, value = arg.split("=", 1)
            if key not in params:
                raise AecliError(f"{self.name}: unknown key {key!r}: allowed keys {', '.join(params)}")
            try:
                values[key] = params[key].type(value)
            except ValueError:
                raise AecliError(f"{self.name}: {key}={value!r} is not a valid {params[key].type.__name__}") from None
        for p in self.params:
            if p.required and p.name not in values:
                raise AecliError(f"{self.name}: {p.name}={p.shown} is required ({p.help.split(';')[0]})")
        if self.paths and not paths:
            raise AecliError(f"{self.name}: give one or more {self.paths}, e.g. {self.example}")
        return paths, values


RUN = Param("run", str, None, "a run folder (outputs/DATE/TIME) or a checkpoint file", "PATH", required=True)
DEVICE = Param("device", str, "auto", "auto, cpu or cuda")

COMMANDS = {c.name: c for c in (
    Command("train", "", "train a model: aecli train model=cae lambda=100 data=fashion_mnist (Hydra overrides; `aecli "
            "train --help` lists the config groups, `--cfg job` prints the config, `-m` runs a sweep: aecli train -m "
            "model=cae,dae lambda=1,10,100)", ""),
    Command("sample", "aecli.sampling:sample_command",
            "draw from a finished run: aecli sample run=outputs/DATE/TIME n=64 [out=FILE seed=0 label=3 "
            "mode=prior|interpolate|traverse]",
            "Draw a grid of images from a finished run's best checkpoint (or a checkpoint file given as run=).", (
                RUN,
                Param("n", int, 64, "images in the grid, 1 to 1024"),
                Param("mode", str, "prior", "prior: samples from the model's prior (one row per class for a cvae); "
                      "interpolate: rows between the codes of two test images; traverse: each row moves one code "
                      "dimension across its range", "prior|interpolate|traverse"),
                Param("label", int, None, "only class K (a cvae's samples; the test images of class K for "
                      "interpolate and traverse)", "K"),
                Param("seed", int, 0, "the samples and the pairs chosen"),
                Param("out", str, None, "the image to write (.png, .jpg, ...); default: the run's images/ folder, "
                      "under a name no file has yet", "FILE"),
                DEVICE), said="wrote {}"),
    Command("eval", "aecli.evaluate:eval_command",
            "evaluate a finished run on the test set: aecli eval run=outputs/DATE/TIME",
            f"Score a finished run's best checkpoint (or a checkpoint file given as run=) on the test set: {EVAL}, "
            f"the pictures and a table (docs/eval.md). With the run's own settings the numbers go to {EVAL}; "
            "another checkpoint, seed, iw_samples or finetune_epochs writes "
            "eval_<checkpoint>_seed<S>[_iw<N>][_ft<E>].json beside it.", (
                RUN,
                Param("iw_samples", int, None, "samples per image of the importance-weighted bound (vae, cvae)", "N"),
                Param("finetune_epochs", int, None, "fine-tune the encoder with a softmax layer on the labels for E "
                      "epochs: finetune_acc beside scratch_acc (docs/eval.md)", "E"),
                Param("protocol", str, None, "paper: the literature's protocol (docs/eval.md): IW bound k=5000 on "
                      "every test image, probes and floors on the whole training split, the cnn classifier, Parzen "
                      "window; fast: the sizes of conf/eval/default.yaml (default: the run's eval.protocol)",
                      "fast|paper"),
                Param("seed", int, None, "the seed of the sampled metrics (default: the run's)", "S"),
                DEVICE)),
    Command("runs", "aecli.sweep:runs_command",
            "compare runs or sweeps side by side: aecli runs outputs/multirun/DATE/TIME [sort=val_loss]",
            "Compare runs side by side: each PATH is a run folder or any folder above run folders (a sweep, "
            "outputs/).", (
                Param("sort", str, None, "any column; a leading - sorts descending (default: each run's "
                      "optimized_metric, best first)", "COLUMN"),
                Param("columns", str, None, "the columns to show (default: the run, what varies, status, the "
                      f"optimized metric and a few test numbers that fit the terminal); {SUMMARY} of a sweep has "
                      "them all", "a,b,..."),
            ), "run or sweep folders", "aecli runs outputs/multirun/DATE/TIME"),
    Command("report", "aecli.report:report_command",
            "one HTML page for runs or sweeps: aecli report outputs/multirun/DATE/TIME [out=FILE.html]",
            "One self-contained HTML page for runs or sweeps: the table, metric-against-setting plots, learning "
            "curves and each run's pictures (docs/report.md).", (
                Param("out", str, None, "where to write it (default: report.html in the paths' common folder)",
                      "FILE.html"),
            ), "run or sweep folders", "aecli report outputs/multirun/DATE/TIME", "report: {}"),
)}


def overview() -> str:
    """`aecli --help`: every command in one line (or a few), from the declarations."""
    lines = ["usage: aecli COMMAND [ARGS...]", "", "commands:"]
    for c in COMMANDS.values():
        lines += textwrap.wrap(c.summary, WIDTH, initial_indent=f"  {c.name:<8} ", subsequent_indent=" " * 11)
    lines += ["", "Run `aecli COMMAND --help` for a command's own help; `aecli --version` for the versions."]
    return "\n".join(lines)
