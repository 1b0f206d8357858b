"""The run table: one row per run folder, as `aecli runs` prints it, a sweep's summary.csv holds it and the report
shows it (aecli/rundir.py reads the folders; this module only puts what they hold side by side).

    run             the folder, relative to the runs' common parent
    overrides       the command-line overrides of the run (.hydra/overrides.yaml)
    optimized       the run's optimized_metric at its best checkpoint (status.json)
    val_loss ...    the best epoch of metrics.csv (lowest finite val_loss), its val_recon and epoch
    test_*          the numbers of eval.json, when eval ran
    data            the data set (runs of different data sets are ranked within each: val_recon is per data set)
    seconds, status, error

Nothing here imports torch: `aecli runs` answers at once.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from aecli.errors import AecliError
from aecli.loggers import flatten
from aecli.metric_names import direction
from aecli.rundir import HYDRA, METRICS, RunRecord, find_runs, number, read_run, write_csv

# the columns every row has, in table order; the test metrics (test_*) go between val_recon and seconds
FIRST = ["run", "overrides", "optimized", "val_loss", "val_recon", "epoch"]
LAST = ["seconds", "status", "error"]
# eval.json's bookkeeping: how the numbers were made, not numbers to compare (the report shows them per run)
BOOKKEEPING = ("test_images", "test_iw_images", "test_iw_samples", "test_iw_seconds")
# a run that ended like this is no failure: a search's pruner stopped it (its checkpoints and rows are kept)
NOT_FAILED = ("ok", "pruned", "running")  # running: another worker's trial, still training
HEADLINE = ("test_recon_bce", "test_probe_acc", "test_knn_acc", "test_iw_bound", "test_frechet", "test_mmd")
PIPE_WIDTH = 100  # the table's width when the output is not a terminal (a file, a pipe, a cluster log)


# -- the rows -----------------------------------------------------------------------------------------
def best_row(metrics: list[dict]) -> dict[str, str]:
    """The metrics.csv row of the best checkpoint's epoch: the lowest finite val_loss, as the trainer keeps best.pt
    ({} when there is none)."""
    rows = [r for r in metrics if number(r.get("val_loss")) is not None]
    return min(rows, key=lambda r: number(r["val_loss"])) if rows else {}


def best_epoch(metrics: list[dict]) -> dict[str, float]:
    """The best epoch's val_loss, val_recon and number."""
    best = best_row(metrics)
    if not best:
        return {}
    return {"val_loss": number(best["val_loss"]), "val_recon": number(best.get("val_recon")),
            "epoch": int(best["epoch"])}


def eval_metrics(result: dict) -> dict[str, float]:
    """The numbers of an eval.json, flattened (`{"probe": {"accuracy": .9}}` -> test_probe.accuracy)."""
    return {k if k.startswith("test") else f"test_{k}": float(v) for k, v in flatten(result).items()
            if number(v) is not None and k != "seed"}


def row_of(run: RunRecord, label: str, missing_status: str = "unknown") -> dict[str, Any]:
    """One row of the table for one run. A run without status.json never ended: `missing_status`. The metrics
    eval.json skipped (a data set without labels) are kept under `skipped`, for the notes."""
    status = run.status or {"status": missing_status}
    row: dict[str, Any] = {"run": label, "overrides": " ".join(run.overrides)}
    metric, value = next(iter((status.get("optimized") or {}).items()), (None, None))
    row.update(optimized=number(value), optimized_metric=metric)  # the run's optimized_metric, at its best.pt
    row.update(best_epoch(run.metrics))
    row.update(eval_metrics(run.evaluation))
    if run.data is not None:
        row["data"] = run.data
    row.update(seconds=status.get("seconds"), status=status["status"], error=status.get("error"))
    skipped = run.evaluation.get("skipped")
    if isinstance(skipped, dict) and skipped:
        row["skipped"] = skipped
    return row


def summarize(run_dir: Path, label: str, missing_status: str = "unknown") -> dict[str, Any]:
    """The row of one run folder."""
    return row_of(read_run(run_dir), label, missing_status)


def collect(paths: list[Path], missing_status: str = "unknown") -> list[dict[str, Any]]:
    """The rows of every run folder in or under `paths`, labelled by their path relative to the common parent."""
    return [summarize(run, label, missing_status) for run, label in labelled_runs(paths)]


