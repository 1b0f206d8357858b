"""Sweeps: the table that compares runs, written at the end of every multirun and printed by `aecli runs`.

Every run folder holds what the table needs, so runs made on different days compare side by side:

    .hydra/overrides.yaml   the command-line overrides of the run (the swept values of a sweep job)
    metrics.csv             one row per epoch (the trainer): best val_loss and its epoch's val_recon
    eval.json               the test metrics, when eval ran (`eval.at_end` or `aecli eval`)
    status.json             ok, failed or interrupted, the error, the seconds (job.py writes it when the run ends)

A sweep folder is a folder of run folders (`hydra.sweep.dir`/<job number>); `SweepSummary`, a Hydra callback
registered in conf/config.yaml, writes its `summary.csv` and prints the table when the sweep ends. Nothing here
imports torch: `aecli runs` answers at once.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from aecli.errors import AecliError
from aecli.metric_names import direction
from aecli.rundir import LOCK  # optuna-wiring
from aecli.search import lock_is_held, pareto_runs, study_seed  # optuna-wiring: study_seed lives in aecli/search.py
from aecli.loggers import flatten

STATUS_FILE = "status.json"  # written by aecli/job.py when a run ends
SUMMARY_FILE = "summary.csv"
# the columns every row has, in table order; the test metrics (test_*) go between val_recon and seconds
FIRST = ["run", "overrides", "optimized", "val_loss", "val_recon", "epoch"]
LAST = ["seconds", "status", "error"]
log = logging.getLogger(__name__)


# -- what a run leaves behind -------------------------------------------------------------------------
def is_run(path: Path) -> bool:
    return (path / ".hydra").is_dir() or (path / "metrics.csv").is_file() or (path / STATUS_FILE).is_file()


def find_runs(path: Path) -> list[Path]:
    """`path` itself if it is a run folder, else every run folder below it (job numbers in numeric order)."""
    if is_run(path):
        return [path]
    children = [c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")]
    children.sort(key=lambda c: (0, int(c.name), "") if c.name.isdigit() else (1, 0, c.name))
    return [run for child in children for run in find_runs(child)]


def read_overrides(run_dir: Path) -> list[str]:
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in OmegaConf.load(path)]


def best_epoch(run_dir: Path) -> dict[str, float]:
    """The epoch row with the lowest finite val_loss in metrics.csv: its val_loss, val_recon and epoch."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        rows = [r for r in csv.DictReader(f) if _float(r.get("val_loss")) is not None]
    if not rows:
        return {}
    best = min(rows, key=lambda r: _float(r["val_loss"]))
    return {"val_loss": _float(best["val_loss"]), "val_recon": _float(best.get("val_recon")),
            "epoch": int(best["epoch"])}


def eval_metrics(run_dir: Path) -> dict[str, float]:
    """The numbers in eval.json, flattened (`{"probe": {"accuracy": .9}}` -> test_probe.accuracy)."""
    path = run_dir / "eval.json"
    if not path.is_file():
        return {}
    return {k if k.startswith("test") else f"test_{k}": float(v) for k, v in flatten(json.loads(path.read_text())).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "seed"}


