"""aecli's Optuna sweeper (hydra_plugins/aecli_optuna_sweeper): hparams_search=optuna through the real CLI on tiny
data: the study in a storage, continued without touching the runs already there, pruning by epoch, several workers
on one study, several objectives."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import aecli.sweep  # noqa: F401  (the resolvers conf/hparams_search/optuna.yaml uses)
from aecli.paths import config_dir
from aecli.rundir import METRICS, STATUS, SUMMARY, TRAIN_LOG
from conftest import run_cli, tiny_overrides

ROOT = Path(__file__).resolve().parent.parent


def smallest(data_root: Path, **extra) -> list[str]:
    """The smallest run there is: 256 training images, one epoch, one hidden layer of 16."""
    return tiny_overrides(data_root, **{"data.limit": 256, "data.val_size": 128, "net.hidden": "[16]", **extra})


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def compose_with(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def study(storage: str, name: str = "aecli"):
    import optuna

    from aecli.search import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


def states(storage: str) -> list[str]:
    return [t.state.name for t in study(storage).trials]


def fingerprints(folder: Path) -> dict[str, str]:
    """Every file of the run folders below `folder` (config, overrides, metrics, status, checkpoints), hashed."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.parent != folder}


# -- the environment ----------------------------------------------------------------------------------
def test_the_lock_has_current_optuna_and_sqlalchemy_2_and_no_old_sweeper():
    lock = (ROOT / "uv.lock").read_text()
    versions = dict(re.findall(r'\[\[package\]\]\nname = "([^"]+)"\nversion = "([^"]+)"', lock))
    assert int(versions["optuna"].split(".")[0]) >= 4
    assert int(versions["sqlalchemy"].split(".")[0]) >= 2
    assert "hydra-optuna-sweeper" not in versions
    assert "hydra_plugins" in (ROOT / "pyproject.toml").read_text()  # the plugin ships in the wheel


def test_optuna_search_is_seeded_and_minimizes():
    hc = compose_with("hparams_search=optuna", "seed=7", hydra=True).hydra
    assert hc.sweeper.sampler.seed == 7 and hc.sweeper.direction == "minimize" and hc.mode.name == "MULTIRUN"
    assert set(hc.sweeper.params) == {"lr", "lambda", "latent_dim"}
    assert hc.sweeper._target_ == "hydra_plugins.aecli_optuna_sweeper.sweeper.AecliOptunaSweeper"


@pytest.mark.parametrize("sampler", ["tpe", "random", "grid", "cmaes", "nsgaii"])
def test_every_sampler_composes(sampler):
    hc = compose_with("hparams_search=optuna", f"hydra/sweeper/sampler={sampler}", hydra=True).hydra
    assert hc.sweeper.sampler._target_.lower().endswith(f"{'cmaes' if sampler == 'cmaes' else sampler}sampler")


def test_the_search_space_is_read_from_hydra_overrides():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.aecli_optuna_sweeper.sweeper import grid_values, search_space

    space, fixed = search_space(["lr=tag(log, interval(1e-4, 1e-2))", "latent_dim=choice(2, 4)",
                                 "epochs=range(1, 4)", "seed=3", "lambda=interval(0.5, 2.0)", "seed=choice(1, 2)"])
    assert space["lr"] == FloatDistribution(1e-4, 1e-2, log=True)
    assert space["latent_dim"] == CategoricalDistribution([2, 4])
    assert space["epochs"] == IntDistribution(1, 3)  # range excludes its stop, as in Hydra
    assert grid_values("epochs", space["epochs"]) == [1, 2, 3]
    assert space["lambda"] == FloatDistribution(0.5, 2.0)
    assert "seed" not in space and fixed == {"seed": "3"}  # a fixed value wins over a swept one


