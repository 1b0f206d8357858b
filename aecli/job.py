"""One `aecli train` job around the trainer: the run folder it writes into, the run, and how it ends.

Before Hydra starts, `protect_run_folders` makes sure a new run never writes into an existing run folder and
points a resume at the run's own folder. `run_training` trains (or continues) a run and evaluates its best
checkpoint on the data already loaded. When the job ends, `run_job` records `status.json` (ok, failed,
interrupted); in a sweep a failed job is recorded and the sweep goes on, a signal stops the sweep, and jobs
running side by side share the cores.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aecli.errors import AecliError, Pruned, exit_with  # optuna-wiring: Pruned
from aecli.paths import aecli_command

log = logging.getLogger("aecli")

STATUS_FILE = "status.json"
STOP_AT_STEP = "AECLI_STOP_AT_STEP"  # testing hook: behave as if SIGTERM arrived during this step


def _arg(args: list[str], key: str) -> str | None:
    """The last `key=value` among the overrides, unquoted (Hydra's parser); None when not given."""
    from aecli.overrides import value

    return value(args, key)


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


LOCK_FILE = ".lock"
_locks: dict[Path, Any] = {}  # folder -> the open file holding its OS lock, for this process's life


def lock_folder(folder: Path, what: str = "run folder") -> None:
    """Own `folder` for this process: an OS lock (fcntl.flock) on folder/.lock, which the OS releases when the
    process ends, however it ends (a crash leaves nothing stuck). Another process gets one line naming the owner."""
    folder = Path(folder).absolute()
    if folder in _locks:
        return
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / LOCK_FILE, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        owner = f.read().strip() or "unknown"
        f.close()
        raise AecliError(f"{what} {folder} is in use by another aecli process (pid {owner}): wait for it to end, or "
                         f"choose another folder") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _locks[folder] = f


def holds_a_run(folder: Path) -> bool:
    """Whether a folder holds a run that trained (a checkpoint, metrics, or an ok status): what must never be
    overwritten. A folder whose run failed before its first epoch (a bad value found inside the run) does not."""
    status = read_status(folder)
    return (any((folder / "checkpoints" / name).is_file() for name in ("last.pt", "best.pt"))
            or (folder / "metrics.csv").is_file() or status.get("status") == "ok")


def protect_run_folders(args: list[str]) -> list[str]:
    """Protect run folders before Hydra writes .hydra/ into one.

    A new run never writes into a folder that holds a run; a folder whose run never trained is reused. The folder
    is locked for this process (`lock_folder`), so two runs never share one. `resume=RUN` (or
    RUN/checkpoints/last.pt) continues in RUN itself: Hydra's run dir is pointed there and its own record goes to
    .hydra/resume-N, so the original .hydra/ stays; resuming any other checkpoint (best.pt, a copied file) starts a
    new folder. `resume=auto` is the job's to decide (`run_job`). A sweep given the folder of an earlier sweep
    continues it: each job keeps, resumes or starts its own folder.
    """
    multirun = "-m" in args or "--multirun" in args
    resume = _arg(args, "resume")
    if resume not in (None, "", "null", "auto"):
        from aecli.checkpoint import find_checkpoint

        if multirun:
            exit_with("resume= continues one run and cannot be combined with -m: resume each run on its own, or use "
                      "resume=auto")
        if _arg(args, "hydra.run.dir") is not None:
            exit_with("resume= continues a run in its own folder: drop hydra.run.dir=")
        path = find_checkpoint(resume, "last").resolve()
        args = [a for a in args if not a.startswith("resume=")] + [f"resume={_quote(path)}"]
        if path.name == "last.pt" and path.parent.name == "checkpoints":
            run_dir = path.parent.parent
            check_writable(run_dir, "run folder")
            lock_folder(run_dir)
            n = 1
            while (run_dir / ".hydra" / f"resume-{n}").exists():
                n += 1
            return args + [f"hydra.run.dir={_quote(run_dir)}", f"hydra.output_subdir=.hydra/resume-{n}"]
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = _arg(args, key)
    folder = Path(given) if given and "${" not in given else None
    if folder is not None:
        check_writable(folder, "sweep folder" if multirun else "run folder")
        def refuse_a_taken_folder() -> None:
            if not multirun and holds_a_run(folder) and resume != "auto":
                exit_with(f"{key}={folder} already holds a run: a new run never writes into it; choose another "
                          f"{key}, or continue it with {aecli_command()} train resume={folder}")

        refuse_a_taken_folder()  # before anything (the lock file) is written there
        if str(_arg(args, "hydra.sweeper.worker")).lower() != "true":  # optuna-wiring: workers share the folder
            lock_folder(folder, "sweep folder" if multirun else "run folder")
        refuse_a_taken_folder()  # it may have trained while we waited for the lock
        if multirun and any(p.is_dir() and p.name.isdigit() for p in folder.iterdir()):
            log.info(f"continuing the sweep in {folder}: jobs that ended ok are kept, interrupted ones resume")
    check_writable(folder or Path("outputs"), "run folder")
    return args


class RunFolderTaken(AecliError):
    """A new run was pointed at a folder that already holds a run."""


def check_new_run_dir(run_dir: Path) -> None:
    """A new run never writes into a folder that already holds a run."""
    if holds_a_run(run_dir):
        raise RunFolderTaken(f"run folder {run_dir} already holds a run: a new run never writes into it; choose another "
                             f"hydra.run.dir, or continue that run with: {aecli_command()} train "
                             f"resume={shlex.quote(str(run_dir))}")


ATTEMPTS = ".attempts"  # in a sweep folder: the jobs of the current attempt that failed (aecli/sweep.py reads it)


def note_failed_attempt(sweep_dir: Path, job_num: int, error: str) -> None:
    folder = sweep_dir / ATTEMPTS
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{job_num}.json").write_text(json.dumps({"status": "failed", "error": error}) + "\n")


def read_status(run_dir: Path) -> dict:
    """A run's status.json ({} when it has none, or an unreadable one)."""
    try:
        return json.loads((Path(run_dir) / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_status(run_dir: Path, status: str, seconds: float, error: str | None = None,
                 warnings: list[str] | None = None, optimized: dict[str, float | None] | None = None,
                 stage: str | None = None) -> None:
    """Record how a run ended (`ok`, `failed` or `interrupted`) in its folder, for the summary: the error, the
    collapse warnings, the optimized metric's value ({name: value}), and for an interrupt the stage it stopped
    (`training`, or `evaluation`: training finished, the evaluation did not)."""
    record = {"status": status, "seconds": round(seconds, 3), "error": error, "warnings": warnings or [],
              "optimized": optimized or {}, **({"stage": stage} if stage else {})}
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / STATUS_FILE).write_text(json.dumps(record) + "\n")


@dataclass
class Outcome:
    """What a finished run reports to its job: the value of `optimized_metric` (what a sweep optimizes) and the
    collapse warnings (kept in status.json)."""

    metric: str
    value: float | None
    warnings: list[str]


def optimized_value(metric: str, rows: list[dict], best_epoch: int, final: dict) -> float | None:
    """`metric` at the best checkpoint: its metrics.csv value in the best epoch's row, or its test_ number from
    the evaluation of best.pt."""
    if metric.startswith("test_"):
        value = final.get(metric)
    else:
        value = next((r.get(metric) for r in rows if r["epoch"] == best_epoch), None)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def run_training(cfg, run_dir: Path, multirun: bool = False, overrides: list[str] = (),
                 stop_at_step: int = 0) -> Outcome:
    """Train one run, or continue `cfg.resume` given the user's `overrides`; then evaluate its best checkpoint on
    the data already loaded (eval.at_end)."""
    from aecli.train import Trainer

    start = time.perf_counter()
    run_dir = Path(run_dir)
    if cfg.get("resume"):
        trainer = Trainer.resume(cfg, run_dir, overrides, multirun=multirun, stop_at_step=stop_at_step)
        own = Path(trainer.cfg.resume).resolve().parent.parent
        if own != run_dir.resolve():
            check_new_run_dir(run_dir)
            log.info(f"continuing {trainer.cfg.resume} in a new run folder {run_dir}")
    else:
        check_new_run_dir(run_dir)
        trainer = Trainer(cfg, run_dir, multirun=multirun, stop_at_step=stop_at_step)
    from aecli.search import epoch_hook  # optuna-wiring: a trial of a search with a pruner reports every epoch

    hook = epoch_hook(trainer.cfg)
    if hook is not None:
        trainer.epoch_hooks.append(hook)
    best = trainer.fit()
    final = {"best_val_loss": best}
    summary = ""
    if trainer.cfg.eval.at_end:  # the run's own setting: a resume keeps it
        from aecli.evaluate import headline, run_eval
        from aecli.train import interruptible

        finish = f"{aecli_command()} eval run={shlex.quote(str(run_dir))}"
        with interruptible(f"during the evaluation: training finished (checkpoints/best.pt is written); finish the "
                           f"evaluation with: {finish}", stage="evaluation"):
            results = run_eval(run_dir, device=trainer.device.type, data=trainer.data, quiet=multirun)
        final.update({f"test_{k}": v for k, v in results.items()})
        summary = f"; test: {headline(final)}"
    trainer.logger.close(final)
    metric = trainer.cfg.optimized_metric
    value = optimized_value(metric, trainer.state.rows, trainer.state.best_epoch, final)
    log.info(f"finished in {time.perf_counter() - start:.1f}s; {metric} {value if value is None else f'{value:.4g}'}"
             f"{summary}")
    return Outcome(metric, value, trainer.warnings)


def continue_in_place(cfg, run_dir: Path, overrides: list[str]) -> float | None | bool:
    """A job pointed at a folder that may hold its earlier attempt (`resume=auto`, or a sweep run again into its
    folder): an attempt that ended ok is kept (its optimized value is returned, no training), one that left a
    checkpoint resumes from it (cfg.resume is set), and one that never trained starts afresh. Returns False when
    the job must train. The attempt must have been the same job: its checkpoint's config must hold the overrides."""
    from omegaconf import open_dict

    from aecli.checkpoint import load_checkpoint
    from aecli.resume import resume_config

    status = read_status(run_dir)
    checkpoint = next((run_dir / "checkpoints" / n for n in ("last.pt", "best.pt")
                       if (run_dir / "checkpoints" / n).is_file()), None)
    if checkpoint is not None:  # one line when the folder held another job (lambda=10 there, lambda=100 here)
        try:
            resume_config(cfg, load_checkpoint(checkpoint, mmap=True), checkpoint,  # mapped: its tensors unread
                          [o for o in overrides if not o.startswith("resume=")])
        except AecliError as e:  # its folder is another run's: left as it is
            raise RunFolderTaken(f"{run_dir} holds another run, which stays as it is: {e}") from None
    with open_dict(cfg):
        if status.get("status") == "ok":
            (metric, value), = (status.get("optimized") or {cfg.optimized_metric: None}).items()
            log.info(f"{run_dir} ended ok before: kept ({metric} {value})")
            return value
        cfg.resume = str(run_dir) if checkpoint is not None and checkpoint.name == "last.pt" else None
    return False


def run_job(cfg) -> float | None:
    """Hydra's task: train one run; returns its `optimized_metric` at the best checkpoint (what a sweeper
    optimizes), None when it failed."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from aecli.train import Interrupted

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    if multirun:  # jobs running side by side share the cores
        share_cores(cfg, hc.launcher)
    start = time.perf_counter()
    try:
        lock_folder(run_dir)
        if cfg.get("resume") == "auto" or (multirun and holds_a_run(run_dir)):
            kept = continue_in_place(cfg, run_dir, overrides)
            if kept is not False:
                return kept
        outcome = run_training(cfg, run_dir, multirun=multirun, overrides=overrides,
                               stop_at_step=int(os.environ.get(STOP_AT_STEP) or 0))
    except Exception as e:
        known = isinstance(e, AecliError)
        if isinstance(e, Pruned):  # optuna-wiring: stopped by the search's pruner: not a failure (exit 4 alone)
            write_status(run_dir, "pruned", time.perf_counter() - start, str(e))
            log.info(str(e))
            if not multirun:
                exit_with(str(e), e.exit_code)
            return None
        if isinstance(e, Interrupted):  # Ctrl-C, SIGTERM or SIGUSR1 stops a sweep too, with the signal's code
            write_status(run_dir, "interrupted", time.perf_counter() - start, str(e), stage=e.stage)
            exit_with(str(e), e.exit_code)
        if known and "is in use by another aecli process" in str(e):  # never touch another process's folder
            pass
        elif not isinstance(e, RunFolderTaken):  # never touch another run's folder
            write_status(run_dir, "failed", time.perf_counter() - start,
                         str(e) if known else f"{type(e).__name__}: {e}")
        if not multirun:
            if known:
                exit_with(str(e), e.exit_code)
            raise
        # a failed job is marked failed in the sweep's summary and the sweep goes on; this attempt's failure is noted
        # beside the job folders too, for a job whose folder is another run's (its status.json is not ours)
        note_failed_attempt(Path(hc.sweep.dir), hc.job.num, str(e) if known else f"{type(e).__name__}: {e}")
        if known:
            log.error(f"job failed: {e}")
        else:  # a bug: keep its traceback in the job's log
            log.exception(f"job failed: {type(e).__name__}: {e}")
        return None  # not NaN: Optuna's sweeper marks a None trial failed and goes on, a NaN stops it
    write_status(run_dir, "ok", time.perf_counter() - start, warnings=outcome.warnings,
                 optimized={outcome.metric: outcome.value})
    return outcome.value


# -- launchers ----------------------------------------------------------------------------------------
def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def thread_share(launcher: Any) -> int | None:
    """Torch threads for one job of a parallel sweep, so parallel jobs do not oversubscribe the cores.

    joblib runs n_jobs jobs side by side on this machine (n_jobs < 0 counts from the core count, as in
    joblib: -1 all cores, -2 all but one): each gets cores // n_jobs. submitit (local or SLURM) gives each job
    `cpus_per_task` cores when that is set. Other launchers run one job at a time: None (torch's default).
    """
    target = str(launcher.get("_target_", "")) if launcher is not None else ""
    cores = available_cores()
    if target.endswith("JoblibLauncher"):
        n_jobs = int(launcher.get("n_jobs") or 1)
        parallel = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
        return max(1, cores // parallel)
    if "submitit" in target and launcher.get("cpus_per_task"):
        return int(launcher.get("cpus_per_task"))
    return None


def share_cores(cfg, launcher: Any) -> None:
    """In a sweep, give this job its share of the cores as trainer.num_threads (unless that is set)."""
    threads = thread_share(launcher)
    if str(cfg.trainer.num_threads) == "auto":  # optuna-wiring: the free cores, at most this job's share
        from aecli.cores import threads_for

        cfg.trainer.num_threads = threads_for("auto", share=threads)
        log.info(f"torch threads: {cfg.trainer.num_threads} (trainer.num_threads=auto: the free cores)")
    if threads and cfg.trainer.num_threads is None:
        cfg.trainer.num_threads = threads
        log.info(f"torch threads: {threads}, this job's share of the {available_cores()} cores "
                 f"(trainer.num_threads=N to choose)")