def _float(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def summarize(run_dir: Path, label: str, missing_status: str = "unknown") -> dict[str, Any]:
    """One row of the table for one run folder. A run without status.json never ended: `missing_status`."""
    status_path = run_dir / STATUS_FILE
    status = json.loads(status_path.read_text()) if status_path.is_file() else {"status": missing_status}
    row: dict[str, Any] = {"run": label, "overrides": " ".join(read_overrides(run_dir))}
    metric, value = next(iter((status.get("optimized") or {}).items()), (None, None))
    row.update(optimized=_float(value), optimized_metric=metric)  # the run's optimized_metric, at its best.pt
    row.update(best_epoch(run_dir))
    row.update(eval_metrics(run_dir))
    row.update(seconds=status.get("seconds"), status=status["status"], error=status.get("error"))
    return row


def collect(paths: list[Path], missing_status: str = "unknown") -> list[dict[str, Any]]:
    """The rows of every run folder in or under `paths`, labelled by their path relative to the common parent."""
    runs: list[Path] = []
    for p in paths:
        if not p.is_dir():
            raise AecliError(f"runs: {p} is not a folder: give run folders or sweep folders (outputs/multirun/DATE/TIME)")
        runs += find_runs(p)
    if not runs:
        raise AecliError(f"runs: no run folders (with metrics.csv or .hydra/) in {', '.join(map(str, paths))}")
    runs = [r.resolve() for r in runs]
    base = Path(os.path.commonpath(runs)) if len(runs) > 1 else runs[0].parent
    return [summarize(r, str(r.relative_to(base)), missing_status) for r in runs]


# -- the table ----------------------------------------------------------------------------------------
def columns(rows: list[dict]) -> list[str]:
    extra = sorted({k for r in rows for k in r} - set(FIRST) - set(LAST))
    return FIRST + extra + LAST


def sort_rows(rows: list[dict], key: str | None = None) -> list[dict]:
    """Sort by a column, ascending (`-key`: descending); runs without that value go last. Without a key, by each
    run's optimized_metric, best first (descending for the metrics that are maximized)."""
    if key is None:
        metrics = {r.get("optimized_metric") for r in rows} - {None}
        key = ("-optimized" if len(metrics) == 1 and direction(metrics.pop()) == "maximize" else "optimized")
    name, descending = (key[1:], True) if key.startswith("-") else (key, False)
    allowed = [c for c in columns(rows) if c not in ("overrides", "error", "optimized_metric")]
    if name not in allowed:
        raise AecliError(f"runs: sort={key} is not a column of these runs: allowed {', '.join(allowed)} "
                         "(a leading - sorts descending)")
    have = [r for r in rows if r.get(name) is not None]
    have.sort(key=lambda r: r[name], reverse=descending)
    return have + [r for r in rows if r.get(name) is None]


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns(rows))
        writer.writeheader()
        writer.writerows(rows)
    return path


# conf/hparams_search/optuna.yaml: `direction: ${aecli_direction:${optimized_metric}}`,
# `seed: ${aecli_study_seed:${seed},${hydra.sweeper.storage},${hydra.sweeper.study_name}}`
for _name, _resolver in (("aecli_direction", direction), ("aecli_study_seed", study_seed)):
    if not OmegaConf.has_resolver(_name):
        OmegaConf.register_new_resolver(_name, _resolver)


def short(override: str) -> str:
    """An override with its long numbers cut to 4 significant digits for the eye (lr=0.0084591265 -> lr=0.008459)."""
    import re

    return re.sub(r"(?<![\w.])-?\d+\.\d{5,}(?:e-?\d+)?", lambda m: f"{float(m.group()):.4g}", override)


def varying_overrides(rows: list[dict]) -> tuple[list[str], list[str]]:
    """Each row's overrides that differ between the rows, and the ones every row shares (shown once), with long
    numbers shortened (summary.csv keeps them whole)."""
    split = [r["overrides"].split() for r in rows]
    common = [o for o in split[0] if all(o in s for s in split[1:])] if len(rows) > 1 else []
    return [" ".join(short(o) for o in s if o not in common) for s in split], [short(o) for o in common]


def cell(column: str, v: Any) -> str:
    if v is None:
        return "-"
    if column == "seconds":
        return f"{v:.1f}"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


HEADLINE = ("test_recon_bce", "test_probe_acc", "test_knn_acc", "test_iw_bound", "test_frechet", "test_mmd")
PIPE_WIDTH = 100  # the table's width when the output is not a terminal (a file, a pipe, a cluster log)


def table_width() -> int:
    import shutil

    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns if sys.stdout.isatty() else \
        int(os.environ.get("COLUMNS", PIPE_WIDTH))


def compact_columns(rows: list[dict], chosen: list[str] | None, width: int) -> list[str]:
    """The columns of the table: `chosen`, or the run, what varies, the status, the optimized metric, then the
    headline test numbers and the best epoch's val numbers as long as they fit `width` (summary.csv has every
    column)."""
    present = set(columns(rows))
    if chosen:
        unknown = [c for c in chosen if c not in present]
        if unknown:
            raise AecliError(f"runs: columns={unknown[0]} is not a column of these runs: allowed "
                             f"{', '.join(c for c in columns(rows) if c != 'optimized_metric')}")
        return chosen
    cols = ["run", "overrides", "status", "optimized"]
    optional = [c for c in (*HEADLINE, "val_loss", "epoch", "seconds") if c in present]
    budget = width - 4 - sum(_width(rows, c) + 3 for c in cols)
    for c in optional:
        need = _width(rows, c) + 3
        if need <= budget:
            cols.append(c)
            budget -= need
    return cols


def _width(rows: list[dict], column: str) -> int:
    shown = [cell(column, r.get(column)) for r in rows]
    if column == "overrides":
        shown = varying_overrides(rows)[0]
    return min(max([len(column), *map(len, shown)]), 40)