# -- end to end ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_an_optuna_search_stopped_and_continued_on_its_storage_proposes_new_trials(tmp_path, data_root):
    """Two commands on one sqlite storage make one study of two different trials: the continued search neither fails nor draws the first trial's values again."""
    import optuna

    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ["hparams_search=optuna", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={db}", *smallest(data_root)]
    for attempt in ("first", "again"):
        (tmp_path / attempt).mkdir()
        proc = run_cli("train", *args, f"hydra.sweep.dir={tmp_path / attempt / 'sweep'}", cwd=tmp_path / attempt)
        assert proc.returncode == 0, proc.stderr[-3000:]
    trials = optuna.load_study(study_name="aecli", storage=db).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"] and trials[0].params != trials[1].params
    hc = compose_with("hparams_search=optuna", "seed=7", f"hydra.sweeper.storage={db}", hydra=True).hydra
    assert hc.sweeper.sampler.seed == 9  # the seed, plus the trials the study holds


@pytest.mark.slow
def test_a_study_stopped_by_a_signal_and_continued_on_its_storage_runs_new_trials(tmp_path, data_root):
    """The first command is stopped during its first trial. The same command again resumes that trial in its own
    folder (from its checkpoint: the trial is not left RUNNING), then continues the study with new trials (new
    numbers, new values, new folders)."""
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep = tmp_path / "sweep"
    args = ["train", "hparams_search=optuna", "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={db}",
            f"hydra.sweep.dir={sweep}", *smallest(data_root, epochs=2)]
    stopped = run_cli(*args, cwd=tmp_path, env={"AECLI_STOP_AT_STEP": "2"})
    assert stopped.returncode not in (0, 1), stopped.stderr[-2000:]
    assert '"status": "interrupted"' in (sweep / "0" / STATUS).read_text()
    overrides = (sweep / "0" / ".hydra" / "overrides.yaml").read_bytes()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    trials = study(db).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "COMPLETE"]
    assert trials[1].params != trials[2].params != trials[0].params
    assert {p.name for p in sweep.iterdir() if p.name.isdigit()} == {"0", "1", "2"}
    assert "resuming" in (sweep / "0" / TRAIN_LOG).read_text()  # from the checkpoint the signal left
    assert (sweep / "0" / ".hydra" / "overrides.yaml").read_bytes() == overrides
    assert [int(r["epoch"]) for r in read_csv(sweep / "0" / METRICS)] == [1, 2]
    rows = read_csv(sweep / "0" / METRICS)
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert trials[0].value == pytest.approx(float(best["val_recon"]))  # what the resumed run reached


@pytest.mark.slow
def test_the_same_study_continued_into_its_sweep_folder_leaves_the_first_runs_as_they_were(tmp_path, data_root):
    """The bug: the second command numbered its jobs 0-5 again, wrote their configs over the first runs' and failed
    every trial. Now its trials are 6-11 in new folders, and every file of runs 0-5 is byte-identical."""
    db = f"sqlite:///{tmp_path / 'S.db'}"
    sweep = tmp_path / "D"
    args = ["train", "hparams_search=optuna", f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=6",
            f"hydra.sweep.dir={sweep}", *smallest(data_root)]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    before = fingerprints(sweep)
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    after = fingerprints(sweep)
    assert {k: after.get(k) for k in before} == before
    assert states(db) == ["COMPLETE"] * 12
    rows = read_csv(sweep / SUMMARY)
    assert [r["run"] for r in rows] == [str(n) for n in range(12)] and {r["status"] for r in rows} == {"ok"}
    overrides = [r["overrides"] for r in rows]
    assert len(set(overrides)) == 12  # each run its own trial's values


@pytest.mark.slow
def test_a_median_pruner_stops_trials_that_fall_behind_and_the_sweep_exits_0(tmp_path, data_root):
    """6 trials, half with a much too low lr: the median pruner stops at least one of them after its first of 3
    epochs; it is `pruned` in its folder, PRUNED in the study and in the summary, and the sweep exits 0."""
    db = f"sqlite:///{tmp_path / 'optuna.db'}"
    sweep = tmp_path / "sweep"
    proc = run_cli("train", "hparams_search=optuna", f"hydra.sweeper.storage={db}", "hydra.sweeper.n_trials=6",
                   "hydra.sweeper.pruner=median", "hydra/sweeper/sampler=grid",
                   "hydra.sweeper.params.lr=choice(0.01, 0.000001)", "hydra.sweeper.params.seed=choice(0, 1, 2)",
                   "lambda=1", "latent_dim=8", f"hydra.sweep.dir={sweep}", *smallest(data_root, epochs=3),
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = study(db).trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert pruned and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials) and len(trials) == 6
    for t in pruned:
        assert t.params["lr"] == 0.000001  # the trials that fell behind
        folder = sweep / str(t.number)
        assert '"status": "pruned"' in (folder / STATUS).read_text()
        assert len(read_csv(folder / METRICS)) < 3  # stopped before its last epoch
    rows = {r["run"]: r["status"] for r in read_csv(sweep / SUMMARY)}
    assert {rows[str(t.number)] for t in pruned} == {"pruned"}


