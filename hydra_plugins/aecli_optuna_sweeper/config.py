"""The sweeper's settings (`hydra.sweeper.*`) and its samplers (`hydra/sweeper/sampler=tpe|random|grid|cmaes|
nsgaii`), registered in Hydra's ConfigStore. conf/hparams_search/optuna.yaml sets aecli's values."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class TPESamplerConf:
    _target_: str = "optuna.samplers.TPESampler"
    seed: Optional[int] = None
    n_startup_trials: int = 10  # random trials before TPE starts modelling
    multivariate: bool = False


@dataclass
class RandomSamplerConf:
    _target_: str = "optuna.samplers.RandomSampler"
    seed: Optional[int] = None


@dataclass
class GridSamplerConf:
    """Every combination of the choice(...) and range(...) values of hydra.sweeper.params, in a random order."""

    _target_: str = "optuna.samplers.GridSampler"
    seed: Optional[int] = None


@dataclass
class CmaEsSamplerConf:
    _target_: str = "optuna.samplers.CmaEsSampler"
    seed: Optional[int] = None
    n_startup_trials: int = 1
    sigma0: Optional[float] = None


@dataclass
class NSGAIISamplerConf:
    """For several objectives (hydra.sweeper.objectives)."""

    _target_: str = "optuna.samplers.NSGAIISampler"
    seed: Optional[int] = None
    population_size: int = 50


@dataclass
class AecliOptunaSweeperConf:
    _target_: str = "hydra_plugins.aecli_optuna_sweeper.sweeper.AecliOptunaSweeper"
    _recursive_: bool = False  # the sampler is built by the sweeper (its seed, the grid's space)
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    sampler: Any = MISSING
    direction: str = "minimize"  # of the job's return value (optimized_metric): minimize | maximize
    objectives: Optional[List[str]] = None  # several metrics (a Pareto front), each in its own direction
    storage: Optional[str] = None  # null (memory), an RDB URL, or journal:///path.log (aecli/search.py)
    study_name: str = "aecli"
    n_trials: int = 20  # trials this command runs; with worker=true, the trials the study holds when done
    n_jobs: int = 1  # trials launched at a time (a parallel launcher runs them side by side)
    worker: bool = False  # one of several processes working on one study (docs/sweeps.md)
    pruner: str = "none"  # none | median | hyperband | successive_halving
    max_failure_rate: float = 1.0
    params: Optional[Dict[str, str]] = None


store = ConfigStore.instance()
store.store(group="hydra/sweeper", name="optuna", node=AecliOptunaSweeperConf, provider="aecli")
for name, node in (("tpe", TPESamplerConf), ("random", RandomSamplerConf), ("grid", GridSamplerConf),
                   ("cmaes", CmaEsSamplerConf), ("nsgaii", NSGAIISamplerConf)):
    store.store(group="hydra/sweeper/sampler", name=name, node=node, provider="aecli")
