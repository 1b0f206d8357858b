"""A search's study (Optuna): where it is kept, its pruner, and how a job that is one of its trials reports to it.

`hydra.sweeper.storage` (conf/hparams_search/optuna.yaml) keeps the study:

    null                         in memory, for the life of the command
    sqlite:///optuna.db          an RDB (any SQLAlchemy URL: sqlite, postgresql://..., mysql://...)
    journal:///abs/study.log     Optuna's JournalStorage: an append-only file, for a shared file system (NFS)
    journal://study.log          the same, relative to the working folder; any path ending .log is one too

The sweeper (hydra_plugins/aecli_optuna_sweeper) runs trial N of the study as job N of the sweep, in the run folder
`hydra.sweep.dir`/N. With a pruner (`hydra.sweeper.pruner`), `epoch_hook` gives the job a hook that reports its
`optimized_metric` to trial N after every epoch and stops the run (errors.Pruned) when the pruner says so.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable

from aecli.errors import AecliError, Pruned
from aecli.rundir import METRICS, read_record

log = logging.getLogger("aecli")

PRUNERS = ("none", "median", "hyperband", "successive_halving")
RESULTS = "optimization_results.yaml"  # in the sweep folder: the best trial, or the Pareto front
SWEEPER = "hydra_plugins.aecli_optuna_sweeper.sweeper.AecliOptunaSweeper"
# studies kept in memory by this process, by name: the basic launcher runs the jobs in the sweeper's process
STUDIES: dict[str, Any] = {}
# by sweep folder: the jobs that other workers of a shared study were training when this process's sweep ended (set
# by the sweeper, read by the sweep's summary: their folders have no status.json yet, and they have not failed)
RUNNING_ELSEWHERE: dict[str, set[str]] = {}


def make_pruner(name: str):
    """The Optuna pruner named by `hydra.sweeper.pruner`."""
    import optuna

    pruners = {"none": optuna.pruners.NopPruner,
               # a trial whose value at an epoch is worse than the median of the earlier trials' at that epoch, once
               # 2 trials have finished
               "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2),
               "hyperband": optuna.pruners.HyperbandPruner,
               "successive_halving": optuna.pruners.SuccessiveHalvingPruner}
    if str(name) not in pruners:
        raise AecliError(f"hydra.sweeper.pruner={name} is not a pruner: allowed {', '.join(PRUNERS)}")
    return pruners[str(name)]()


def journal_path(url: str) -> Path | None:
    """The file of a journal storage URL (journal:///abs, journal://rel, or a path ending .log), else None."""
    if url.startswith("journal://"):
        return Path(url.removeprefix("journal://"))
    if url.endswith(".log") and "://" not in url:
        return Path(url)
    return None


def open_storage(url: str | None):
    """The Optuna storage of `hydra.sweeper.storage` (None: in memory). A storage that cannot be opened (an old
    study database, an unknown URL) is refused in one line that says why."""
    if not url or str(url) == "None":
        return None
    import optuna

    url = str(url)
    journal = journal_path(url)
    try:
        if journal is not None:
            from optuna.storages.journal import JournalFileBackend

            journal.parent.mkdir(parents=True, exist_ok=True)
            return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
        return optuna.storages.RDBStorage(url)
    except Exception as e:  # noqa: BLE001  (SQLAlchemy's, Optuna's and the OS's errors, said in one line)
        reason = " ".join(str(e).split())
        if "no longer compatible with the table schema" in reason or "optuna storage upgrade" in reason:
            raise AecliError(f"hydra.sweeper.storage={url} holds a study database written by an older Optuna "
                             f"({reason.split('(')[1].split(')')[0] if '(' in reason else 'an old schema'}), which "
                             f"Optuna {optuna.__version__} cannot open: upgrade it once with `optuna storage upgrade "
                             f"--storage {url}` (keep a copy first), or give a new storage") from None
        raise AecliError(f"hydra.sweeper.storage={url} cannot be opened ({type(e).__name__}: {reason}): give an RDB "
                         f"URL (sqlite:///optuna.db), journal:///path/study.log, or null (in memory)") from None


def load_study(storage_url: str | None, study_name: str, pruner: str = "none"):
    """The study `study_name` in the storage (the one this process keeps in memory when there is none)."""
    import optuna

    storage = open_storage(storage_url)
    if storage is None:
        return STUDIES.get(study_name)
    return optuna.load_study(study_name=study_name, storage=storage, pruner=make_pruner(pruner))


def study_seed(seed: int, storage: str | None, study_name: str) -> int:
    """The sampler's seed for an Optuna search: `seed`, plus the number of trials the study already holds when it
    is continued from a storage. A continued search then proposes new trials (the same seed would draw the first
    trials' values again), and the same command on the same storage still proposes the same ones."""
    if not storage or str(storage) == "None":
        return int(seed)
    journal = journal_path(str(storage))
    if journal is not None and not journal.is_file():
        return int(seed)  # no study yet: do not create the file here
    try:
        study = load_study(storage, study_name)
    except KeyError:  # no such study yet: this search creates it
        return int(seed)
    except Exception as e:  # noqa: BLE001  (an unreadable storage: the sweeper says it in one line when it opens it)
        log.debug(f"cannot read the Optuna storage {storage}: {e}")
        return int(seed)
    return int(seed) + len(study.trials)


def pareto_runs(sweep_dir: Path) -> list[str] | None:
    """The run folders (trial numbers) of a multi-objective study's Pareto front, from the sweep folder's results
    file the sweeper writes; None for a search with one objective (or no results)."""
    solutions = read_record(Path(sweep_dir) / RESULTS, "solutions")
    return None if solutions is None else [str(s["run"]) for s in solutions]


# -- the job's side: report each epoch to its trial ---------------------------------------------------
def epoch_hook(cfg) -> Callable[[dict], None] | None:
    """For a job that is trial N of an aecli study with a pruner: `hook(row)` reports row[cfg.optimized_metric] at
    step row["epoch"] to trial N and raises errors.Pruned when the pruner says the trial fell behind. None for any
    other job (no sweep, another sweeper, pruner none, several objectives, a test_ metric known only at the end)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hc = HydraConfig.get()
    sweeper = hc.get("sweeper") or {}
    pruner = str(sweeper.get("pruner") or "none")
    if sweeper.get("_target_") != SWEEPER or pruner == "none" or hc.job.get("num") is None:
        return None
    metric = str(cfg.optimized_metric)
    if metric.startswith("test_") or len(sweeper.get("objectives") or [metric]) > 1:
        log.warning(f"hydra.sweeper.pruner={pruner}: not used for {metric} (pruning needs one objective that "
                    f"{METRICS} reports every epoch)")
        return None
    study = load_study(sweeper.get("storage"), str(sweeper.study_name), pruner)
    if study is None:
        log.warning(f"hydra.sweeper.pruner={pruner}: this job runs in another process than its study, which is kept "
                    f"in memory; give hydra.sweeper.storage to prune jobs of a parallel launcher")
        return None
    import optuna

    trial = optuna.trial.Trial(study, study._storage.get_trial_id_from_study_id_trial_number(
        study._study_id, int(hc.job.num)))

    def hook(row: dict) -> None:
        value, epoch = row.get(metric), int(row["epoch"])
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return
        trial.report(float(value), step=epoch)
        if trial.should_prune():
            raise Pruned(f"trial {trial.number} pruned after epoch {epoch}: {metric} {value:.4g} fell behind the "
                         f"study's other trials at that epoch (hydra.sweeper.pruner={pruner})")

    return hook