def worker(args: list[str], cwd: Path) -> subprocess.Popen:
    exe = shutil.which("aecli")
    cmd = [exe] if exe else [sys.executable, "-m", "aecli.cli"]
    return subprocess.Popen([*cmd, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
def test_two_workers_share_one_study_and_a_third_finds_it_done(tmp_path, data_root):
    """Two processes started together on one journal file with n_trials=6 run 6 distinct trials between them, each
    in its own folder; a third started afterwards runs none."""
    journal = tmp_path / "study.log"
    sweep = tmp_path / "sweep"
    args = ["train", "hparams_search=optuna", "hydra.sweeper.worker=true", f"hydra.sweeper.storage=journal://{journal}",
            "hydra.sweeper.n_trials=6", f"hydra.sweep.dir={sweep}", *smallest(data_root)]
    procs = [worker(args, tmp_path) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    trials = study(f"journal://{journal}").trials
    done = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(done) == 6 and sorted(t.number for t in done) == list(range(6))
    assert len({tuple(sorted(t.params.items())) for t in done}) == 6
    assert len({t.user_attrs["aecli_run"] for t in done}) == 6
    for t in done:
        assert (sweep / str(t.number) / METRICS).is_file()
    ran = [re.findall(r"^\[job (\d+)\] epoch 1/1", out, re.M) for out, _ in outputs]
    assert sorted(int(n) for r in ran for n in r) == list(range(6))  # each trial ran once, by one worker
    third = run_cli(*args, cwd=tmp_path)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "[job" not in third.stdout and len(study(f"journal://{journal}").trials) == len(trials)


@pytest.mark.slow
def test_a_worker_killed_during_a_trial_leaves_it_to_the_next_worker_which_resumes_it(tmp_path, data_root):
    journal = tmp_path / "study.log"
    sweep = tmp_path / "sweep"
    args = ["train", "hparams_search=optuna", "hydra.sweeper.worker=true", f"hydra.sweeper.storage={journal}",
            "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={sweep}",
            *smallest(data_root, epochs=20, **{"trainer.images_every": 100})]
    first = worker(args, tmp_path)
    metrics = sweep / "0" / METRICS
    for _ in range(600):
        if metrics.is_file() and len(read_csv(metrics)) >= 2:
            break
        time.sleep(0.1)
    first.kill()  # SIGKILL: no chance to tell the study anything
    first.communicate()
    assert states(str(journal)) == ["RUNNING"]
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert states(str(journal)) == ["COMPLETE"]  # the same trial, finished; no new one
    assert "resuming" in (sweep / "0" / TRAIN_LOG).read_text()
    assert [int(r["epoch"]) for r in read_csv(metrics)] == list(range(1, 21))


@pytest.mark.slow
def test_a_study_of_two_objectives_writes_its_pareto_front_into_the_summary(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    proc = run_cli("train", "hparams_search=optuna", "hydra.sweeper.n_trials=4",
                   "hydra.sweeper.objectives=[val_recon,test_probe_acc]", f"hydra.sweep.dir={sweep}",
                   *smallest(data_root, **{"eval.at_end": "true", "eval.test_images": 500, "eval.probe_train_images": 500, "eval.pictures": "false"}), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_csv(sweep / SUMMARY)
    assert len(rows) == 4 and "pareto" in rows[0]
    points = {r["run"]: (float(r["val_recon"]), float(r["test_probe_acc"])) for r in rows}

    def dominated(a):  # another run at least as good in both, better in one (val_recon down, accuracy up)
        return any(b != a and b[0] <= a[0] and b[1] >= a[1] for b in points.values())

    front = {run for run, p in points.items() if not dominated(p)}
    assert {r["run"] for r in rows if r["pareto"] == "True"} == front and front
    assert "Pareto front: runs" in proc.stdout


@pytest.mark.slow
def test_a_bad_sweeper_setting_is_one_line(tmp_path, data_root):
    proc = run_cli("train", "hparams_search=optuna", "hydra.sweeper.pruner=sometimes", *smallest(data_root),
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("aecli: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "median" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("train", "hparams_search=optuna", "hydra.sweeper.worker=true", *smallest(data_root),
                   f"hydra.sweep.dir={tmp_path / 'sweep2'}", cwd=tmp_path)
    assert proc.returncode == 2 and "storage" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_the_trials_other_live_workers_hold_are_running_elsewhere(tmp_path):
    """running_elsewhere: the RUNNING trials whose worker's lock another live process holds; not one whose worker
    died (its lock free), nor a finished one."""
    import optuna
    from optuna.trial import TrialState

    from hydra_plugins.aecli_optuna_sweeper.sweeper import running_elsewhere

    alive, dead = tmp_path / "alive.lock", tmp_path / "dead.lock"
    dead.write_text("1\n")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from aecli.rundir import take_lock; "
                               f"lock = take_lock({str(alive)!r}, create=True); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        study = optuna.create_study()
        trials = [study.ask() for _ in range(3)]
        for trial, lock in zip(trials, (alive, dead, alive)):
            trial.set_user_attr("aecli_worker", str(lock))
        study.tell(trials[2], 1.0)
        assert study.trials[2].state == TrialState.COMPLETE
        assert running_elsewhere(study) == {"0"}
    finally:
        holder.kill()
        holder.wait()
