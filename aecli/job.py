"""One `aecli train` job around the trainer: the run folder it writes into, the run, and how it ends.

Before Hydra starts, `protect_run_folders` makes sure a new run never writes into an existing run folder, locks
it (aecli/rundir.py) and points a resume at the run's own folder. `train_one` is the job itself, the same for the
command line (`run_job`, Hydra's task) and the Python API (aecli/api.py): it keeps, extends or resumes an earlier
attempt (`continue_in_place`, resume=auto's one rule), trains with `run_training` (which evaluates the best
checkpoint on the data already loaded) and records how the run ended in its status (ok, failed, interrupted,
pruned). A single run refused before it started leaves no folder; in a sweep a failed job is recorded and the
sweep goes on, a signal stops the sweep and summarizes what ran, and jobs running side by side share the cores.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aecli.errors import AecliError, Pruned, exit_with
from aecli.paths import aecli_command
from aecli.rundir import (HYDRA, LOCK, TRAIN_LOG, FolderInUse, RunDir, holds_a_run, lock_folder,
                          note_failed_attempt, read_status, remove_unstarted, write_status)

log = logging.getLogger("aecli")

STOP_AT_STEP = "AECLI_STOP_AT_STEP"  # testing hook: behave as if SIGTERM arrived during this step


def _arg(args: list[str], key: str) -> str | None:
    """The last `key=value` among the overrides, unquoted (Hydra's parser); None when not given."""
    from aecli.overrides import value

    return value(args, key)


def quote_value(path: Path) -> str:
    """A path as a quoted Hydra override value (any character allowed)."""
    return "'" + str(path).replace("\\", "\\\\").replace("'", "\\'") + "'"


def check_writable(folder: Path, what: str) -> None:
    """`folder` (or, when it does not exist yet, its nearest existing parent) must be a writable folder."""
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise AecliError(f"cannot write the {what} {folder}: {existing} is not a writable folder; choose another "
                         "place")


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
            raise AecliError("resume= continues one run and cannot be combined with -m: resume each run on its own, "
                             "or use resume=auto")
        if _arg(args, "hydra.run.dir") is not None:
            raise AecliError("resume= continues a run in its own folder: drop hydra.run.dir=")
        path = find_checkpoint(resume, "last").resolve()
        args = [a for a in args if not a.startswith("resume=")] + [f"resume={quote_value(path)}"]
        run_dir = path.parent.parent
        if path == RunDir(run_dir).last:
            check_writable(run_dir, "run folder")
            lock_folder(run_dir)
            n = 1
            while (RunDir(run_dir).hydra / f"resume-{n}").exists():
                n += 1
            return args + [f"hydra.run.dir={quote_value(run_dir)}", f"hydra.output_subdir={HYDRA}/resume-{n}"]
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    given = _arg(args, key)
    folder = Path(given) if given and "${" not in given else None
    if folder is not None:
        check_writable(folder, "sweep folder" if multirun else "run folder")
        def refuse_a_taken_folder() -> None:
            if not multirun and holds_a_run(folder) and resume != "auto":
                raise AecliError(f"{key}={folder} already holds a run: a new run never writes into it; choose "
                                 f"another {key}, or continue it with {aecli_command()} train resume={folder}")

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
    from aecli.loop import Trainer

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
        from aecli.signals import interruptible

        finish = f"{aecli_command()} eval run={shlex.quote(str(run_dir))}"
        with interruptible(f"during the evaluation: training finished ({RunDir(run_dir).best} is written); finish the "
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
    folder). One rule, said in one line: an attempt that ended ok is kept (its optimized value is returned, no
    training) unless epochs= grew beyond the epochs it trained, then it is extended; one a search pruned is kept
    (resume=RUN continues it); one that left last.pt resumes from it (cfg.resume is set); one that never trained
    starts afresh. Returns False when the job must train. The attempt must have been the same job: its
    checkpoint's config must hold the overrides."""
    from omegaconf import open_dict

    from aecli.checkpoint import load_checkpoint
    from aecli.resume import resume_config

    status = read_status(run_dir).get("status")
    run = RunDir(run_dir)
    checkpoint = next((c for c in (run.last, run.best) if c.is_file()), None)
    done, wanted, stopped_early = 0, cfg.epochs, False
    if checkpoint is not None:  # one line when the folder held another job (lambda=10 there, lambda=100 here)
        ckpt = load_checkpoint(checkpoint, mmap=True)  # mapped: its tensors stay unread (Trainer.resume reads them)
        try:
            wanted = resume_config(cfg, ckpt, checkpoint, [o for o in overrides if not o.startswith("resume=")]).epochs
        except AecliError as e:  # its folder is another run's: left as it is
            raise RunFolderTaken(f"{run_dir} holds another run, which stays as it is: {e}") from None
        done = ckpt["epoch"] if ckpt.get("partial") is None else ckpt["epoch"] - 1
        stopped_early = bool(ckpt.get("stopped_early"))
    kept = read_status(run_dir).get("optimized") or {cfg.optimized_metric: None}
    (metric, value), = kept.items()
    with open_dict(cfg):
        if status == "pruned":
            log.info(f"{run_dir} was pruned by its search after epoch {done}: kept ({metric} {value}); continue it "
                     f"with {aecli_command()} train resume={shlex.quote(str(run_dir))}")
            return value
        if status == "ok" and (wanted <= done or stopped_early or checkpoint != run.last):
            log.info(f"{run_dir} ended ok before: kept ({metric} {value}; {done} of epochs={wanted} trained); "
                     f"resume=auto extends a finished run only when epochs= grows")
            return value
        if status == "ok":
            log.info(f"{run_dir} ended ok after {done} epochs: extending it to epochs={wanted} (resume=auto extends "
                     f"a finished run when epochs= grows)")
        cfg.resume = str(run_dir) if checkpoint == run.last else None
    return False


def say_if_pruned(cfg) -> None:
    """`resume=RUN` of a run a search pruned: said in one line, and continued as asked."""
    resumed = Path(str(cfg.get("resume") or ""))
    run_dir = resumed.parent.parent if resumed.suffix else resumed
    if cfg.get("resume") and read_status(run_dir).get("status") == "pruned":
        log.info(f"{run_dir} was pruned by its search: continuing it, as resume= asks")


def only_hydra_wrote(run_dir: Path) -> bool:
    """Whether the folder holds nothing but what Hydra and the lock put there before the run started."""
    return run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {HYDRA, TRAIN_LOG, LOCK}


def train_one(cfg, run_dir: Path, overrides: list[str], multirun: bool = False,
              sweep_dir: Path | None = None, job_num: int | None = None) -> float | None:
    """Train (or keep, or continue) the run of one job in `run_dir` and record how it ended in status.json: ok,
    failed, interrupted or pruned. Returns its `optimized_metric` at the best checkpoint. Raises what stopped it; in
    a sweep a failure is recorded (and noted in the sweep's attempt) and None returned, so the sweep goes on. A
    single run refused before it started (device=cuda without a GPU, a bad value) leaves no folder behind."""
    from aecli.signals import Interrupted

    start = time.perf_counter()
    created = not run_dir.exists() or only_hydra_wrote(run_dir)
    try:
        lock_folder(run_dir)
        if cfg.get("resume") == "auto" or (multirun and holds_a_run(run_dir)):
            kept = continue_in_place(cfg, run_dir, overrides)
            if kept is not False:
                return kept
        say_if_pruned(cfg)
        outcome = run_training(cfg, run_dir, multirun=multirun, overrides=overrides,
                               stop_at_step=int(os.environ.get(STOP_AT_STEP) or 0))
    except KeyboardInterrupt:  # Ctrl-C before the trainer took the signal over (while the data loads)
        write_status(run_dir, "interrupted", time.perf_counter() - start, "SIGINT before training began")
        raise Interrupted("SIGINT before training began: nothing to keep", signal.SIGINT) from None
    except Exception as e:
        known = isinstance(e, AecliError)
        error = str(e) if known else f"{type(e).__name__}: {e}"
        if isinstance(e, Interrupted):  # Ctrl-C, SIGTERM or SIGUSR1 stops a sweep too, with the signal's code
            write_status(run_dir, "interrupted", time.perf_counter() - start, error, stage=e.stage)
            raise
        if isinstance(e, Pruned):  # a search's pruner stopped it: not a failure, its checkpoints and rows stay
            write_status(run_dir, "pruned", time.perf_counter() - start, error)
            if multirun:
                log.info(f"job pruned: {e}")
                return None  # the sweeper reads `pruned` in the job's status.json
            raise
        if isinstance(e, (FolderInUse, RunFolderTaken)):  # never touch another process's or another run's folder
            pass
        elif not multirun and created and only_hydra_wrote(run_dir) and not cfg.get("resume"):
            remove_unstarted(run_dir)  # refused before it started: nothing to keep
        else:
            write_status(run_dir, "failed", time.perf_counter() - start, error)
        if not multirun:
            raise
        # a failed job is marked failed in the sweep's summary and the sweep goes on; this attempt's failure is noted
        # beside the job folders too, for a job whose folder is another run's (its status.json is not ours)
        note_failed_attempt(sweep_dir, job_num, error)
        if known:
            log.error(f"job failed: {e}")
        else:  # a bug: keep its traceback in the job's log
            log.exception(f"job failed: {error}")
        return None  # not NaN: Optuna's sweeper marks a None trial failed and goes on, a NaN stops it
    write_status(run_dir, "ok", time.perf_counter() - start, warnings=outcome.warnings,
                 optimized={outcome.metric: outcome.value})
    return outcome.value


def run_job(cfg) -> float | None:
    """Hydra's task, for the command line: train one run (`train_one`) in Hydra's output folder; returns its
    `optimized_metric` at the best checkpoint (what a sweeper optimizes), None when it failed. A single run's
    error ends the process in one line, with its exit code; a signal stops a sweep too."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    if multirun:  # jobs running side by side share the cores
        share_cores(cfg, hc.launcher)
    try:
        return train_one(cfg, Path(hc.runtime.output_dir), list(hc.overrides.task), multirun=multirun,
                         sweep_dir=Path(hc.sweep.dir) if multirun else None,
                         job_num=hc.job.num if multirun else None)
    except AecliError as e:
        drop_closed_output()  # `| tee log` killed by the same Ctrl-C: the line below must not fail
        if multirun:  # a signal stops the sweep: the jobs after this one never start, and what ran is summarized
            from aecli.sweep import summarize_sweep

            summarize_sweep(Path(hc.sweep.dir), bool(cfg.get("report", True)))
        exit_with(str(e), e.exit_code)


def drop_closed_output() -> None:
    """Send stdout and stderr to /dev/null when they are pipes whose reader has gone: `aecli train -m ... | tee log`
    gets the same Ctrl-C as tee, and the sweep must still stop, record and summarize (its files are what is left)
    and exit with the signal's code, not die of a write that can never succeed."""
    import select

    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
            poll = select.poll()
            poll.register(fd, select.POLLOUT)
            gone = any(event & (select.POLLERR | select.POLLHUP) for _, event in poll.poll(0))
        except (OSError, ValueError, AttributeError):  # no file behind the stream (a notebook, a test's capture)
            continue
        if gone:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, fd)
            os.close(devnull)


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
