"""A run folder: its layout's names, and (as the rest moves here) reading and writing what it holds.

    RUN/.hydra/                 Hydra's record of the config and overrides
    RUN/train.log               the run's log
    RUN/status.json             how the run ended (ok, failed, interrupted, pruned)
    RUN/metrics.csv             one row per epoch
    RUN/eval.json               the evaluation of a checkpoint
    RUN/checkpoints/last.pt     the latest state (resume from it)
    RUN/checkpoints/best.pt     the best epoch's state
    RUN/images/*.png            reconstruction and sample grids
    RUN/plots/*.png             curves
    SWEEP/summary.csv           a sweep's table of runs

    SWEEP/.lock, RUN/.lock      the folder's owner (filelock; the owner's pid inside)
    SWEEP/.attempts/N.json      the jobs of the sweep's current attempt that failed

This module is the only place these names are written; everything that reads or writes a run goes through it:
what a run folder is (`is_run`, `holds_a_run`), its status, metrics and evaluation, a sweep's attempts and the
lock that gives a folder to one process. It imports nothing of aecli but the errors (the floor everything stands on).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aecli.errors import AecliError

HYDRA = ".hydra"
HYDRA_RECORDS = ("overrides.yaml", "config.yaml", "hydra.yaml")  # what Hydra writes into .hydra/
TRAIN_LOG = "train.log"
STATUS = "status.json"
METRICS = "metrics.csv"
EVAL = "eval.json"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
BEST = "best.pt"
IMAGES = "images"
PLOTS = "plots"
SUMMARY = "summary.csv"
LOCK = ".lock"
ATTEMPTS = ".attempts"


class RunDir:
    """The paths of one run folder (the names above)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.hydra = self.path / HYDRA
        self.overrides_file, self.config_file, self.hydra_file = (self.hydra / name for name in HYDRA_RECORDS)
        self.status, self.metrics, self.eval = self.path / STATUS, self.path / METRICS, self.path / EVAL
        self.checkpoints = self.path / CHECKPOINTS
        self.last, self.best = self.checkpoints / LAST, self.checkpoints / BEST
        self.images, self.plots = self.path / IMAGES, self.path / PLOTS

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def checkpoint(self, which: str = "last") -> Path:
        """checkpoints/last.pt or checkpoints/best.pt (`which`: last or best)."""
        return {"last": self.last, "best": self.best}[which]


# -- what a folder is ---------------------------------------------------------------------------------
def is_run(folder: str | Path) -> bool:
    """Whether a folder is a run folder: a run was started in it (Hydra's record, metrics or a status)."""
    run = RunDir(folder)
    return run.hydra.is_dir() or run.metrics.is_file() or run.status.is_file()


def holds_a_run(folder: str | Path) -> bool:
    """Whether a run folder holds a run that trained (a checkpoint, metrics, or an ok status): what must never be
    overwritten. A folder whose run failed before its first epoch (a bad value found inside the run) does not."""
    run = RunDir(folder)
    return (run.last.is_file() or run.best.is_file() or run.metrics.is_file()
            or read_status(folder).get("status") == "ok")


def find_runs(path: str | Path) -> list[Path]:
    """`path` itself if it is a run folder, else every run folder below it (job numbers in numeric order)."""
    path = Path(path)
    if is_run(path):
        return [path]
    children = [c for c in path.iterdir() if c.is_dir() and not c.name.startswith(".")]
    children.sort(key=lambda c: (0, int(c.name), "") if c.name.isdigit() else (1, 0, c.name))
    return [run for child in children for run in find_runs(child)]


# -- status.json --------------------------------------------------------------------------------------
def read_status(folder: str | Path) -> dict:
    """A run's status.json ({} when it has none, or an unreadable one)."""
    try:
        return json.loads(RunDir(folder).status.read_text())
    except (OSError, ValueError):
        return {}


def write_status(folder: str | Path, status: str, seconds: float, error: str | None = None,
                 warnings: list[str] | None = None, optimized: dict[str, float | None] | None = None,
                 stage: str | None = None) -> None:
    """Record how a run ended (`ok`, `failed`, `interrupted` or `pruned`) in its folder, for the summary: the error,
    the collapse warnings, the optimized metric's value ({name: value}), and for an interrupt the stage it stopped
    (`training`, or `evaluation`: training finished, the evaluation did not)."""
    record = {"status": status, "seconds": round(seconds, 3), "error": error, "warnings": warnings or [],
              "optimized": optimized or {}, **({"stage": stage} if stage else {})}
    run = RunDir(folder)
    run.path.mkdir(parents=True, exist_ok=True)
    run.status.write_text(json.dumps(record) + "\n")


# -- metrics.csv, eval.json, .hydra/overrides.yaml ----------------------------------------------------
def write_metrics(folder: str | Path, rows: list[dict]) -> None:
    """metrics.csv rewritten with every row so far (columns in first-seen order, so a model whose terms change
    keeps every column)."""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    write_csv(RunDir(folder).metrics, rows, fields)


def read_metrics(folder: str | Path) -> list[dict[str, str]]:
    """metrics.csv's rows as written (strings), [] when the run has none."""
    path = RunDir(folder).metrics
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict], fields: list[str]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def number(v: Any) -> float | None:
    """A finite number from a csv cell or a JSON value, None otherwise (booleans are no numbers)."""
    if isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def curve(folder: str | Path, column: str, rows: list[dict] | None = None) -> list[tuple[float, float]]:
    """(epoch, value) of a metrics.csv column, the rows where it is a finite number."""
    points = [(number(r.get("epoch")), number(r.get(column))) for r in (read_metrics(folder) if rows is None else rows)]
    return [(x, y) for x, y in points if x is not None and y is not None]