def print_table(rows: list[dict], title: str, chosen: list[str] | None = None) -> None:
    """The rows as a compact rich table that fits the terminal: what every row shares (overrides) is said once
    below it, errors follow one line each, and no colour codes go to a file or a pipe."""
    from rich.console import Console
    from rich.table import Table

    width = table_width()
    shown, common = varying_overrides(rows)
    cols = compact_columns(rows, chosen, width)
    metrics = {r.get("optimized_metric") for r in rows} - {None}
    table = Table(title=title, caption=f"every run: {' '.join(common)}" if common else None, caption_justify="left")
    for c in cols:
        header = metrics.pop() if c == "optimized" and len(metrics) == 1 else c.removeprefix("test_")
        table.add_column(header, justify="left" if c in ("run", "overrides", "status") else "right",
                         overflow="ellipsis" if c == "overrides" else "fold", max_width=40)
    for row, overrides in zip(rows, shown):
        table.add_row(*(overrides if c == "overrides" else cell(c, row.get(c)) for c in cols),
                      style="red" if row["status"] != "ok" else None)
    console = Console(width=width, highlight=False)
    console.print(table)
    for row in rows:
        if row.get("error"):
            line = f"{row['run']} {row['status']}: {' '.join(str(row['error']).split())}"
            console.print(line if len(line) <= width else line[:width - 1] + "…", style="red", soft_wrap=True)


def runs_command(paths: list[str], sort: str | None = None, columns: str | None = None) -> list[dict]:
    """`aecli runs PATH... [sort=METRIC] [columns=a,b]`: the table for any set of run or sweep folders."""
    rows = sort_rows(collect([Path(p) for p in paths]), sort)
    failed = sum(r["status"] != "ok" for r in rows)
    print_table(rows, f"{len(rows)} runs" + (f", {failed} not ok" if failed else ""),
                [c.strip() for c in columns.split(",") if c.strip()] if columns else None)
    return rows


# The last sweep of this process: {"dir", "jobs", "failed"}; `aecli train -m` exits non-zero when any job failed.
LAST_SWEEP: dict[str, Any] = {}


ATTEMPTS = ".attempts"  # the failures of the current attempt, noted by aecli/job.py


def attempt_failures(sweep_dir: Path) -> dict[str, dict]:
    """{job folder name: its failure} for the jobs of this attempt that failed (a folder of another run among them,
    whose own status.json was left as it was)."""
    folder = sweep_dir / ATTEMPTS
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")} if folder.is_dir() else {}


class SweepSummary(Callback):
    """At the end of a multirun: summary.csv in the sweep folder, the table on the console, the report."""

    def on_multirun_start(self, config, **kwargs) -> None:
        import shutil

        shutil.rmtree(Path(str(config.hydra.sweep.dir)) / ATTEMPTS, ignore_errors=True)  # a new attempt

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        if not sweep_dir.is_dir():
            return
        # every job of a finished sweep has ended: a job without status.json died before it could say so
        rows = collect([sweep_dir], missing_status="failed")
        failures = attempt_failures(sweep_dir)
        front = pareto_runs(sweep_dir)  # optuna-wiring: a multi-objective study's Pareto front
        for row in rows:
            if row["run"] in failures:
                row.update(failures[row["run"]])
            if row["status"] == "failed" and lock_is_held(sweep_dir / row["run"] / LOCK):  # optuna-wiring
                row["status"] = "running"  # another worker's trial, still training
            if front is not None:  # optuna-wiring
                row["pareto"] = row["run"] in front
        write_csv(rows, sweep_dir / SUMMARY_FILE)
        failed = sum(r["status"] not in ("ok", "pruned", "running") for r in rows)  # optuna-wiring: pruned, running
        LAST_SWEEP.update(dir=str(sweep_dir), jobs=len(rows), failed=failed)
        print_table(rows, f"sweep {sweep_dir}: {len(rows)} jobs" + (f", {failed} failed" if failed else ""))
        print(f"summary: {sweep_dir / SUMMARY_FILE}")
        if front is not None:  # optuna-wiring
            print(f"Pareto front: runs {', '.join(front) or 'none'}")
        if config.get("report", True):  # the page of the whole sweep (aecli/report.py); report=false skips it
            from aecli.report import report_command

            try:
                print(f"report: {report_command([str(sweep_dir)])}")
            except Exception as e:  # the sweep has ended and its summary is written: say why, do not fail it
                logging.getLogger("aecli").warning(f"report: not written ({type(e).__name__}: {e})")
