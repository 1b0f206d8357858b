"""aecli's Optuna sweeper: trial N of the study is job N of the sweep, in its own new run folder.

Ask and tell: the sweeper asks the study for a trial, suggests the values of `hydra.sweeper.params`, creates the
trial's run folder (`hydra.sweep.dir`/N, never one that exists), launches the job and tells the study how it
ended: its optimized_metric (or the objectives' values, read from the run folder), PRUNED when the job's status
is `pruned` (aecli/search.py's epoch hook), FAIL otherwise.

`n_trials` is how many trials this command runs; a continued study (the same storage) numbers its new trials
after the ones it holds. With `worker=true` the command is one of several processes sharing the study: each asks
for a trial as soon as it is free and stops once the study holds `n_trials` started trials (every state but
WAITING: COMPLETE, PRUNED, FAIL and RUNNING).

A trial whose process ended before it did (Ctrl-C, SIGTERM, a killed worker) stays RUNNING until the study is
continued: the next command or worker on the study finds its worker's lock free, takes it over and resumes the
trial in its own run folder (from its last checkpoint), before any new trial. One whose run folder is not in this
sweep folder is marked FAIL.
"""

from __future__ import annotations

import logging
import os
import socket
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from aecli import search
from aecli.errors import AecliError
from aecli.metric_names import direction as metric_direction
from aecli.rundir import lock_is_held, take_lock

log = logging.getLogger("aecli")
WORKERS = ".workers"  # in the sweep folder: one lock file per live worker, held for its life


# -- the search space: hydra.sweeper.params ----------------------------------------------------------
def distribution(override: Override) -> BaseDistribution | str:
    """An Optuna distribution for a sweep override (choice, range, interval, tag(log, interval)); the value of a
    plain one."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():  # range(start, stop, step): stop excluded, as in Hydra
        assert isinstance(value, RangeSweep)
        values = list(override.sweep_iterator(transformer=Transformer.identity))
        if all(isinstance(v, int) for v in values):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(values[0], values[-1], step=value.step)
    assert isinstance(value, IntervalSweep)
    log_scale = "log" in value.tags
    if isinstance(value.start, int) and isinstance(value.end, int):
        return IntDistribution(value.start, value.end, log=log_scale)
    return FloatDistribution(value.start, value.end, log=log_scale)


def search_space(overrides: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The swept parameters' distributions and the fixed overrides."""
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(overrides):
        value = distribution(override)
        (space if isinstance(value, BaseDistribution) else fixed)[override.get_key_element()] = value
    for name in fixed:
        space.pop(name, None)
    return space, fixed


def suggest(trial: optuna.Trial, name: str, dist: BaseDistribution) -> Any:
    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)


def grid_values(name: str, dist: BaseDistribution) -> list:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if dist.step is not None and not dist.log:
        n = int(round((dist.high - dist.low) / dist.step)) + 1
        return [dist.low + i * dist.step for i in range(n)]
    raise AecliError(f"hydra/sweeper/sampler=grid needs a finite set of values: {name} is an interval; give it as "
                     f"choice(...) or range(...)")


