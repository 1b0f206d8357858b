"""One `aecli train` job around the trainer: the run folder it writes into, and how it ends.

Before Hydra starts, `protect_run_folders` makes sure a new run never writes into an existing run folder and
points a resume at the run's own folder. When the job ends, `run_job` records `status.json` (ok, failed,
interrupted); in a sweep a failed job is recorded and the sweep goes on, a signal stops the sweep.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from aecli.errors import AecliError, exit_with

log = logging.getLogger("aecli")


def _arg(args: list[str], key: str) -> str | None:
    """The last `key=value` among the overrides, unquoted; None when not given."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{key}=")]
    return values[-1].strip("'\"") if values else None


def _quote(path: Path) -> str:
    """A path as a quoted Hydra override value (any character allowed)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_writable(folder: Path, what: str) -> None:
    """`folder` (or, when it does not exist yet, its nearest existing parent) must be a writable folder."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        exit_with(f"cannot write the {what} {folder}: {existing} is not a writable folder; choose another place")


def protect_run_folders(args: list[str]) -> list[str]:
    """Protect run folders before Hydra writes .hydra/ into one.

    A new run never writes into an existing, non-empty run folder. `resume=RUN` (or RUN/checkpoints/last.pt)
    continues in RUN itself: Hydra's run dir is pointed there and its own record goes to .hydra/resume-N,
    so the original .hydra/ stays. Resuming any other checkpoint (best.pt, a copied file) starts a new folder.
    """
    multirun = "-m" in args or "--multirun" in args
    resume = _arg(args, "resume")
    if resume not in (None, "", "null"):
        from aecli.checkpoint import find_checkpoint

        if multirun:
            exit_with("resume= continues one run and cannot be combined with -m: resume each run on its own")
        if _arg(args, "hydra.run.dir") is not None:
            exit_with("resume= continues a run in its own folder: drop hydra.run.dir=")
        path = find_checkpoint(resume, "last").resolve()
        args = [a for a in args if not a.startswith("resume=")] + [f"resume={_quote(path)}"]
        if path.name == "last.pt" and path.parent.name == "checkpoints":
            run_dir = path.parent.parent
            check_writable(run_dir, "run folder")
            n = 1
            while (run_dir / ".hydra" / f"resume-{n}").exists():
                n += 1
            return args + [f"hydra.run.dir={_quote(run_dir)}", f"hydra.output_subdir=.hydra/resume-{n}"]
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = _arg(args, key)
    folder = Path(given) if given and "${" not in given else None
    if folder is not None and folder.is_dir() and any(folder.iterdir()):
        exit_with(f"{key}={folder} already exists and is not empty: a new run never writes into an existing run "
             f"folder; choose another {key}" + ("" if multirun else f", or continue it with aecli train resume={folder}"))
    check_writable(folder or Path("outputs"), "run folder")
    return args


def run_job(cfg) -> float | None:
    """Hydra's task: train one run; returns its `optimized_metric` at the best checkpoint (what a sweeper
    optimizes), None when it failed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from aecli.sweep import share_cores, write_status
    from aecli.train import Interrupted, RunFolderTaken, train

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    if multirun:  # jobs running side by side share the cores
        share_cores(cfg, hc.launcher)
    start = time.perf_counter()
    try:
        outcome = train(cfg, run_dir, multirun=multirun, overrides=list(hc.overrides.task))
    except Exception as e:
        known = isinstance(e, AecliError)
        if isinstance(e, Interrupted):  # Ctrl-C or SIGTERM stops a sweep too, with the signal's code
            write_status(run_dir, "interrupted", time.perf_counter() - start, str(e))
            exit_with(str(e), e.exit_code)
        if not isinstance(e, RunFolderTaken):  # never touch another run's folder
            write_status(run_dir, "failed", time.perf_counter() - start,
                         str(e) if known else f"{type(e).__name__}: {e}")
        if not multirun:
            if known:
                exit_with(str(e), e.exit_code)
            raise
        # a failed job is marked failed in the sweep's summary (status.json) and the sweep goes on
        if known:
            log.error(f"job failed: {e}")
        else:  # a bug: keep its traceback in the job's log
            log.exception(f"job failed: {type(e).__name__}: {e}")
        return None  # not NaN: Optuna's sweeper marks a None trial failed and goes on, a NaN stops it
    write_status(run_dir, "ok", time.perf_counter() - start, warnings=outcome.warnings,
                 optimized={outcome.metric: outcome.value})
    return outcome.value
