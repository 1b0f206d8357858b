"""aecli/search.py: a search's study (its storage, its pruner, its seed) and the epoch hook of a job that is one of
its trials."""

from __future__ import annotations

import sqlite3

import optuna
import pytest

from aecli import search
from aecli.errors import AecliError, Pruned


def test_every_pruner_is_made_and_a_bad_name_is_one_line():
    for name in search.PRUNERS:
        assert isinstance(search.make_pruner(name), optuna.pruners.BasePruner)
    with pytest.raises(AecliError, match="allowed none, median, hyperband, successive_halving"):
        search.make_pruner("sometimes")


@pytest.mark.parametrize("url", ["journal://{d}/j/study.log", "{d}/j/study.log", "sqlite:///{d}/study.db"])
def test_a_study_kept_in_a_storage_is_found_again(tmp_path, url):
    url = url.format(d=tmp_path)
    assert search.study_seed(3, url, "aecli") == 3  # no study yet: the seed alone, and no file made for it
    study = optuna.create_study(study_name="aecli", storage=search.open_storage(url))
    study.tell(study.ask(), 1.0)
    study.tell(study.ask(), 2.0)
    assert len(search.load_study(url, "aecli").trials) == 2
    assert search.study_seed(3, url, "aecli") == 5  # continued: new values, not the first trials' again
    assert search.study_seed(3, None, "aecli") == 3


def test_an_unknown_storage_is_refused_in_one_line():
    with pytest.raises(AecliError, match=r"cannot be opened .*journal:///path/study.log") as e:
        search.open_storage("nosuchdb://somewhere")
    assert "\n" not in str(e.value)


def test_an_old_study_database_is_refused_in_one_line_that_says_how_to_upgrade_it(tmp_path):
    """A database of Optuna 2 (what aecli used before): its schema is older than Optuna's, which refuses it."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    search.open_storage(url)
    with sqlite3.connect(tmp_path / "old.db") as db:  # what optuna 2.10.1 leaves: its alembic revision
        db.execute("UPDATE alembic_version SET version_num = 'v2.6.0.a'")
        db.execute("UPDATE version_info SET library_version = '2.10.1'")
    with pytest.raises(AecliError, match=r"older Optuna .*2\.10\.1.*optuna storage upgrade --storage") as e:
        search.open_storage(url)
    assert "\n" not in str(e.value)


def test_no_hook_outside_a_study():
    from omegaconf import OmegaConf

    assert search.epoch_hook(OmegaConf.create({"optimized_metric": "val_recon"})) is None  # no Hydra job at all


def test_the_hook_reports_each_epoch_and_stops_a_trial_that_falls_behind(monkeypatch):
    """A study in memory (the basic launcher's jobs run in the sweeper's process): two finished trials reached 100
    at every epoch; the third reports 300 after epoch 1 and the median pruner stops it."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    study = optuna.create_study(study_name="hooked", pruner=search.make_pruner("median"))
    for _ in range(2):
        trial = study.ask()
        for epoch in (1, 2):
            trial.report(100.0, epoch)
        study.tell(trial, 100.0)
    trial = study.ask()
    monkeypatch.setitem(search.STUDIES, "hooked", study)
    hydra = OmegaConf.create({"sweeper": {"_target_": search.SWEEPER, "pruner": "median", "storage": None,
                                          "study_name": "hooked", "objectives": None}, "job": {"num": trial.number}})
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: hydra))
    hook = search.epoch_hook(OmegaConf.create({"optimized_metric": "val_recon"}))
    with pytest.raises(Pruned, match="trial 2 pruned after epoch 1: val_recon 300") as e:
        hook({"epoch": 1, "val_recon": 300.0})
    assert e.value.exit_code == 4
    assert study.trials[2].intermediate_values == {1: 300.0}
    hydra.sweeper.pruner = "none"
    assert search.epoch_hook(OmegaConf.create({"optimized_metric": "val_recon"})) is None