# -- the sweeper -------------------------------------------------------------------------------------
class AecliOptunaSweeper(Sweeper):
    def __init__(self, sampler: DictConfig, direction: str, objectives: list[str] | None, storage: str | None,
                 study_name: str, n_trials: int, n_jobs: int, worker: bool, pruner: str, max_failure_rate: float,
                 params: DictConfig | None) -> None:
        self.sampler_conf = sampler
        self.objectives = [str(o) for o in objectives] if objectives else None
        self.directions = [metric_direction(o) for o in self.objectives] if self.objectives else [str(direction)]
        self.storage_url = None if storage in (None, "None", "null", "") else str(storage)
        self.study_name, self.n_trials, self.n_jobs = str(study_name), int(n_trials), max(1, int(n_jobs))
        self.worker, self.pruner, self.max_failure_rate = bool(worker), str(pruner), float(max_failure_rate)
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        search.make_pruner(self.pruner)  # a bad name: one line before anything runs
        if self.pruner != "none" and len(self.directions) > 1:
            raise AecliError(f"hydra.sweeper.pruner={self.pruner} needs one objective: Optuna prunes only "
                             f"single-objective studies; drop hydra.sweeper.objectives or use pruner=none")
        if self.worker and self.storage_url is None:
            raise AecliError("hydra.sweeper.worker=true shares a study between processes: give the shared "
                             "hydra.sweeper.storage (sqlite:///path.db, journal:///path/study.log)")

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)
        self.sweep_dir = Path(str(config.hydra.sweep.dir))

    # -- the study -----------------------------------------------------------------------------------
    def make_sampler(self, space: dict[str, BaseDistribution]):
        conf = OmegaConf.to_container(self.sampler_conf, resolve=True)
        if self.worker and conf.get("seed") is not None:  # workers started together must not propose the same
            # trials: each mixes its host and pid into the seed (seed + pid alone collided: the study's seed counts
            # the trials it holds, so seed + 1 + pid - 1 of a worker started one trial later drew the same values)
            mixed = np.random.SeedSequence([int(conf["seed"]), os.getpid(), zlib.crc32(socket.gethostname().encode())])
            conf["seed"] = int(mixed.generate_state(1)[0])
        if str(conf["_target_"]).endswith("GridSampler"):
            conf["search_space"] = {name: grid_values(name, d) for name, d in space.items()}
            size = 1
            for values in conf["search_space"].values():
                size *= len(values)
            self.n_trials = min(self.n_trials, size)
        return instantiate(conf)

    def open_study(self, sampler) -> optuna.Study:
        storage = search.open_storage(self.storage_url)
        pruner = search.make_pruner(self.pruner)
        try:
            study = optuna.create_study(study_name=self.study_name, storage=storage, sampler=sampler,
                                        pruner=pruner, directions=self.directions, load_if_exists=True)
        except ValueError as e:  # another direction or number of objectives than the stored study's
            raise AecliError(f"hydra.sweeper.study_name={self.study_name} in {self.storage_url}: {e}; give another "
                             f"study_name or the study's own optimized_metric") from None
        if storage is None:
            search.STUDIES[self.study_name] = study  # the jobs of this process report to it (pruning)
        return study

    def refuse_other_runs(self, study: optuna.Study) -> None:
        """A sweep folder whose job folders were not made by this study's trials (an earlier search kept in
        memory, another study, a grid) is refused before anything runs: its trials would be numbered into them."""
        folders = [p.name for p in self.sweep_dir.iterdir() if p.is_dir() and p.name.isdigit()]  # before the count
        n = len(study.trials)
        taken = sorted(int(name) for name in folders if int(name) >= n)
        if taken:
            raise AecliError(f"hydra.sweep.dir={self.sweep_dir} holds run folders ({', '.join(map(str, taken[:3]))}"
                             f"{', ...' if len(taken) > 3 else ''}) that are not trials of study {self.study_name} "
                             f"({self.storage_url or 'kept in memory'}, {n} trials), and a search never writes "
                             f"into a folder it did not create: give a new hydra.sweep.dir, or the storage of the "
                             f"study that made them (hydra.sweeper.storage=...)")

    def hold_worker_lock(self) -> Path:
        """This process's lock in the sweep folder, held for its life: a RUNNING trial whose worker's lock is free
        was left by a worker that died."""
        folder = self.sweep_dir / WORKERS
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{socket.gethostname()}-{os.getpid()}.lock"
        self._lock = take_lock(path, create=True)  # a name of this process's own: never held by another
        return path

    def adopt_orphans(self, study: optuna.Study) -> list[optuna.Trial]:
        """The RUNNING trials whose worker ended without telling the study (stopped by a signal, killed): their
        worker's lock is free. This process takes over that lock (so no other worker adopts them too) and resumes
        each in its own run folder; one whose folder is not on this machine is marked FAIL."""
        adopted = []
        taken: dict[str, object] = {}  # the dead workers' locks this process now holds (one may have left several)
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            lock = t.user_attrs.get("aecli_worker")
            if lock and lock not in taken:
                held = take_lock(Path(lock))
                if held is not None:
                    taken[lock] = held
            if lock not in taken:
                continue  # its worker is alive (or on another machine, with its lock file)
            folder = self.sweep_dir / str(t.number)
            if t.user_attrs.get("aecli_run") == str(folder) and folder.is_dir():
                log.info(f"trial {t.number} was stopped before it ended: it continues in its run folder {folder}")
                adopted.append(optuna.Trial(study, t._trial_id))
            else:
                study.tell(t.number, state=TrialState.FAIL)
                log.warning(f"trial {t.number} was left running by a process that ended, and its run folder "
                            f"{t.user_attrs.get('aecli_run')} is not {folder}: marked failed")
        self._adopted_locks = list(taken.values())  # held for this process's life
        return adopted

    def claim(self, study: optuna.Study) -> optuna.Trial | None:
        """The next trial, or None when a worker finds the study full (n_trials started): a trial numbered past
        the n_trials-th started one (two workers asked at once) goes back to WAITING, unused."""
        started = lambda: [t for t in study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]  # noqa: E731
        if self.worker and len(started()) >= self.n_trials:
            return None
        trial = study.ask()
        if self.worker and sum(t.number <= trial.number for t in started()) > self.n_trials:
            study._storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            return None
        return trial

    # -- the sweep -----------------------------------------------------------------------------------
    def sweep(self, arguments: list[str]) -> None:
        space, fixed = search_space([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        study = self.open_study(self.make_sampler(space))
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        self.refuse_other_runs(study)
        worker_lock = self.hold_worker_lock()
        for trial in self.adopt_orphans(study):  # before new trials: a continued study finishes the stopped ones
            self.run_trials(study, [trial], space, fixed, worker_lock)
        log.info(f"study {self.study_name} ({len(study.trials)} trials so far) in "
                 f"{self.storage_url or 'memory'}; {'worker: until it holds' if self.worker else 'running'} "
                 f"{self.n_trials} trials into {self.sweep_dir}")
        ran = failed = 0
        while self.worker or ran < self.n_trials:
            batch = []
            while len(batch) < min(self.n_jobs, self.n_trials - ran if not self.worker else self.n_jobs):
                trial = self.claim(study)
                if trial is None:
                    break
                batch.append(trial)
            if not batch:
                break
            for group in consecutive(batch):
                failed += self.run_trials(study, group, space, fixed, worker_lock)
            ran += len(batch)
            if failed / ran > self.max_failure_rate:
                raise AecliError(f"{failed} of {ran} trials failed, over hydra.sweeper.max_failure_rate="
                                 f"{self.max_failure_rate}: see their errors in {self.sweep_dir}")
        search.RUNNING_ELSEWHERE[str(self.sweep_dir)] = running_elsewhere(study)
        self.write_results(study)

    def run_trials(self, study: optuna.Study, trials: list[optuna.Trial], space: dict, fixed: dict,
                   worker_lock: Path) -> int:
        """Launch trials numbered N, N+1, ... as jobs N, N+1, ... in new run folders; tell the study how each
        ended. Returns how many failed."""
        overrides = []
        for trial in trials:
            folder = self.sweep_dir / str(trial.number)
            if trial.params:  # a stopped trial, adopted: its folder and values are its own
                overrides.append(tuple(f"{k}={v}" for k, v in {**trial.params, **fixed}.items()))
                trial.set_user_attr("aecli_worker", str(worker_lock))
                continue
            trial.set_user_attr("aecli_worker", str(worker_lock))  # before its folder exists: another worker's
            # summary counts a folder without status.json as running while this lock is held (running_elsewhere)
            try:
                folder.mkdir()  # exclusively: a trial never writes into a folder it did not create
            except FileExistsError:
                for t in trials:
                    study.tell(t, state=TrialState.FAIL)
                raise AecliError(f"{folder} exists and was not made by trial {trial.number} of study "
                                 f"{self.study_name} ({self.storage_url or 'in memory'}): a search never writes "
                                 f"into a run folder it did not create; give a new hydra.sweep.dir, or the storage "
                                 f"of the study that made it") from None
            trial.set_user_attr("aecli_run", str(folder))
            values = {name: suggest(trial, name, dist) for name, dist in space.items()}
            overrides.append(tuple(f"{k}={v}" for k, v in {**values, **fixed}.items()))
        # a signal (Ctrl-C, SIGTERM) ends this process here: its trials stay RUNNING with this worker's lock, which
        # dies with it; continuing the study resumes them in their folders (adopt_orphans)
        returns = self.launcher.launch(overrides, initial_job_idx=trials[0].number)
        failed = 0
        for trial, ret in zip(trials, returns):
            state, values = self.outcome(ret, self.sweep_dir / str(trial.number))
            failed += state == TrialState.FAIL
            try:
                study.tell(trial, state=state, values=values)
            except RuntimeError as e:  # the grid sampler asks to stop once every point is taken
                log.debug(f"tell: {e}")
        return failed

    def outcome(self, ret, folder: Path) -> tuple[TrialState, list[float] | None]:
        from aecli.rundir import read_status

        status = read_status(folder).get("status")
        if status == "pruned":
            return TrialState.PRUNED, None
        if ret.status != JobStatus.COMPLETED or status != "ok":
            return TrialState.FAIL, None
        if self.objectives:
            values = objective_values(folder, self.objectives)
        else:
            values = [ret.return_value]
        if any(not isinstance(v, (int, float)) for v in values):
            return TrialState.FAIL, None
        return TrialState.COMPLETE, [float(v) for v in values]

    def write_results(self, study: optuna.Study) -> None:
        """The best trial (or the Pareto front) in the sweep folder's optimization_results.yaml."""
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        results: dict[str, Any] = {"name": "optuna", "study_name": self.study_name, "storage": self.storage_url,
                                   "trials": len(study.trials)}
        if done and len(self.directions) == 1:
            best = study.best_trial
            results.update(best_params=best.params, best_value=best.value, best_run=str(best.number))
            log.info(f"best trial {best.number}: {best.value:.4g} with {best.params}")
        elif done:
            results.update(objectives=self.objectives, solutions=[
                {"run": str(t.number), "params": t.params, "values": t.values} for t in study.best_trials])
            log.info(f"Pareto front ({', '.join(self.objectives)}): runs "
                     f"{', '.join(str(t.number) for t in study.best_trials)}")
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / search.RESULTS)


def objective_values(run_dir: Path, metrics: list[str]) -> list[float | None]:
    """Each metric of a finished run: a metrics.csv column in the best checkpoint's epoch, or a test_ metric of the
    evaluation of best.pt (eval.json)."""
    from aecli.rundir import number, read_eval, read_metrics
    from aecli.runtable import best_row, eval_metrics

    best, tests = best_row(read_metrics(run_dir)), eval_metrics(read_eval(run_dir))
    return [tests.get(m) if m.startswith("test_") else number(best.get(m)) for m in metrics]


def running_elsewhere(study: optuna.Study) -> set[str]:
    """The run folders (trial numbers) that other live workers of a shared study are training: RUNNING trials whose
    worker's lock another process holds. This worker's summary counts them as running, not failed, though their
    folders have no status.json (and may not yet hold the job's own lock)."""
    return {str(t.number) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.user_attrs.get("aecli_worker") and lock_is_held(t.user_attrs["aecli_worker"])}


def consecutive(trials: list[optuna.Trial]) -> list[list[optuna.Trial]]:
    """Trials split into runs of consecutive numbers (a launch numbers its jobs N, N+1, ...)."""
    groups: list[list[optuna.Trial]] = []
    for t in trials:
        if groups and groups[-1][-1].number + 1 == t.number:
            groups[-1].append(t)
        else:
            groups.append([t])
    return groups
