"""Sweeps: the summary of a multirun, `aecli runs`, Optuna, the joblib and submitit launchers, TensorBoard
logging and the experiment configs. Sweeps run the real CLI in a subprocess with the sweep folder in tmp_path."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from aecli import job, runtable, sweep  # noqa: F401  (sweep: the resolvers conf/hparams_search uses)
from aecli.paths import config_dir
from aecli.config import build_model
from aecli.errors import AecliError
from conftest import run_cli, tiny_overrides

CONF = config_dir()
# the seeds' setups; the papers' (paper_*.yaml) are checked in test_protocols.py
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("seed_*.yaml"))


def smallest(data_root: Path, **extra) -> list[str]:
    """The smallest run there is: 256 training images, one epoch, one hidden layer of 16."""
    return tiny_overrides(data_root, **{"data.limit": 256, "data.val_size": 128, "net.hidden": "[16]", **extra})


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def best_of(job: Path) -> tuple[float, float]:
    """(min val_loss, val_recon of that epoch), read straight from the job's metrics.csv."""
    rows = read_csv(job / "metrics.csv")
    best = min(rows, key=lambda r: float(r["val_loss"]))
    return float(best["val_loss"]), float(best["val_recon"])


def multirun(tmp_path: Path, *args: str, expect: int = 0, env: dict | None = None) -> tuple[Path, list[dict], str]:
    out = tmp_path / "sweep"
    proc = run_cli("train", "-m", *args, f"hydra.sweep.dir={out}", cwd=tmp_path, env=env)
    assert proc.returncode == expect, proc.stdout[-3000:] + proc.stderr[-3000:]
    if expect == 1:  # failed jobs: one line that says how many and how to finish the sweep
        assert proc.stderr.strip().count("\n") == 0 and "jobs failed" in proc.stderr, proc.stderr
    return out, read_csv(out / "summary.csv") if (out / "summary.csv").is_file() else [], proc.stdout + proc.stderr


def compose_with(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


# -- a 2x2 grid with two failing jobs (one process for both tests) -------------------------------------
@pytest.fixture(scope="module")
def grid(tmp_path_factory, data_root):
    """latent_dim=2,4 x lambda=1,-1: jobs 1 and 3 fail (lambda < 0), jobs 0 and 2 train."""
    return multirun(tmp_path_factory.mktemp("grid"), *smallest(data_root), "latent_dim=2,4", "lambda=1,-1", expect=1)


@pytest.mark.slow
def test_grid_gives_a_folder_and_a_summary_row_per_job(grid):
    out, rows, stdout = grid
    assert sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")) == ["0", "1", "2", "3"]
    assert [r["run"] for r in rows] == ["0", "1", "2", "3"]
    swept = [re.findall(r"(?:latent_dim|lambda)=\S+", r["overrides"]) for r in rows]
    assert swept == [["latent_dim=2", "lambda=1"], ["latent_dim=2", "lambda=-1"],
                     ["latent_dim=4", "lambda=1"], ["latent_dim=4", "lambda=-1"]]
    for row in (rows[0], rows[2]):
        val_loss, val_recon = best_of(out / row["run"])
        assert float(row["val_loss"]) == pytest.approx(val_loss, rel=1e-9)
        assert float(row["val_recon"]) == pytest.approx(val_recon, rel=1e-9)
        assert 150 < val_loss < 300  # nats per image after a few steps: near the mean image the decoder starts at
        assert float(row["seconds"]) > 0
    assert rows[0]["val_loss"] != rows[2]["val_loss"]  # two different runs, not one row copied
    assert "sweep" in stdout and "latent_dim=4 lambda=1" in stdout  # the table, with the swept overrides


@pytest.mark.slow
def test_failing_job_is_marked_failed_and_the_others_finish(grid):
    out, rows, stdout = grid
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "failed"]
    for row in (rows[1], rows[3]):
        assert "lambda=-1" in row["error"] and row["val_loss"] == ""
        assert not (out / row["run"] / "metrics.csv").exists()
    assert (out / "2" / "checkpoints" / "best.pt").is_file()  # the job after a failed one trained
    assert "2 of 4 jobs failed" in stdout  # and the sweep exits 1 (the fixture checks)