def labelled_runs(paths: list[Path], command: str = "runs") -> list[tuple[Path, str]]:
    """(run folder, its label) for every run folder in or under `paths` (the label: its path relative to the
    runs' common parent)."""
    runs: list[Path] = []
    for p in paths:
        if not Path(p).is_dir():
            raise AecliError(f"{command}: {p} is not a folder: give run folders or sweep folders "
                             "(outputs/multirun/DATE/TIME)")
        runs += find_runs(p)
    if not runs:
        raise AecliError(f"{command}: no run folders (with {METRICS} or {HYDRA}/) in {', '.join(map(str, paths))}")
    runs = [r.resolve() for r in runs]
    base = Path(os.path.commonpath(runs)) if len(runs) > 1 else runs[0].parent
    return [(r, str(r.relative_to(base))) for r in runs]


def columns(rows: list[dict]) -> list[str]:
    extra = sorted({k for r in rows for k in r} - set(FIRST) - set(LAST) - {"skipped"})
    return FIRST + extra + LAST


def failed(rows: list[dict]) -> int:
    """How many runs failed (a pruned run did not: the search stopped it)."""
    return sum(r["status"] not in NOT_FAILED for r in rows)


def data_sets(rows: list[dict]) -> list[str]:
    """The data sets of the rows, in the order they first appear (runs without one are left out)."""
    return list(dict.fromkeys(r["data"] for r in rows if r.get("data")))


def sort_rows(rows: list[dict], key: str | None = None) -> list[dict]:
    """Sort by a column, ascending (`-key`: descending); runs without that value go last. Without a key, by each
    run's optimized_metric, best first (descending for the metrics that are maximized). Runs of several data sets
    are ranked within each data set (a val_recon on MNIST says nothing of one on Fashion-MNIST)."""
    if key is None:
        metrics = {r.get("optimized_metric") for r in rows} - {None}
        key = ("-optimized" if len(metrics) == 1 and direction(metrics.pop()) == "maximize" else "optimized")
    name, descending = (key[1:], True) if key.startswith("-") else (key, False)
    allowed = [c for c in columns(rows) if c not in ("overrides", "error", "optimized_metric")]
    if name not in allowed:
        raise AecliError(f"runs: sort={key} is not a column of these runs: allowed {', '.join(allowed)} "
                         "(a leading - sorts descending)")
    groups = data_sets(rows) if name not in ("run", "data", "seconds", "status") else []
    ranked = []
    for group in (groups if len(groups) > 1 else [None]):
        members = [r for r in rows if group is None or r.get("data") == group]
        have = [r for r in members if r.get(name) is not None]
        have.sort(key=lambda r: r[name], reverse=descending)
        ranked += have + [r for r in members if r.get(name) is None]
    return ranked + [r for r in rows if all(r is not s for s in ranked)]


def write_summary(rows: list[dict], path: Path) -> Path:
    """A sweep's summary.csv: every column of every row."""
    return write_csv(path, rows, columns(rows))


# -- the table on the console -------------------------------------------------------------------------
def short(override: str) -> str:
    """An override with its long numbers cut to 4 significant digits for the eye (lr=0.0084591265 -> lr=0.008459)."""
    return re.sub(r"(?<![\w.])-?\d+\.\d{5,}(?:e-?\d+)?", lambda m: f"{float(m.group()):.4g}", override)


def varying_overrides(rows: list[dict]) -> tuple[list[str], list[str]]:
    """Each row's overrides that differ between the rows, and the ones every row shares (shown once), with long
    numbers shortened (summary.csv keeps them whole)."""
    split = [r["overrides"].split() for r in rows]
    common = [o for o in split[0] if all(o in s for s in split[1:])] if len(rows) > 1 else []
    return [" ".join(short(o) for o in s if o not in common) for s in split], [short(o) for o in common]


def cell(column: str, v: Any) -> str:
    """A value as the table shows it: 4 significant digits, whole numbers whole (10000, not 1e+04)."""
    if v is None:
        return "-"
    if column == "seconds":
        return f"{v:.1f}"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def table_width() -> int:
    import shutil

    return shutil.get_terminal_size((PIPE_WIDTH, 24)).columns if sys.stdout.isatty() else \
        int(os.environ.get("COLUMNS", PIPE_WIDTH))