def read_eval(folder: str | Path) -> dict:
    """The run's eval.json ({} when it has none, or an unreadable one)."""
    try:
        return json.loads(RunDir(folder).eval.read_text())
    except (OSError, ValueError):
        return {}


def read_record(path: Path, *keys: str) -> Any:
    """One of Hydra's records of a run (.hydra/*.yaml) as plain data, or the value under `keys` in it (None when
    the file, or the key, is missing or unreadable)."""
    import yaml

    try:
        value = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def read_overrides(folder: str | Path) -> list[str]:
    """The command-line overrides the run was started with (.hydra/overrides.yaml), as the user wrote them."""
    return [str(o) for o in read_record(RunDir(folder).overrides_file) or []]


def read_data_set(folder: str | Path) -> str | None:
    """The run's data set as chosen (`data=fashion_mnist`; `images:PATH` for data=images), from Hydra's record."""
    run = RunDir(folder)
    choice = read_record(run.hydra_file, "hydra", "runtime", "choices", "data")
    if choice == "images":
        return f"images:{read_record(run.config_file, 'data', 'path') or '?'}"
    return None if choice is None else str(choice)


@dataclass
class RunRecord:
    """What a run folder holds, read once: its status.json, metrics.csv rows, eval.json, the overrides it was
    started with and its data set (the run table's row and the report's page are both made of it)."""

    path: Path
    status: dict
    metrics: list[dict[str, str]]
    evaluation: dict
    overrides: list[str]
    data: str | None


def read_run(folder: str | Path) -> RunRecord:
    return RunRecord(Path(folder), read_status(folder), read_metrics(folder), read_eval(folder),
                     read_overrides(folder), read_data_set(folder))


def newest_image(folder: str | Path, pattern: str) -> Path | None:
    """The newest grid of the run (images/recon_epoch_NNN.png: NNN is zero-padded, so names sort by epoch)."""
    found = sorted(RunDir(folder).images.glob(pattern))
    return found[-1] if found else None


# -- a sweep's attempts -------------------------------------------------------------------------------
def note_failed_attempt(sweep_dir: str | Path, job_num: int, error: str) -> None:
    """A job of the sweep's current attempt failed (its own folder may be another run's, whose status stays)."""
    folder = Path(sweep_dir) / ATTEMPTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_num}.json").write_text(json.dumps({"status": "failed", "error": error}) + "\n")


def attempt_failures(sweep_dir: str | Path) -> dict[str, dict]:
    """{job folder name: its failure} for the jobs of this attempt that failed."""
    folder = Path(sweep_dir) / ATTEMPTS
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")} if folder.is_dir() else {}


def new_attempt(sweep_dir: str | Path) -> None:
    """A sweep starts (again): the failures of its earlier attempt are forgotten."""
    import shutil

    shutil.rmtree(Path(sweep_dir) / ATTEMPTS, ignore_errors=True)


# -- the lock -----------------------------------------------------------------------------------------
class FolderInUse(AecliError):
    """Another process owns the folder (its lock): nothing of it is touched."""


_locks: dict[Path, Any] = {}  # folder -> its held FileLock, for this process's life


def take_lock(path: str | Path, create: bool = False):
    """An OS lock (filelock) on the file `path` for this process, which the OS releases when the process ends,
    however it ends (a crash leaves nothing stuck): the held lock, or None when another process holds it. The file
    must exist unless `create` (a lock of this process's own); the holder's pid is written into a lock it creates."""
    from filelock import FileLock, Timeout

    path = Path(path)
    if not create and not path.is_file():
        return None
    lock = FileLock(path)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    if create:
        path.write_text(f"{os.getpid()}\n")
    return lock


def lock_is_held(path: str | Path) -> bool:
    """Whether another process holds the lock on the existing file `path` (a lock of this process's own, such as
    the run folders of its in-process jobs, does not count: the file holds the holder's pid)."""
    lock = take_lock(path)
    if lock is not None:
        lock.release()
        return False
    try:
        return Path(path).read_text().strip() != str(os.getpid())
    except OSError:
        return False


def lock_folder(folder: str | Path, what: str = "run folder") -> None:
    """Own `folder` for this process (`take_lock` on folder/.lock). Another process gets one line naming the
    owner's pid."""
    folder = Path(folder).absolute()
    if folder in _locks:
        return
    folder.mkdir(parents=True, exist_ok=True)
    lock = take_lock(folder / LOCK, create=True)
    if lock is None:
        owner = (folder / LOCK).read_text().strip() or "unknown"
        raise FolderInUse(f"{what} {folder} is in use by another aecli process (pid {owner}): wait for it to end, or "
                          f"choose another folder")
    _locks[folder] = lock


def unlock_folder(folder: str | Path) -> None:
    """Give a folder this process owns back (a run refused before it started, whose folder is removed)."""
    lock = _locks.pop(Path(folder).absolute(), None)
    if lock is not None:
        lock.release()


def remove_unstarted(folder: str | Path) -> None:
    """Remove a run folder whose run was refused before it started (only Hydra's record and the lock in it)."""
    import shutil

    unlock_folder(folder)
    shutil.rmtree(folder, ignore_errors=True)