@pytest.mark.slow
def test_runs_sorts_any_set_of_runs(grid, capsys):
    out, rows, _ = grid
    ok = sorted((float(r["val_loss"]), r["run"]) for r in rows if r["status"] == "ok")
    got = runtable.runs_command([str(out)], sort="val_loss")
    assert [r["run"] for r in got] == [run for _, run in ok] + ["1", "3"]  # runs without the value go last
    got = runtable.runs_command([str(out / "2"), str(out / "0")], sort="-val_loss")
    assert [r["val_loss"] for r in got] == [v for v, _ in reversed(ok)]
    assert "2 runs" in capsys.readouterr().out
    with pytest.raises(AecliError, match="sort=psnr is not a column.*allowed run, optimized, val_loss"):
        runtable.runs_command([str(out)], sort="psnr")
    # without sort=, best first by each run's optimized_metric (val_recon at its best checkpoint)
    by_metric = sorted((float(r["optimized"]), r["run"]) for r in rows if r["status"] == "ok")
    assert [r["run"] for r in runtable.runs_command([str(out)])] == [run for _, run in by_metric] + ["1", "3"]
    with pytest.raises(AecliError, match="is not a folder"):
        runtable.runs_command([str(out / "missing")])


# -- search and launchers ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def search(tmp_path_factory, data_root):
    """Optuna's two trials launched side by side by joblib (one process start for both tests)."""
    return multirun(tmp_path_factory.mktemp("search"), "hparams_search=optuna", "hydra.sweeper.n_trials=2",
                    "hydra.sweeper.n_jobs=2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                    *smallest(data_root, **{"trainer.num_threads": "null"}))


@pytest.mark.slow
def test_optuna_runs_the_requested_trials(search):
    out, rows, _ = search
    assert [r["status"] for r in rows] == ["ok", "ok"]
    params = [dict(re.findall(r"(lr|lambda|latent_dim)=([^\s]+)", r["overrides"])) for r in rows]
    for p in params:
        assert 1e-4 <= float(p["lr"]) <= 1e-2 and 1e-3 <= float(p["lambda"]) <= 100
        assert int(p["latent_dim"]) in (2, 4, 8, 16, 32, 64)
    assert params[0] != params[1]
    from omegaconf import OmegaConf

    result = OmegaConf.load(out / "optimization_results.yaml")  # what the jobs returned, as Optuna saw it
    # optimized_metric (val_recon) at each job's best checkpoint, not val_loss, which holds lambda x the penalty
    assert result.best_value == pytest.approx(min(float(r["val_recon"]) for r in rows), rel=1e-6)


@pytest.mark.slow
def test_joblib_runs_jobs_side_by_side_with_a_share_of_the_cores(search):
    out, rows, stdout = search
    share = max(1, job.available_cores() // 2)
    for number in ("0", "1"):
        assert f"torch threads: {share}," in (out / number / "train.log").read_text()
        assert re.search(rf"^\[job {number}\] epoch 1/1 ", stdout, re.M)  # one plain line per epoch, job-tagged
    assert "\r" not in stdout and "━" not in stdout.split("sweep")[0]  # no progress bar before the table


@pytest.mark.slow
def test_submitit_local_runs_the_same_code(tmp_path, data_root):
    out, rows, _ = multirun(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.cpus_per_task=1",
                            "hydra.launcher.timeout_min=5", *smallest(data_root), "latent_dim=2,4")
    assert [r["status"] for r in rows] == ["ok", "ok"]
    for row in rows:
        assert float(row["val_loss"]) == pytest.approx(best_of(out / row["run"])[0], rel=1e-9)


# -- TensorBoard -------------------------------------------------------------------------------------
def test_tensorboard_writes_event_files_tensorboard_reads(tmp_path, data_root):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from aecli.job import run_training as train

    cfg = compose_with(*tiny_overrides(data_root, epochs=2, **{"trainer.log_every": 1}), "logger=tensorboard")
    outcome = train(cfg, tmp_path / "run")
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))
    events = EventAccumulator(str(tmp_path / "run"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    val = events.Scalars("epoch/val_loss")
    assert [e.step for e in val] == [1, 2]
    assert [e.value for e in val] == pytest.approx([float(r["val_loss"]) for r in rows], rel=1e-6)
    steps = events.Scalars("step/train_loss")
    assert [e.step for e in steps] == list(range(1, 9))  # 512 images / batch 128 = 4 steps an epoch, 2 epochs
    assert all(math.isfinite(e.value) for e in steps)
    recon = events.Images("images/recon")
    assert [e.step for e in recon] == [1, 2] and recon[0].width > 0
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams")
    assert events.Scalars("final/best_val_loss")[0].value == pytest.approx(min(float(r["val_loss"]) for r in rows),
                                                                         rel=1e-6)
    best = min(rows, key=lambda r: float(r["val_loss"]))
    assert outcome.metric == "val_recon" and outcome.value == pytest.approx(float(best["val_recon"]), rel=1e-6)


def test_tensorboard_missing_names_the_extra(tmp_path, monkeypatch):
    from aecli.loggers import make_logger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    cfg = compose_with("logger=tensorboard")
    with pytest.raises(AecliError, match=r"aecli\[tensorboard\]"):
        make_logger(cfg, tmp_path)


# -- experiments -------------------------------------------------------------------------------------
EXPECTED = {  # the seeds' setups (conf/experiment/*.yaml)
    "seed_cae_fashion": {"model": "cae", "data": "fashion_mnist", "hidden": [64, 32], "latent_dim": 16,
                         "lambda": 100, "lr": 1e-3, "batch_size": 128},
    "seed_vae_mnist": {"model": "vae", "data": "mnist", "hidden": [784, 784], "latent_dim": 64, "lambda": 1.0,
                       "lr": 1e-3, "batch_size": 1024, "optimizer": "adamw"},
    "seed_cvae_mnist": {"model": "cvae", "data": "mnist", "hidden": [784, 784], "latent_dim": 64,
                        "lr": 1e-3, "batch_size": 1024, "optimizer": "adamw"},
    "seed_layer_matched": {"model": "ae", "data": "mnist", "hidden": [400, 200, 100], "latent_dim": 50,
                           "lr": 0.01, "activation": "sigmoid", "recon_loss": "mse"},
}


def test_every_experiment_is_checked():
    assert sorted(EXPECTED) == EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_builds(name):
    cfg = compose_with(f"experiment={name}")
    want = EXPECTED[name]
    assert cfg.model._target_.split(".")[-2] == want["model"]
    assert cfg.data._target_.split(".")[-2] == want["data"] and list(cfg.net.hidden) == want["hidden"]
    for key in ("latent_dim", "lambda", "lr", "batch_size"):
        if key in want:
            assert cfg[key] == want[key], key
    assert cfg.trainer.optimizer == want.get("optimizer", "adam")
    if "activation" in want:
        assert cfg.net.activation == want["activation"] and cfg.model.recon_loss == want["recon_loss"]
    model = build_model(cfg)  # every key of the experiment is a constructor parameter of the model
    assert sum(p.numel() for p in model.parameters()) > 0


# -- a sweep killed halfway is finished by the same command, into the same folder -----------------------------
@pytest.mark.slow
def test_a_sweep_run_again_into_its_folder_finishes_it(tmp_path, data_root):
    """The first attempt stops in job 0 (as a lost node or Ctrl-C would): exit 143. The same command again keeps
    nothing of it but last.pt and resumes job 0, then starts job 1; a third time, every job is kept, and a grid
    grown by one value runs only the new job."""
    args = [*smallest(data_root, epochs=2, batch_size=64), "latent_dim=2,3"]
    out, _, said = multirun(tmp_path, *args, expect=143, env={"AECLI_STOP_AT_STEP": "3"})
    assert "SIGTERM after step 3" in said and not (out / "1").exists()
    out, rows, said = multirun(tmp_path, *args)
    assert [r["status"] for r in rows] == ["ok", "ok"] and "resuming" in (out / "0" / "train.log").read_text()
    steps = torch.load(out / "0" / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert steps == 8  # 256 images in batches of 64, two epochs: the resumed job did all of them once
    _, again, said = multirun(tmp_path, *smallest(data_root, epochs=2, batch_size=64), "latent_dim=2,3,4")
    assert [r["status"] for r in again] == ["ok", "ok", "ok"] and said.count("ended ok before: kept") == 2
    assert [r["val_loss"] for r in again[:2]] == [r["val_loss"] for r in rows]


@pytest.mark.slow
def test_a_sweep_folder_of_another_sweep_is_refused_job_by_job(tmp_path, data_root):
    out, before, _ = multirun(tmp_path, *smallest(data_root), "latent_dim=2,3")
    status = (out / "0" / "status.json").read_text()
    _, rows, said = multirun(tmp_path, *smallest(data_root), "latent_dim=5,6", expect=1)
    assert "latent_dim=5 differs from the checkpoint's latent_dim=2" in said
    assert (out / "0" / "status.json").read_text() == status  # the earlier sweep's record is untouched


@pytest.mark.slow
def test_ctrl_c_stops_a_sweep_whose_output_pipe_is_gone(tmp_path, data_root):
    """`aecli train -m ... 2>&1 | tee log` and Ctrl-C: tee dies of the same SIGINT, so every later write fails. The
    sweep still stops at once: job 0 is marked interrupted, jobs 1 and 2 never start, the summary of what ran is
    written, and the exit code is the signal's (jobs 1 and 2 ran to completion invisibly, with no summary)."""
    out = tmp_path / "sweep"
    exe = shutil.which("aecli")
    cmd = [exe] if exe else [sys.executable, "-m", "aecli.cli"]
    proc = subprocess.Popen([*cmd, "train", "-m", *smallest(data_root, epochs=500), "latent_dim=2,3,4",
                             f"hydra.sweep.dir={out}"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 120
        while not (out / "0" / "metrics.csv").is_file():  # job 0 is training
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep did not start"
            time.sleep(0.1)
        proc.stdout.close()  # the reader of the pipe (tee) is gone
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C goes to the whole process group
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert code == 130
    assert json.loads((out / "0" / "status.json").read_text())["status"] == "interrupted"
    assert not (out / "1").exists() and not (out / "2").exists()
    rows = read_csv(out / "summary.csv")
    assert [(r["run"], r["status"]) for r in rows] == [("0", "interrupted")]
    assert (out / "report.html").is_file()


def test_the_sweep_table_is_best_first_and_the_summary_in_job_order(tmp_path, capsys, monkeypatch):
    """docs/sweeps.md: the table at the end of a sweep is sorted by the optimized metric (it was in job order);
    summary.csv keeps the job order."""
    from aecli.sweep import summarize_sweep
    from test_runtable import make_run

    monkeypatch.setenv("COLUMNS", "120")
    for job_num, val in enumerate((90.0, 70.0, 80.0)):
        make_run(tmp_path / str(job_num), [f"lambda={job_num}"], [val])
    summarize_sweep(tmp_path, report=False)
    table = [line.split("│")[1].strip() for line in capsys.readouterr().out.splitlines() if line.startswith("│")]
    assert [run for run in table if run] == ["1", "2", "0"]
    assert [r["run"] for r in read_csv(tmp_path / "summary.csv")] == ["0", "1", "2"]


def test_a_job_another_worker_is_starting_is_running_not_failed(tmp_path, monkeypatch):
    """Two workers on one study (hydra.sweeper.worker=true): when one ends, the other's newest job may have Hydra's
    record and nothing else yet (no status.json, not yet its lock). The sweeper hands the summary the jobs that live
    workers hold (RUNNING trials whose worker's lock is held): such a job is `running`, and the sweep did not fail.
    A job without status.json that no live worker holds died: failed."""
    from aecli.search import RUNNING_ELSEWHERE
    from aecli.sweep import LAST_SWEEP, summarize_sweep
    from test_runtable import make_run

    make_run(tmp_path / "0", ["lambda=0"], [80.0])
    for job_num in ("1", "2"):
        (tmp_path / job_num / ".hydra").mkdir(parents=True)
    monkeypatch.setitem(RUNNING_ELSEWHERE, str(tmp_path), {"1"})
    summarize_sweep(tmp_path, report=False)
    rows = {r["run"]: r["status"] for r in read_csv(tmp_path / "summary.csv")}
    assert rows == {"0": "ok", "1": "running", "2": "failed"} and LAST_SWEEP["failed"] == 1