def compact_columns(rows: list[dict], chosen: list[str] | None, width: int, sort: str | None = None) -> list[str]:
    """The columns of the table: `chosen`, or the run, what varies, the status, the optimized metric, the column
    sorted by, the data set when there are several, then the headline test numbers and the best epoch's val
    numbers as long as they fit `width` (summary.csv has every column)."""
    present = set(columns(rows))
    if chosen:
        unknown = [c for c in chosen if c not in present]
        if unknown:
            raise AecliError(f"runs: columns={unknown[0]} is not a column of these runs: allowed "
                             f"{', '.join(c for c in columns(rows) if c != 'optimized_metric')}")
        return chosen
    cols = ["run", "overrides", "status", "optimized"]
    if len(data_sets(rows)) > 1:
        cols.insert(1, "data")
    sorted_by = (sort or "").lstrip("-")
    if sorted_by in present and sorted_by not in cols:
        cols.append(sorted_by)
    optional = [c for c in (*HEADLINE, "val_loss", "epoch", "seconds") if c in present and c not in cols]
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


def wrap_path(label: str, width: int) -> str:
    """A run folder's label in lines of at most `width` characters, broken only after a `/`."""
    lines = [""]
    parts = label.split("/")
    for i, part in enumerate(parts):
        piece = part + ("/" if i < len(parts) - 1 else "")
        if lines[-1] and len(lines[-1]) + len(piece) > width:
            lines.append("")
        lines[-1] += piece
    return "\n".join(lines)


def skipped_note(rows: list[dict]) -> str | None:
    """One line naming the metrics eval skipped (eval.json's `skipped`) and why, for the runs it skipped them in."""
    reasons: dict[str, list[str]] = {}
    for row in rows:
        for metric, why in (row.get("skipped") or {}).items():
            reasons.setdefault(f"{metric} ({why})", []).append(row["run"])
    if not reasons:
        return None
    return "skipped by eval: " + "; ".join(f"{what} in {len(runs)} run{'s' * (len(runs) > 1)}"
                                           for what, runs in reasons.items())


def print_table(rows: list[dict], title: str, chosen: list[str] | None = None, sort: str | None = None) -> None:
    """The rows as a compact rich table that fits the terminal: what every row shares (overrides) is said once
    below it, errors follow one line each, and no colour codes go to a file or a pipe. Run folders are never
    broken mid-name; the overrides wrap between words."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    width = table_width()
    shown, common = varying_overrides(rows)
    cols = compact_columns(rows, chosen, width, sort)
    metrics = {r.get("optimized_metric") for r in rows} - {None}
    notes = [f"every run: {' '.join(common)}"] if common else []
    if len(data_sets(rows)) > 1:
        notes.append("ranked within each data set: their numbers are not comparable across data sets")
    skipped = skipped_note(rows)
    if skipped:
        notes.append(skipped)
    table = Table(title=escape(title), caption=escape("\n".join(notes)) if notes else None, caption_justify="left")
    longest_word = max((len(w) for o in shown for w in o.split()), default=0)
    run_width = max(min(max(len(r["run"]) for r in rows), width - 54),
                    max(len(part) + 1 for r in rows for part in r["run"].split("/")), len("run"))
    for c in cols:
        header = metrics.pop() if c == "optimized" and len(metrics) == 1 else c.removeprefix("test_")
        if c == "run":  # a folder is broken after a /, never mid-name (`wrap_path`)
            table.add_column(header, no_wrap=True, min_width=run_width, max_width=run_width, overflow="ellipsis")
        elif c == "overrides":  # wraps between overrides
            table.add_column(header, overflow="fold", min_width=min(longest_word, 24), max_width=40)
        else:
            table.add_column(header, justify="left" if c in ("data", "status") else "right", no_wrap=True,
                             overflow="ellipsis", max_width=40)
    for row, overrides in zip(rows, shown):
        shown_cells = {"overrides": overrides, "run": wrap_path(row["run"], run_width)}
        table.add_row(*(escape(shown_cells.get(c) or cell(c, row.get(c))) for c in cols),
                      style="red" if row["status"] not in NOT_FAILED else None)
    console = Console(width=width, highlight=False)
    console.print(table)
    for row in rows:
        if row.get("error"):
            line = f"{row['run']} {row['status']}: {' '.join(str(row['error']).split())}"
            console.print(escape(line if len(line) <= width else line[:width - 1] + "…"), style="red", soft_wrap=True)


def runs_command(paths: list[str], sort: str | None = None, columns: str | None = None) -> list[dict]:
    """`aecli runs PATH... [sort=METRIC] [columns=a,b]`: the table for any set of run or sweep folders."""
    rows = sort_rows(collect([Path(p) for p in paths]), sort)
    not_ok = failed(rows)
    pruned = sum(r["status"] == "pruned" for r in rows)
    print_table(rows, f"{len(rows)} runs" + (f", {not_ok} not ok" if not_ok else "") +
                (f", {pruned} pruned" if pruned else ""),
                [c.strip() for c in columns.split(",") if c.strip()] if columns else None, sort)
    return rows
